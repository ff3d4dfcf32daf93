"""The demo model's components: SD 1.x architectures at a size a 2-core CPU trains in an hour.

Every config starts from the SD 1.5 config Loom ships and overrides only what Loom's checkpoint
detector reads back off the tensor shapes (channels, blocks per level, attention placement, text
width and depth). So the modules trained here are *exactly* the modules CheckpointLoaderSimple
rebuilds from the written file — including the conventions shapes cannot tell: 8 attention heads
in the UNet, 64-wide heads in the text encoder, the 0.18215 latent scale.
"""

from __future__ import annotations

import torch

from loom.runtime.sd.shipped import base_config, clip_tokenizer

RESOLUTION = 128  # pixels; the VAE's scale factor is 8, so latents are 16x16
LATENT_SCALE = 0.18215  # SD 1.x's; the trained VAE is rescaled to match it (see train.py)


def vae_config() -> dict:
    cfg = base_config("sd15_vae")
    # Narrow at full resolution (the costly level), wider below where shapes are encoded.
    cfg.update(block_out_channels=[32, 64, 128, 128], layers_per_block=1, sample_size=RESOLUTION)
    return cfg


def text_config() -> dict:
    cfg = base_config("sd15_text_encoder")
    for key in ("architectures", "model_type"):
        cfg.pop(key, None)
    # 128 wide -> 2 heads of 64 (Loom's convention for CLIP text encoders).
    cfg.update(
        hidden_size=128, intermediate_size=512, num_hidden_layers=3, num_attention_heads=2, projection_dim=128
    )
    return cfg


def unet_config() -> dict:
    cfg = base_config("sd15_unet")
    cfg.update(
        # Attention only at 8x8 and 4x4 (and the middle): 16x16 attention would triple the cost
        # of a step, and where things go and what they are is decided at the coarse levels.
        block_out_channels=[32, 64, 128],
        layers_per_block=1,
        sample_size=RESOLUTION // 8,
        down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        cross_attention_dim=text_config()["hidden_size"],
        attention_head_dim=8,
    )
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def scheduler_config() -> dict:
    return base_config("sd15_scheduler")


def build_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(**{k: v for k, v in vae_config().items() if not k.startswith("_")})


def build_text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(**text_config()))


def build_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**unet_config())


def tokenizer():
    """The real CLIP tokenizer Loom ships (SD 1.x pads with <|endoftext|> to 77 tokens)."""
    return clip_tokenizer("clip_l")


def tokenize(captions: list[str]) -> torch.Tensor:
    """Token ids ``[B, 77]`` exactly as Loom's CLIPTextEncode makes them for prompts of <= 75 tokens."""
    tok = tokenizer()
    return tok(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids

"""Tiny random-weight ControlNets and T2I-Adapters that fit the tiny SD models of sd_fixtures,
and files of them in the layouts users have.

- ``tiny_controlnet(family, seed)``: a diffusers ``ControlNetModel`` shaped like the tiny UNet,
  with *non-zero* zero-convolutions (a fresh ControlNet adds nothing, which would test nothing).
- ``tiny_adapter(seed, family)``: a diffusers ``T2IAdapter`` for the tiny SD 1.x or SDXL UNet.
- ``controlnet_to_original(sd, config)``: diffusers -> original (lllyasviel) key names, written
  here independently of the loader (which converts with diffusers' own converter).
- ``save_controlnet(model, path, layout)``: "original" (``control_model.*``), "diffusers-file"
  or "diffusers-folder".
"""

from __future__ import annotations

from pathlib import Path

import torch
from sd_fixtures import tiny_configs

from loom.runtime.sd.keymap import unet_to_ldm

HINT_CHANNELS = (8, 8, 16, 16)  # four levels: the hint is brought down 8x, as SD's


def controlnet_config(family: str) -> dict:
    unet = tiny_configs("sdxl" if family == "sdxl" else "sd1")["unet"]
    keep = ("in_channels", "block_out_channels", "layers_per_block", "down_block_types",
            "cross_attention_dim", "attention_head_dim", "norm_num_groups",
            "use_linear_projection", "transformer_layers_per_block", "addition_embed_type",
            "addition_time_embed_dim", "projection_class_embeddings_input_dim")
    cfg = {k: v for k, v in unet.items() if k in keep}
    cfg["conditioning_embedding_out_channels"] = HINT_CHANNELS
    return cfg


def tiny_controlnet(family: str = "sd1", seed: int = 0):
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    model = ControlNetModel(**controlnet_config(family))
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block",
                                "controlnet_cond_embedding.conv_out")):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return model.eval().requires_grad_(False)


def tiny_adapter(seed: int = 0, family: str = "sd1"):
    """SD 1.x: full_adapter, one feature per down block of the tiny UNet. SDXL:
    full_adapter_xl (16x pixel-unshuffle; the tiny SDXL UNet uses its first two features)."""
    from diffusers import T2IAdapter

    torch.manual_seed(seed)
    if family == "sdxl":
        model = T2IAdapter(in_channels=3, channels=[32, 64, 64, 64], num_res_blocks=2,
                           downscale_factor=16, adapter_type="full_adapter_xl")
    else:
        model = T2IAdapter(in_channels=3, channels=[32, 64], num_res_blocks=2,
                           downscale_factor=8, adapter_type="full_adapter")
    return model.eval().requires_grad_(False)


def controlnet_to_original(sd: dict, config: dict, prefix: str = "control_model.") -> dict:
    n_blocks = 2 * (len(config["conditioning_embedding_out_channels"]) - 1)
    body_cfg = {"layers_per_block": config["layers_per_block"], "up_block_types": ()}
    out = {}
    for key, value in sd.items():
        module, _, param = key.rpartition(".")
        parts = module.split(".")
        if parts[0] == "controlnet_down_blocks":
            name = f"zero_convs.{parts[1]}.0.{param}"
        elif module == "controlnet_mid_block":
            name = f"middle_block_out.0.{param}"
        elif module == "controlnet_cond_embedding.conv_in":
            name = f"input_hint_block.0.{param}"
        elif module.startswith("controlnet_cond_embedding.blocks."):
            name = f"input_hint_block.{2 * int(parts[2]) + 2}.{param}"
        elif module == "controlnet_cond_embedding.conv_out":
            name = f"input_hint_block.{2 * n_blocks + 2}.{param}"
        else:
            (full,) = unet_to_ldm({key: value}, body_cfg)
            name = full.removeprefix("model.diffusion_model.")
        out[prefix + name] = value.contiguous()
    return out


def save_controlnet(model, path: str | Path, layout: str = "original") -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    if layout == "original":
        save_file(controlnet_to_original(sd, dict(model.config)), str(path))
    elif layout == "diffusers-file":
        save_file(sd, str(path))
    elif layout == "diffusers-folder":
        model.save_pretrained(path, safe_serialization=True)
    else:
        raise ValueError(layout)
    return path


def adapter_to_original(sd: dict, num_res_blocks: int) -> dict:
    """diffusers T2IAdapter (full_adapter) -> TencentARC's original ``Adapter`` names
    (``conv_in``, ``body.{level * n + j}.block1/block2``, ``body.{level * n}.in_conv``)."""
    out = {}
    for key, value in sd.items():
        parts = key.split(".")
        assert parts[0] == "adapter", key
        if parts[1] == "conv_in":
            name = ".".join(parts[1:])
        elif parts[3] == "in_conv":
            name = f"body.{int(parts[2]) * num_res_blocks}.{'.'.join(parts[3:])}"
        else:  # adapter.body.i.resnets.j.blockK.param
            name = f"body.{int(parts[2]) * num_res_blocks + int(parts[4])}.{'.'.join(parts[5:])}"
        out[name] = value.contiguous()
    return out

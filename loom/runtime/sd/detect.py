"""What a model file is, from its tensor names and shapes alone.

Checkpoints in the original single-file layout are recognised by where their text encoder sits:

====================================  ======================================================
``cond_stage_model.transformer.*``    SD 1.x (OpenAI CLIP ViT-L, context 768)
``cond_stage_model.model.*``          SD 2.x (OpenCLIP ViT-H, context 1024, linear proj_in)
``conditioner.embedders.1.model.*``   SDXL base (CLIP-L + OpenCLIP bigG, ``label_emb`` 2816)
====================================  ======================================================

with the UNet's cross-attention width as a fallback. The component configs are then *read off
the shapes* (channels per level, blocks per level, where attention is, transformer depth, context
width, in/out channels — 9 input channels is an inpainting model —, the VAE's channels and the
text encoders' widths and depths), starting from the shipped config of the family's reference
model, so real checkpoints load with exactly the published configs and the tiny test ones too.

What shapes cannot tell, and the conventions used instead:

- Attention head counts: SD 1.x uses 8 heads everywhere; SD 2.x and SDXL use 64-wide heads
  (``channels // 64``); CLIP text encoders use 64-wide heads.
- v-prediction: detected from a ``v_pred`` tensor (some trainers add it), safetensors metadata
  (``modelspec.prediction_type``, kohya's ``ss_v_parameterization``), a name containing
  ``768-v``/``v-pred``/``vpred``, and for full-size SD 2.x checkpoints a weight statistic that
  separates the 768-v releases from the 512 eps ones (the std of one late norm bias is much
  larger in v models). Otherwise epsilon; ``ModelSamplingDiscrete`` overrides it.
- SD 1.x and SDXL VAEs have identical shapes: a VAE's family comes from the checkpoint it sits
  in, its metadata, or its file name, else it is unknown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from loom.runtime.sd.reader import ModelFileError
from loom.runtime.sd.shipped import base_config

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIXES = ("first_stage_model.", "vae.")
SD1_TEXT = "cond_stage_model.transformer."
SD2_TEXT = "cond_stage_model.model."
SDXL_TEXT_L = "conditioner.embedders.0.transformer."
SDXL_TEXT_G = "conditioner.embedders.1.model."
REFINER_TEXT_G = "conditioner.embedders.0.model."

REFERENCE = {"sd1": "sd15", "sd2": "sd21", "sdxl": "sdxl"}
LATENT_SCALE = {"sd1": 0.18215, "sd2": 0.18215, "sdxl": 0.13025}


@dataclass
class TextEncoderSpec:
    """One text encoder of a checkpoint: where its weights are and how to build it."""

    layout: str  # "clip" (transformers-style keys) | "open_clip"
    prefix: str
    config: dict  # transformers CLIPTextConfig kwargs
    with_projection: bool
    tokenizer: str  # shipped tokenizer kind: "clip_l" | "open_clip"


@dataclass
class CheckpointInfo:
    family: str  # "sd1" | "sd2" | "sdxl"
    prediction_type: str  # "epsilon" | "v_prediction"
    prediction_source: str  # why: "v_pred key", "metadata", "file name", "weights", "default"
    unet_config: dict
    vae_config: dict | None
    text_encoders: list[TextEncoderSpec] = field(default_factory=list)
    vae_prefix: str = "first_stage_model."
    inpaint: bool = False
    scheduler_config: dict = field(default_factory=dict)

    @property
    def latent_scaling_factor(self) -> float:
        return float((self.vae_config or {}).get("scaling_factor", LATENT_SCALE[self.family]))


# -- what is this file? -----------------------------------------------------------------------

def _has(keys, *parts: str) -> bool:
    return any(any(p in k for p in parts) for k in keys)


def _starts(keys, *prefixes: str) -> bool:
    return any(k.startswith(prefixes) for k in keys)


def classify(sd: dict) -> str:
    """A coarse kind for any state dict: checkpoint, unet, vae, lora, embedding, controlnet,
    upscaler, clip, or the name of an architecture Loom does not load here; "unknown" if none."""
    keys = list(sd.keys())
    if any(k in sd for k in ("string_to_param", "emb_params", "clip_l", "clip_g")):
        return "embedding"
    if _has(keys, "lora_unet_", "lora_te", ".lora_down.", ".lora_up.", ".lora_A.", ".lora_B.",
            "lora.down.", "lora.up.", ".hada_w1", ".lokr_w1"):
        return "lora"
    if _starts(keys, "control_model.") or _has(keys, "input_hint_block.", "controlnet_cond_embedding."):
        return "controlnet"
    if _has(keys, "double_blocks.", "single_blocks.") and _has(keys, "img_attn"):
        return "flux"
    if _has(keys, "joint_blocks."):
        return "sd3"
    if _starts(keys, UNET_PREFIX):
        return "checkpoint"
    if _starts(keys, "input_blocks.", "down_blocks.") and _has(keys, "time_embed", "time_embedding"):
        return "unet"
    if _starts(keys, "encoder.", "decoder.", *VAE_PREFIXES) and _has(keys, "decoder.conv_in"):
        return "vae"
    if _has(keys, "conv_first.", "model.0.weight", "body.0.", "upconv1.") and not _has(keys, "attn"):
        return "upscaler"
    if _has(keys, "text_model.encoder.layers.", "transformer.resblocks.", "encoder.layers.0.self_attn"):
        return "clip"
    return "unknown"


_WHERE = {
    "lora": "a LoRA: put it in models/loras/ and use LoraLoader",
    "vae": "a VAE on its own: put it in models/vae/ and use VAELoader",
    "embedding": "a textual-inversion embedding: put it in models/embeddings/ and write "
                 "embedding:NAME in a prompt",
    "controlnet": "a ControlNet: put it in models/controlnet/",
    "upscaler": "an upscale model: put it in models/upscale_models/",
    "unet": "a UNet without text encoder and VAE (models/unet/)",
    "clip": "a text encoder on its own (models/text_encoders/)",
    "flux": "a FLUX model, which this loader does not support",
    "sd3": "a Stable Diffusion 3 model, which this loader does not support",
    "checkpoint": "a Stable Diffusion checkpoint: put it in models/checkpoints/",
}


def describe(sd: dict) -> str:
    """What a file looks like, in words, with a few of its tensor names."""
    kind = classify(sd)
    sample = ", ".join(list(sd)[:4])
    what = _WHERE.get(kind, "no model type Loom knows")
    return f"it looks like {what} ({len(sd)} tensors, e.g. {sample})"


def wrong_kind_error(name: str, sd: dict, expected: str) -> ModelFileError:
    return ModelFileError(f"{name} is not {expected}: {describe(sd)}.")


# -- checkpoints ------------------------------------------------------------------------------

def detect_checkpoint(sd: dict, *, name: str = "checkpoint", metadata: dict | None = None) -> CheckpointInfo:
    """Family, prediction type and component configs of an original-layout checkpoint."""
    keys = sd.keys()
    if classify(sd) != "checkpoint":
        raise wrong_kind_error(name, sd, "a Stable Diffusion checkpoint (SD 1.x, SD 2.x or SDXL)")
    k_ctx = next((k for k in keys if k.startswith(UNET_PREFIX) and k.endswith("attn2.to_k.weight")), None)
    context = int(sd[k_ctx].shape[1]) if k_ctx else None
    adm = sd.get(UNET_PREFIX + "label_emb.0.0.weight")
    if _starts(keys, SDXL_TEXT_G):
        family = "sdxl"
    elif _starts(keys, REFINER_TEXT_G):
        raise ModelFileError(f"{name} is an SDXL refiner checkpoint (one OpenCLIP bigG text encoder); "
                             "Loom loads SDXL base models, SD 1.x and SD 2.x so far.")
    elif _starts(keys, SD2_TEXT):
        family = "sd2"
    elif _starts(keys, SD1_TEXT):
        family = "sd1"
    elif not _starts(keys, "cond_stage_model.", "conditioner.") and not _starts(keys, *VAE_PREFIXES):
        raise ModelFileError(f"{name} has a UNet but no text encoder and no VAE: it is a UNet-only file "
                             f"(models/unet/), not a full checkpoint for CheckpointLoaderSimple.")
    elif adm is not None and context == 2048:
        family = "sdxl"
    elif context == 1024:
        family = "sd2"
    elif context == 768:
        family = "sd1"
    else:
        raise ModelFileError(f"{name}: has a UNet but no text encoder Loom recognises and an unknown "
                             f"context width {context}; expected SD 1.x (768), SD 2.x (1024) or "
                             f"SDXL (2048 with label_emb).")
    if family != "sdxl" and adm is not None:
        raise ModelFileError(f"{name}: a {family} UNet with a class/ADM embedding (label_emb) — an "
                             "unCLIP or upscaler variant, which Loom does not load yet.")
    text = _text_specs(sd, family, name)
    if not text:
        raise ModelFileError(f"{name} has a UNet but no text encoder: it is a UNet-only file. Put it "
                             f"in models/unet/ (or use a full checkpoint with CheckpointLoaderSimple).")
    vae_prefix = next((p for p in VAE_PREFIXES if f"{p}decoder.conv_in.weight" in sd), None)
    unet_cfg = infer_unet_config(sd, UNET_PREFIX, family)
    vae_cfg = infer_vae_config(sd, vae_prefix, family) if vae_prefix else None
    pred, source = detect_prediction(sd, family, name=name, metadata=metadata or {})
    sched = base_config(f"{REFERENCE[family]}_scheduler")
    sched["prediction_type"] = pred
    return CheckpointInfo(family=family, prediction_type=pred, prediction_source=source,
                          unet_config=unet_cfg, vae_config=vae_cfg, text_encoders=text,
                          vae_prefix=vae_prefix or "first_stage_model.",
                          inpaint=unet_cfg["in_channels"] == 9, scheduler_config=sched)


_VPRED_NAME = re.compile(r"(768-v|v[-_]?pred|vpred|v[-_]param)", re.IGNORECASE)


def detect_prediction(sd: dict, family: str, *, name: str = "", metadata: dict) -> tuple[str, str]:
    if "v_pred" in sd:
        return "v_prediction", "v_pred key"
    meta_pred = (metadata.get("modelspec.prediction_type") or metadata.get("prediction_type") or "").lower()
    if meta_pred in ("v", "v_prediction", "v-prediction"):
        return "v_prediction", "metadata"
    if meta_pred in ("epsilon", "eps"):
        return "epsilon", "metadata"
    if str(metadata.get("ss_v_parameterization", "")).lower() == "true":
        return "v_prediction", "metadata"
    if _VPRED_NAME.search(name or ""):
        return "v_prediction", "file name"
    if family == "sd2":
        # Full-size SD 2.x only: in the 768-v releases this late norm bias has a much wider spread
        # than in the 512 eps ones (a measured property of the published weights, not a rule).
        bias = sd.get(UNET_PREFIX + "output_blocks.11.1.transformer_blocks.0.norm1.bias")
        in_ch = sd[UNET_PREFIX + "input_blocks.0.0.weight"].shape[1]
        if bias is not None and not bias.is_meta and bias.numel() == 320 and in_ch == 4:
            if torch.std(bias.float(), unbiased=False) > 0.09:
                return "v_prediction", "weights"
    return "epsilon", "default"


# -- UNet -------------------------------------------------------------------------------------

def _indices(keys, prefix: str) -> list[int]:
    n = len(prefix)
    return sorted({int(k[n:].split(".", 1)[0]) for k in keys
                   if k.startswith(prefix) and k[n:n + 1].isdigit()})


def _depth(keys, prefix: str) -> int:
    return len(_indices(keys, prefix + "transformer_blocks."))


def _levels(sd: dict, keys: list[str], prefix: str) -> list[list[int]]:
    """The input blocks' resnets ("N.0.in_layers") grouped into levels by downsamplers
    ("N.0.op"); every level must have as many."""
    levels: list[list[int]] = [[]]
    for i in _indices(keys, prefix + "input_blocks.")[1:]:
        if f"{prefix}input_blocks.{i}.0.op.weight" in sd:
            levels.append([])
        else:
            levels[-1].append(i)
    if len({len(lv) for lv in levels}) != 1:
        raise ModelFileError(f"UNet with uneven blocks per level {[len(lv) for lv in levels]}")
    return levels


def _level_shapes(sd: dict, keys: list[str], prefix: str,
                  levels: list[list[int]]) -> tuple[list[int], list[bool], list[int]]:
    """Per level: output channels, whether it has attention, and its transformer depth."""
    channels, attention, depth = [], [], []
    for lv in levels:
        first = lv[0]
        channels.append(int(sd[f"{prefix}input_blocks.{first}.0.out_layers.3.weight"].shape[0]))
        has_attn = f"{prefix}input_blocks.{first}.1.norm.weight" in sd
        attention.append(has_attn)
        depth.append(_depth(keys, f"{prefix}input_blocks.{first}.1.") if has_attn else 1)
    return channels, attention, depth


def infer_unet_config(sd: dict, prefix: str, family: str) -> dict:
    """A diffusers UNet2DConditionModel config read off an original-layout UNet's shapes."""
    keys = [k for k in sd if k.startswith(prefix)]
    cfg = base_config(f"{REFERENCE[family]}_unet")
    conv_in = sd[prefix + "input_blocks.0.0.weight"]
    cfg["in_channels"] = int(conv_in.shape[1])
    out = sd.get(prefix + "out.2.weight")  # a ControlNet's copy of the encoder has no output
    cfg["out_channels"] = int(out.shape[0]) if out is not None else cfg["in_channels"]
    levels = _levels(sd, keys, prefix)
    channels, attention, depth = _level_shapes(sd, keys, prefix, levels)
    n = len(levels)
    cfg["block_out_channels"] = channels
    cfg["layers_per_block"] = len(levels[0])
    cfg["down_block_types"] = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention]
    cfg["up_block_types"] = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)]
    mid_attn = f"{prefix}middle_block.1.norm.weight" in sd
    if not mid_attn:
        raise ModelFileError("UNet without a middle attention block: not an SD 1.x/2.x/SDXL UNet")
    mid_depth = _depth(keys, f"{prefix}middle_block.1.")
    attn_depths = [d for d, a in zip(depth, attention, strict=True) if a]
    if any(d != 1 for d in attn_depths) or mid_depth != 1:
        # diffusers' mid block takes the last level's depth
        depth_list = [d if a else 1 for d, a in zip(depth, attention, strict=True)]
        if depth_list[-1] != mid_depth:
            depth_list[-1] = mid_depth
        cfg["transformer_layers_per_block"] = depth_list
    else:
        cfg.pop("transformer_layers_per_block", None)
    proj_in = next(k for k in keys if k.endswith(".1.proj_in.weight"))
    cfg["use_linear_projection"] = sd[proj_in].dim() == 2
    to_k = next(k for k in keys if k.endswith("attn2.to_k.weight"))
    cfg["cross_attention_dim"] = int(sd[to_k].shape[1])
    if family == "sd1":
        cfg["attention_head_dim"] = 8
    else:
        cfg["attention_head_dim"] = [max(1, c // 64) for c in channels]
    adm = sd.get(prefix + "label_emb.0.0.weight")
    if family == "sdxl":
        if adm is None:
            raise ModelFileError("SDXL UNet without label_emb (the size/crop conditioning embedding)")
        cfg["projection_class_embeddings_input_dim"] = int(adm.shape[1])
        # adm input = 6 size/crop values * time_embed_dim + pooled width; the pooled width is the
        # second text encoder's projection, which the caller checks (see ``finish_sdxl``).
    cfg["num_attention_heads"] = None
    cfg["sample_size"] = cfg.get("sample_size", 64)
    assert len(cfg["block_out_channels"]) == n
    return cfg


def finish_sdxl_config(unet_cfg: dict, pooled_dim: int) -> None:
    """Set the size-embedding width from the adm input width and the pooled text width."""
    adm_in = unet_cfg["projection_class_embeddings_input_dim"]
    if (adm_in - pooled_dim) % 6 or adm_in <= pooled_dim:
        raise ModelFileError(f"SDXL UNet expects {adm_in} conditioning values, which does not fit a "
                             f"pooled text width of {pooled_dim} plus 6 size/crop embeddings")
    unet_cfg["addition_time_embed_dim"] = (adm_in - pooled_dim) // 6


# -- VAE --------------------------------------------------------------------------------------

def infer_vae_config(sd: dict, prefix: str, family: str | None) -> dict:
    """A diffusers AutoencoderKL config from an original-layout VAE (``encoder.down.N.block…``)."""
    ref = {"sdxl": "sdxl", "sd2": "sd21"}.get(family or "", "sd15")
    cfg = base_config(f"{ref}_vae")
    keys = [k for k in sd if k.startswith(prefix)]
    levels = _indices(keys, prefix + "encoder.down.")
    if not levels:
        raise ModelFileError("VAE weights without encoder.down blocks")
    cfg["block_out_channels"] = [int(sd[f"{prefix}encoder.down.{i}.block.0.conv1.weight"].shape[0])
                                 for i in levels]
    cfg["layers_per_block"] = len(_indices(keys, prefix + "encoder.down.0.block."))
    cfg["down_block_types"] = ["DownEncoderBlock2D"] * len(levels)
    cfg["up_block_types"] = ["UpDecoderBlock2D"] * len(levels)
    cfg["in_channels"] = int(sd[prefix + "encoder.conv_in.weight"].shape[1])
    cfg["out_channels"] = int(sd[prefix + "decoder.conv_out.weight"].shape[0])
    cfg["latent_channels"] = int(sd[prefix + "decoder.conv_in.weight"].shape[1])
    groups = cfg.get("norm_num_groups", 32)
    if any(c % groups for c in cfg["block_out_channels"]):
        raise ModelFileError(f"VAE channels {cfg['block_out_channels']} are not multiples of {groups}")
    return cfg


def infer_diffusers_vae_config(sd: dict, family: str | None) -> dict:
    """The same, for a VAE file in diffusers layout (``encoder.down_blocks.N.resnets…``)."""
    ref = {"sdxl": "sdxl", "sd2": "sd21"}.get(family or "", "sd15")
    cfg = base_config(f"{ref}_vae")
    levels = _indices(sd.keys(), "encoder.down_blocks.")
    cfg["block_out_channels"] = [int(sd[f"encoder.down_blocks.{i}.resnets.0.conv1.weight"].shape[0])
                                 for i in levels]
    cfg["layers_per_block"] = len(_indices(sd.keys(), "encoder.down_blocks.0.resnets."))
    cfg["down_block_types"] = ["DownEncoderBlock2D"] * len(levels)
    cfg["up_block_types"] = ["UpDecoderBlock2D"] * len(levels)
    cfg["in_channels"] = int(sd["encoder.conv_in.weight"].shape[1])
    cfg["out_channels"] = int(sd["decoder.conv_out.weight"].shape[0])
    cfg["latent_channels"] = int(sd["decoder.conv_in.weight"].shape[1])
    return cfg


# -- text encoders ----------------------------------------------------------------------------

def _text_specs(sd: dict, family: str, name: str) -> list[TextEncoderSpec]:
    keys = sd.keys()
    specs = []
    if family == "sd1" and _starts(keys, SD1_TEXT):
        specs.append(TextEncoderSpec("clip", SD1_TEXT, _clip_config(sd, SD1_TEXT, "sd15_text_encoder"),
                                     False, "clip_l"))
    elif family == "sd2" and _starts(keys, SD2_TEXT):
        # SD 2.x conditions on the penultimate block of OpenCLIP ViT-H; like diffusers, Loom drops
        # the last block, so the encoder's output *is* the SD 2.x conditioning.
        cfg = _open_clip_config(sd, SD2_TEXT, "sd21_text_encoder", drop_last=True)
        specs.append(TextEncoderSpec("open_clip", SD2_TEXT, cfg, False, "open_clip"))
    elif family == "sdxl" and _starts(keys, SDXL_TEXT_L) and _starts(keys, SDXL_TEXT_G):
        specs.append(TextEncoderSpec("clip", SDXL_TEXT_L,
                                     _clip_config(sd, SDXL_TEXT_L, "sdxl_text_encoder"), False, "clip_l"))
        g_cfg = _open_clip_config(sd, SDXL_TEXT_G, "sdxl_text_encoder_2", drop_last=False)
        specs.append(TextEncoderSpec("open_clip", SDXL_TEXT_G, g_cfg, True, "open_clip"))
    elif family == "sdxl" and (_starts(keys, SDXL_TEXT_L) or _starts(keys, SDXL_TEXT_G)):
        raise ModelFileError(f"{name}: an SDXL checkpoint with only one of its two text encoders")
    return specs


def _text_config(base: str, tokens, positions, first_mlp) -> dict:
    """The ``base`` CLIP text config with the sizes a file's tensors show (vocabulary and width
    from the token embedding, context from the position embedding, MLP width, 64-wide heads)."""
    cfg = base_config(base)
    cfg.pop("architectures", None)
    cfg.pop("model_type", None)
    cfg["vocab_size"], cfg["hidden_size"] = int(tokens.shape[0]), int(tokens.shape[1])
    cfg["max_position_embeddings"] = int(positions.shape[0])
    cfg["intermediate_size"] = int(first_mlp.shape[0])
    cfg["num_attention_heads"] = max(1, cfg["hidden_size"] // 64)
    return cfg


def _clip_config(sd: dict, prefix: str, base: str) -> dict:
    p = prefix + ("text_model." if any(k.startswith(prefix + "text_model.") for k in sd) else "")
    cfg = _text_config(base, sd[p + "embeddings.token_embedding.weight"],
                       sd[p + "embeddings.position_embedding.weight"],
                       sd[p + "encoder.layers.0.mlp.fc1.weight"])
    cfg["num_hidden_layers"] = len(_indices(sd.keys(), p + "encoder.layers."))
    proj = sd.get(prefix + "text_projection.weight")
    if proj is not None:
        cfg["projection_dim"] = int(proj.shape[0])
    return cfg


def _open_clip_config(sd: dict, prefix: str, base: str, drop_last: bool) -> dict:
    cfg = _text_config(base, sd[prefix + "token_embedding.weight"], sd[prefix + "positional_embedding"],
                       sd[prefix + "transformer.resblocks.0.mlp.c_fc.weight"])
    layers = len(_indices(sd.keys(), prefix + "transformer.resblocks."))
    cfg["num_hidden_layers"] = layers - 1 if drop_last else layers
    proj = sd.get(prefix + "text_projection")
    if proj is not None and not drop_last:
        cfg["projection_dim"] = int(proj.shape[1])
    return cfg


# -- VAE family -------------------------------------------------------------------------------

_XL_NAME = re.compile(r"(sdxl|sd_xl|[-_ .]xl[-_ .]|^xl[-_ .]|[-_ .]xl$|pony|illustrious)", re.IGNORECASE)


def guess_vae_family(name: str, metadata: dict) -> tuple[str, str]:
    """(family, how sure): ("sdxl"|"sd1"|"", "metadata"|"name"|"").

    SD 1.x/2.x share one latent space ("sd1"); SDXL has its own.
    """
    arch = (metadata.get("modelspec.architecture") or "").lower()
    if arch:
        if "xl" in arch:
            return "sdxl", "metadata"
        if "stable-diffusion-v1" in arch or "stable-diffusion-v2" in arch:
            return "sd1", "metadata"
    stem = re.sub(r"\.(safetensors|sft|ckpt|pt|pth|bin)$", "", name.rsplit("/", 1)[-1], flags=re.IGNORECASE)
    if _XL_NAME.search(stem):
        return "sdxl", "name"
    if re.search(r"(sd[-_ ]?1|sd15|v1-5|vae-ft-(mse|ema)|kl-f8|sd[-_ ]?2)", stem, re.IGNORECASE):
        return "sd1", "name"
    return "", ""


def latent_space(family: str) -> str:
    """The latent space a model family uses: SD 1.x and 2.x share one."""
    return {"sd2": "sd1"}.get(family, family)

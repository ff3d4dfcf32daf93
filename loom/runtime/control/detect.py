"""What a control file is and its diffusers config, from tensor names and shapes.

Layouts recognised (``control_model.`` prefix optional for the original one):

==========================================  ==================================================
``input_hint_block.*``, ``zero_convs.*``    ControlNet, original (lllyasviel) layout
``controlnet_cond_embedding.*``             ControlNet, diffusers layout
``adapter.conv_in.*``, ``adapter.body.*``   T2I-Adapter, diffusers layout
``conv_in.*``, ``body.N.block1.*``          T2I-Adapter, original (TencentARC) layout
==========================================  ==================================================

A ControlNet's config is read off its encoder the way checkpoints' UNets are
(:func:`loom.runtime.sd.detect.infer_unet_config`), starting from the shipped config of the
reference ControlNet of its family (``configs/sd15_controlnet.json``, ``sdxl_controlnet.json``);
the family comes from the context width (768 SD 1.x, 1024 SD 2.x) or an SDXL ``label_emb``.
What shapes cannot tell: SDXL's size-embedding width per value (``addition_time_embed_dim``),
taken as the published 256 when the pooled width comes out at SDXL's 1280, else solved for a
pooled width of half the context width (SDXL-shaped models whose two text encoders are equally
wide); the sampler checks it against the UNet's.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from loom.runtime.sd.detect import REFERENCE, _indices, describe, infer_unet_config
from loom.runtime.sd.keymap import unet_to_ldm
from loom.runtime.sd.reader import ModelFileError
from loom.runtime.sd.shipped import base_config

CONTROL_PREFIX = "control_model."


@dataclass
class ControlInfo:
    kind: str  # "controlnet" | "t2i_adapter"
    layout: str  # "original" | "diffusers"
    family: str
    config: dict  # diffusers config (ControlNetModel / T2IAdapter kwargs)
    prefix: str = ""  # original ControlNets: "control_model." or ""
    diff: bool = False  # weights are differences to a base UNet (DiffControlNetLoader)


def classify_control(sd: dict) -> tuple[str, str, str] | None:
    """``(kind, layout, prefix)`` or None when ``sd`` is no control model Loom loads."""
    keys = sd.keys()
    for prefix in (CONTROL_PREFIX, ""):
        if f"{prefix}input_hint_block.0.weight" in sd:
            return "controlnet", "original", prefix
    if "controlnet_cond_embedding.conv_in.weight" in sd:
        return "controlnet", "diffusers", ""
    if "adapter.conv_in.weight" in sd:
        return "t2i_adapter", "diffusers", ""
    if "conv_in.weight" in sd and any(k.startswith("body.0.block1.") for k in keys):
        return "t2i_adapter", "original", ""
    return None


def detect_control(sd: dict, name: str = "control model") -> ControlInfo:
    found = classify_control(sd)
    if found is None:
        raise ModelFileError(f"{name} is not a ControlNet or T2I-Adapter Loom can load: "
                             f"{describe(sd)}.")
    kind, layout, prefix = found
    diff = "difference" in sd
    if kind == "t2i_adapter":
        cfg, family = _adapter_config(sd if layout == "diffusers" else original_adapter_to_diffusers(sd))
        return ControlInfo(kind, layout, family, cfg, diff=diff)
    ldm = sd if layout == "original" else _controlnet_to_ldm(sd)
    cfg, family = _controlnet_config(ldm, prefix if layout == "original" else "")
    return ControlInfo(kind, layout, family, cfg, prefix=prefix, diff=diff)


# -- ControlNet -------------------------------------------------------------------------------

def _controlnet_config(sd: dict, prefix: str) -> tuple[dict, str]:
    from diffusers import ControlNetModel

    k_ctx = next((k for k in sd if k.startswith(prefix) and k.endswith("attn2.to_k.weight")), None)
    context = int(sd[k_ctx].shape[1]) if k_ctx else None
    adm = sd.get(prefix + "label_emb.0.0.weight")
    family = "sdxl" if adm is not None else ("sd2" if context == 1024 else "sd1")
    unet = infer_unet_config(sd, prefix, family)
    cfg = base_config("sdxl_controlnet" if family == "sdxl" else "sd15_controlnet")
    if family == "sd2":
        cfg["upcast_attention"] = base_config(f"{REFERENCE['sd2']}_unet").get("upcast_attention",
                                                                              False)
    accepted = set(inspect.signature(ControlNetModel.__init__).parameters)
    for key in ("in_channels", "block_out_channels", "layers_per_block", "down_block_types",
                "cross_attention_dim", "attention_head_dim", "use_linear_projection",
                "transformer_layers_per_block"):
        if key in unet:
            cfg[key] = unet[key]
        elif key == "transformer_layers_per_block":
            cfg[key] = 1
    hint = sorted(i for i in _indices(sd.keys(), prefix + "input_hint_block.")
                  if f"{prefix}input_hint_block.{i}.weight" in sd)
    first, blocks = hint[0], hint[1:-1]
    cfg["conditioning_channels"] = int(sd[f"{prefix}input_hint_block.{first}.weight"].shape[1])
    cfg["conditioning_embedding_out_channels"] = (
        [int(sd[f"{prefix}input_hint_block.{first}.weight"].shape[0])]
        + [int(sd[f"{prefix}input_hint_block.{i}.weight"].shape[0]) for i in blocks[1::2]])
    if family == "sdxl":
        adm_in = int(adm.shape[1])
        cfg["projection_class_embeddings_input_dim"] = adm_in
        cfg["addition_time_embed_dim"] = _time_embed_dim(adm_in, int(context or 2048))
    else:
        for key in ("addition_embed_type", "addition_time_embed_dim",
                    "projection_class_embeddings_input_dim"):
            cfg.pop(key, None)
    cfg = {k: v for k, v in cfg.items() if k in accepted or k.startswith("_")}
    return cfg, family


def _time_embed_dim(adm_in: int, context: int) -> int:
    for pooled in (1280, context // 2):
        rest = adm_in - pooled
        if rest > 0 and rest % 6 == 0:
            return rest // 6
    raise ModelFileError(f"SDXL ControlNet with {adm_in} size/pooled conditioning values, which "
                         "does not split into a pooled text width and 6 size embeddings")


def _controlnet_to_ldm(sd: dict) -> dict:
    """diffusers-layout ControlNet names -> original names (shapes are read off those)."""
    per = len(_indices(sd.keys(), "down_blocks.0.resnets."))
    blocks = _indices(sd.keys(), "controlnet_cond_embedding.blocks.")
    out = {}
    for key, value in sd.items():
        module, _, param = key.rpartition(".")
        if module.startswith("controlnet_down_blocks."):
            out[f"zero_convs.{module.split('.')[1]}.0.{param}"] = value
        elif module == "controlnet_mid_block":
            out[f"middle_block_out.0.{param}"] = value
        elif module == "controlnet_cond_embedding.conv_in":
            out[f"input_hint_block.0.{param}"] = value
        elif module.startswith("controlnet_cond_embedding.blocks."):
            out[f"input_hint_block.{2 * int(module.split('.')[2]) + 2}.{param}"] = value
        elif module == "controlnet_cond_embedding.conv_out":
            out[f"input_hint_block.{2 * len(blocks) + 2}.{param}"] = value
        else:
            (name,) = unet_to_ldm({key: value}, {"layers_per_block": per, "up_block_types": ()})
            out[name.removeprefix("model.diffusion_model.")] = value
    return out


# -- T2I-Adapter ------------------------------------------------------------------------------

def _adapter_config(sd: dict) -> tuple[dict, str]:
    """A diffusers T2IAdapter config from its (diffusers-layout) weights."""
    if "adapter.body.0.in_conv.weight" in sd and "adapter.body.0.out_conv.weight" in sd:
        raise ModelFileError("light T2I-Adapters (color) are not supported yet; full and SDXL "
                             "T2I-Adapters are")
    levels = _indices(sd.keys(), "adapter.body.")
    channels = [int(sd[f"adapter.body.{i}.resnets.0.block1.weight"].shape[0]) for i in levels]
    res_blocks = len(_indices(sd.keys(), "adapter.body.0.resnets."))
    conv_in = int(sd["adapter.conv_in.weight"].shape[1])
    # full_adapter_xl pixel-unshuffles by 16 (SD 1.x's full_adapter by 8): its first conv takes
    # 256 values per image channel (1 or 3 channels), which 8x8 of 1 or 3 channels never is.
    xl = conv_in % 256 == 0 and conv_in // 256 in (1, 3)
    factor = 16 if xl else 8
    in_ch = conv_in // (factor * factor)
    if in_ch * factor * factor != conv_in:
        raise ModelFileError(f"T2I-Adapter whose first layer takes {conv_in} values: not a pixel-"
                             f"unshuffled image (by {factor})")
    cfg = {"in_channels": in_ch, "channels": channels, "num_res_blocks": res_blocks,
           "downscale_factor": factor,
           "adapter_type": "full_adapter_xl" if xl else "full_adapter"}
    return cfg, "sdxl" if xl else "sd1"


def original_adapter_to_diffusers(sd: dict) -> dict:
    """TencentARC's original full adapter (``body.{level * n + j}.block1`` …) -> diffusers."""
    n_blocks = len(_indices(sd.keys(), "body."))
    levels = 4
    if n_blocks % levels:
        raise ModelFileError(f"T2I-Adapter with {n_blocks} blocks, not 4 levels of equal depth")
    per = n_blocks // levels
    out = {}
    for key, value in sd.items():
        if key.startswith("conv_in."):
            out["adapter." + key] = value
            continue
        parts = key.split(".")
        if parts[0] != "body":
            continue  # e.g. skep convs of the sk=False variant: not in diffusers' adapter
        k, rest = int(parts[1]), ".".join(parts[2:])
        level, j = divmod(k, per)
        if rest.startswith("in_conv."):
            out[f"adapter.body.{level}.{rest}"] = value
        elif rest.startswith(("block1.", "block2.")):
            out[f"adapter.body.{level}.resnets.{j}.{rest}"] = value
        else:
            raise ModelFileError(f"T2I-Adapter weight {key} has no place in diffusers' adapter "
                                 "(only the sk=True variant of the original adapters loads)")
    return out


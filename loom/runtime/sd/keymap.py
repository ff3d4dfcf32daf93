"""diffusers/transformers -> original (LDM/CompVis) key names for the SD UNet, VAE and CLIP text model.

Loading goes the other way through diffusers' own converters; this direction is what LoRA files
trained on the original layout (kohya's SDXL names, ``lora_unet_input_blocks_4_1_…``) and the
test fixtures (which write original-layout checkpoints) need. The round-trip tests check that
both directions agree. Loom's demo model (``training/demo_model``) is written with them too.
"""

from __future__ import annotations

import torch

_UNET_RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
                ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection"))


def _rename_resnet(rest: str, table) -> str:
    head, _, tail = rest.partition(".")
    for new, old in table:
        if head == new:
            return f"{old}.{tail}"
    raise KeyError(rest)


def unet_to_ldm(sd: dict, config: dict) -> dict:
    """diffusers UNet2DConditionModel state dict -> ``model.diffusion_model.*`` keys."""
    per = config["layers_per_block"]
    up_has_attn = ["CrossAttn" in t for t in config["up_block_types"]]
    fixed = {
        "time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
        "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
        "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
    }
    out = {}
    for key, value in sd.items():
        parts = key.split(".")
        module, param = ".".join(parts[:-1]), parts[-1]
        if module in fixed:
            new = f"{fixed[module]}.{param}"
        elif parts[0] == "down_blocks":
            b, kind, j = int(parts[1]), parts[2], parts[3]
            rest = ".".join(parts[4:])
            if kind == "downsamplers":
                new = f"input_blocks.{(b + 1) * (per + 1)}.0.op.{parts[-1]}"
            else:
                idx = 1 + b * (per + 1) + int(j)
                new = (f"input_blocks.{idx}.0.{_rename_resnet(rest, _UNET_RESNET)}" if kind == "resnets"
                       else f"input_blocks.{idx}.1.{rest}")
        elif parts[0] == "mid_block":
            kind, j, rest = parts[1], int(parts[2]), ".".join(parts[3:])
            new = (f"middle_block.{2 * j}.{_rename_resnet(rest, _UNET_RESNET)}" if kind == "resnets"
                   else f"middle_block.1.{rest}")
        elif parts[0] == "up_blocks":
            b, kind, j = int(parts[1]), parts[2], parts[3]
            rest = ".".join(parts[4:])
            if kind == "upsamplers":
                idx = b * (per + 1) + per
                new = f"output_blocks.{idx}.{2 if up_has_attn[b] else 1}.conv.{parts[-1]}"
            else:
                idx = b * (per + 1) + int(j)
                new = (f"output_blocks.{idx}.0.{_rename_resnet(rest, _UNET_RESNET)}" if kind == "resnets"
                       else f"output_blocks.{idx}.1.{rest}")
        else:
            raise KeyError(f"no original-layout name for UNet key {key}")
        out["model.diffusion_model." + new] = value
    return out


_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def vae_to_ldm(sd: dict, config: dict) -> dict:
    """diffusers AutoencoderKL state dict -> ``first_stage_model.*`` keys."""
    n_up = len(config["up_block_types"])
    out = {}
    for key, value in sd.items():
        parts = key.split(".")
        side = parts[0]
        if side in ("quant_conv", "post_quant_conv"):
            new = key
        elif parts[1] in ("conv_in", "conv_out"):
            new = key
        elif parts[1] == "conv_norm_out":
            new = f"{side}.norm_out.{parts[-1]}"
        elif parts[1] in ("down_blocks", "up_blocks"):
            i, kind = int(parts[2]), parts[3]
            level, name = (i, "down") if parts[1] == "down_blocks" else (n_up - 1 - i, "up")
            if kind in ("downsamplers", "upsamplers"):
                new = f"{side}.{name}.{level}.{name}sample.conv.{parts[-1]}"
            else:
                rest = ".".join(parts[5:]).replace("conv_shortcut", "nin_shortcut")
                new = f"{side}.{name}.{level}.block.{parts[4]}.{rest}"
        elif parts[1] == "mid_block":
            kind, j = parts[2], int(parts[3])
            rest = ".".join(parts[4:])
            if kind == "resnets":
                new = f"{side}.mid.block_{j + 1}.{rest.replace('conv_shortcut', 'nin_shortcut')}"
            else:
                module, param = rest.rsplit(".", 1)
                new = f"{side}.mid.attn_1.{_VAE_ATTN[module]}.{param}"
                if value.dim() == 2:  # linear -> 1x1 conv, as the original stores it
                    value = value[:, :, None, None]
        else:
            raise KeyError(f"no original-layout name for VAE key {key}")
        out["first_stage_model." + new] = value
    return out


def clip_to_ldm(sd: dict, prefix: str) -> dict:
    """transformers CLIPTextModel -> the transformers-4 layout SD1/SDXL files embed under ``prefix``
    (``cond_stage_model.transformer.`` for SD 1.x)."""
    out = {}
    for key, value in sd.items():
        key = key if key.startswith("text_model.") else "text_model." + key
        out[prefix + key] = value
    out[prefix + "text_model.embeddings.position_ids"] = torch.arange(77, dtype=torch.int64)[None]
    return out

"""Write the trained modules as one SD 1.x checkpoint in the original single-file layout.

diffusers only converts original -> diffusers; the reverse key mapping lives in
:mod:`loom.runtime.sd.keymap` (the test fixtures use it too, and tests check that it round-trips
through diffusers' own converters). Weights are stored in fp16 (Loom casts on load) to halve the
file; the metadata says what the file is so tools that read ``modelspec`` keys recognise it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from loom.runtime.sd.keymap import clip_to_ldm, unet_to_ldm, vae_to_ldm
from training.demo_model import architecture

TEXT_PREFIX = "cond_stage_model.transformer."


def original_state_dict(unet, vae, text_encoder, dtype: torch.dtype = torch.float16) -> dict:
    """The three modules under ``model.diffusion_model.``, ``first_stage_model.`` and
    ``cond_stage_model.transformer.``, as an SD 1.x single file has them."""
    sd = {}
    sd.update(unet_to_ldm(unet.state_dict(), architecture.unet_config()))
    sd.update(vae_to_ldm(vae.state_dict(), architecture.vae_config()))
    text = {k: v for k, v in text_encoder.state_dict().items() if not k.endswith("position_ids")}
    sd.update(clip_to_ldm(text, TEXT_PREFIX))
    return {
        k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
        for k, v in sd.items()
    }


def write_checkpoint(path: str | Path, unet, vae, text_encoder, info: dict | None = None) -> Path:
    """Write the checkpoint atomically (a half-written file never replaces a good one)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "format": "pt",
        "modelspec.architecture": "stable-diffusion-v1",
        "modelspec.title": "Loom demo shapes",
        "modelspec.prediction_type": "epsilon",
        "modelspec.resolution": f"{architecture.RESOLUTION}x{architecture.RESOLUTION}",
        "loom.training": json.dumps(info or {}, sort_keys=True),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(original_state_dict(unet, vae, text_encoder), str(tmp), metadata=metadata)
    tmp.replace(path)
    return path

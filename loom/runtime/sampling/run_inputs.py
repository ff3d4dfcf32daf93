"""What both sampling loops do with a run's inputs before the first step."""

from __future__ import annotations

from typing import Any

import torch

from loom.runtime.sampling.hooks import InpaintConcatHook, NoiseMaskHook, SamplingHooks, prepare_mask
from loom.runtime.sd.detect import latent_space


def check_latent_family(latent: dict, model: Any) -> None:
    """Refuse a latent made in another model family's latent space (e.g. an SDXL VAE's latent
    sampled by an SD 1.x model): the result would be noise."""
    made_by = latent.get("family")
    if made_by and model.family and latent_space(made_by) != latent_space(model.family):
        raise ValueError(
            f"This latent comes from an {made_by} model or VAE, but the model is {model.family}: "
            "their latent spaces differ. Encode the image with the VAE of this model's family.")


def default_model_manager():
    """The model manager used when a node runs without one (unit tests, scripts): the SD
    runtime's process-wide default, so loaders and samplers share it."""
    from loom.runtime.sd.common import default_manager

    return default_manager()


def latent_hooks(latent: dict, unet: Any, image: torch.Tensor, hooks: list,
                 device: torch.device, *, guider: Any = None, scale: float = 1.0) -> list:
    """``hooks`` plus what the LATENT and the UNet ask for: a NoiseMaskHook for a
    ``noise_mask``; the mask and masked-image channels for an inpainting (9-channel) UNet, taken
    from the conditioning when InpaintModelConditioning put them there (``concat_latent_image``,
    ``concat_mask``), else from the LATENT itself (VAEEncodeForInpaint's greyed-out encoding)."""
    batch, _, height, width = image.shape
    mask = None
    if latent.get("noise_mask") is not None:
        mask = prepare_mask(latent["noise_mask"], batch, height, width, device)
        hooks = [*hooks, NoiseMaskHook(mask)]
    concat_given = any(type(h).extra_channels is not SamplingHooks.extra_channels for h in hooks)
    if unet.config.in_channels == image.shape[1] + 5 and not concat_given:  # an inpainting UNet
        entry = _inpaint_entry(guider)
        if entry is not None:
            masked = entry["concat_latent_image"].to(device=device, dtype=torch.float32) * scale
            if masked.shape[-2:] != (height, width):
                raise ValueError(f"the inpainting conditioning's image latent is "
                                 f"{tuple(masked.shape[-2:])}, the sampled latent {(height, width)}: "
                                 "encode the same image size")
            masked = masked.repeat(batch // masked.shape[0], 1, 1, 1) if masked.shape[0] != batch else masked
            cmask = entry.get("concat_mask")
            cmask = (prepare_mask(cmask, batch, height, width, device) if cmask is not None
                     else torch.ones_like(image[:, :1]))
            hooks = [*hooks, InpaintConcatHook(cmask, masked)]
        else:
            hooks = [*hooks, InpaintConcatHook(mask if mask is not None
                                               else torch.ones_like(image[:, :1]), image)]
    return hooks


def _inpaint_entry(guider: Any) -> dict | None:
    """The first CONDITIONING entry (of any side) that carries an inpainting image latent."""
    for _, conditioning in getattr(guider, "sides", ()) or ():
        for item in conditioning:
            entry = item[1] if len(item) > 1 else None
            if isinstance(entry, dict) and entry.get("concat_latent_image") is not None:
                return entry
    return None

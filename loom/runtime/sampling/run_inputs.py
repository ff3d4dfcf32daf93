"""What both sampling loops do with a run's inputs before the first step."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import torch

from loom.runtime.sampling.hooks import (
    InpaintConcatHook,
    NoiseMaskHook,
    SamplingHooks,
    controls_of,
    models_of,
    prepare_mask,
)
from loom.runtime.sampling.model_sampling import model_sampling
from loom.runtime.sampling.prediction import GuidedPrediction, timestep_range
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


def load_for_run(models: Any, model: Any, guider: Any,
                 hooks: list) -> tuple[list, list, AbstractContextManager]:
    """``(hooks, controls, loading)`` for a run of ``model``: the model's own sampling hooks
    before ``hooks``, the guider's ControlNets, and the context that loads the UNet with
    everything those run together, so nothing is loaded (or evicts another) mid-run."""
    hooks = [*model.options.get("sampling_hooks", ()), *hooks]
    controls = controls_of(cond for _, cond in guider.sides)
    return hooks, controls, models.use((model.unet, model.patches), *models_of([*hooks, *controls]))


def guided_prediction(latent: dict, model: Any, image: torch.Tensor, hooks: list, device,
                      guider: Any, state: Any) -> tuple[list, GuidedPrediction]:
    """``(hooks, predict)``: ``hooks`` plus those the LATENT and UNet ask for (latent_hooks),
    and the guided UNet prediction over them, tied to the run's sampling ``state``."""
    scale = float(model.latent_scaling_factor)
    hooks = latent_hooks(latent, model.unet, image, hooks, device, guider=guider, scale=scale)
    batch, _, height, width = image.shape
    predict = GuidedPrediction(guider, batch=batch, height=height, width=width, device=device,
                               dtype=next(model.unet.parameters()).dtype, unet=model.unet,
                               hooks=hooks, sigma_range=timestep_range(model_sampling(model)))
    predict.state = state
    return hooks, predict


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

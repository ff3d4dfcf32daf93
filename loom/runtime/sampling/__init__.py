"""Sampling: Loom's denoising loop over diffusers schedulers (KSampler's engine).

- :mod:`.schedulers` — ComfyUI sampler/scheduler names mapped onto diffusers schedulers
- :mod:`.noise` — seeded CPU noise with ComfyUI's batch semantics
- :mod:`.conditioning` — CONDITIONING lists as batched UNet calls (CFG, combine, areas, SDXL)
- :mod:`.hooks` — extension points (ControlNet residuals, noise masks)
- :mod:`.loop` — :func:`sample`
- :mod:`.resize` — latent and image resizing for the upscale nodes
"""

from loom.runtime.sampling.hooks import (
    InpaintConcatHook,
    NoiseMaskHook,
    SamplingHooks,
    SamplingState,
    UNetCall,
)
from loom.runtime.sampling.loop import default_model_manager, sample, schedule_window
from loom.runtime.sampling.schedulers import (
    SAMPLER_NAMES,
    SCHEDULER_NAMES,
    make_scheduler,
    supported_schedulers,
    unsupported_reason,
)

__all__ = [
    "SAMPLER_NAMES", "SCHEDULER_NAMES", "InpaintConcatHook", "NoiseMaskHook", "SamplingHooks",
    "SamplingState", "UNetCall", "default_model_manager", "make_scheduler", "sample", "schedule_window",
    "supported_schedulers", "unsupported_reason",
]

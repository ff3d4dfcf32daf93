"""Sampling: Loom's denoising loops (KSampler's and the custom-sampling nodes' engine).

- :mod:`.catalog` — the sampler/scheduler names offered, and which loop runs a pair
- :mod:`.schedulers` — ComfyUI sampler/scheduler names mapped onto diffusers schedulers
- :mod:`.sigmas` — SIGMAS: noise-level schedules by name and in closed form
- :mod:`.model_sampling` — a model in sigma space: its levels, timestep, input and output
- :mod:`.solvers` — Loom's own sigma-space solvers (k-diffusion style, from the papers)
- :mod:`.noise` — seeded CPU noise with ComfyUI's batch semantics; NOISE values
- :mod:`.guidance` — GUIDER values: CFG, basic, dual CFG
- :mod:`.conditioning` — CONDITIONING lists as batched UNet calls (combine, areas, SDXL)
- :mod:`.prediction` — one guided model prediction (shared by both loops; timestep ranges)
- :mod:`.hooks` — extension points (ControlNet residuals, noise masks)
- :mod:`.loop` — :func:`sample` (KSampler): the diffusers loop, or the sigma loop
- :mod:`.sigma_loop` — :func:`sample_sigmas` (SamplerCustom)
- :mod:`.resize` — latent and image resizing for the upscale nodes
"""

from loom.runtime.sampling.catalog import (
    SAMPLER_NAMES,
    SCHEDULER_NAMES,
    SOLVER_NAMES,
    supported_schedulers,
    unsupported_reason,
)
from loom.runtime.sampling.guidance import CFG, DUAL_CFG_STYLES, Basic, DualCFG, Guider
from loom.runtime.sampling.hooks import (
    InpaintConcatHook,
    NoiseMaskHook,
    SamplingHooks,
    SamplingState,
    UNetCall,
)
from loom.runtime.sampling.loop import default_model_manager, sample, schedule_window
from loom.runtime.sampling.noise import Noise
from loom.runtime.sampling.schedulers import make_scheduler
from loom.runtime.sampling.sigma_loop import SamplingRequest, sample_sigmas

__all__ = [
    "CFG", "DUAL_CFG_STYLES", "SAMPLER_NAMES", "SCHEDULER_NAMES", "SOLVER_NAMES", "Basic",
    "DualCFG", "Guider", "InpaintConcatHook", "Noise", "NoiseMaskHook", "SamplingHooks",
    "SamplingRequest", "SamplingState", "UNetCall", "default_model_manager", "make_scheduler",
    "sample", "sample_sigmas", "schedule_window", "supported_schedulers", "unsupported_reason",
]

"""ComfyUI's sampler and scheduler names, mapped onto diffusers schedulers.

A ComfyUI *sampler* (``euler``, ``dpmpp_2m``, …) is an ODE/SDE solver; a ComfyUI *scheduler*
(``normal``, ``karras``, …) is how the noise levels of the steps are spaced. diffusers folds both
into one scheduler class plus options, so a (sampler, scheduler) pair becomes
``SchedulerClass.from_config(model config + sampler options + schedule options)``.

Only solvers a diffusers scheduler really implements are offered. Which schedules a solver
supports is read from the scheduler class's own ``__init__`` (``use_karras_sigmas``,
``timestep_spacing``, …), so the table cannot drift from the installed diffusers. Solvers that need
an optional package (``lms`` and ``beta`` need scipy, ``dpmpp_sde`` needs torchsde) are offered only
when it imports.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import inspect
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

# Filled in where the model's scheduler config leaves them out: Stable Diffusion's training
# schedule, and two options every SD scheduler config sets (DDIM's class defaults would clip x0
# to [-1, 1], which is wrong for latents). Inference choices such as ``timestep_spacing`` and
# ``steps_offset`` are left to the scheduler class's defaults, as a diffusers pipeline does.
DEFAULT_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
}


@dataclass(frozen=True)
class SamplerSpec:
    """How one ComfyUI sampler name maps onto a diffusers scheduler class."""

    name: str
    class_name: str
    kwargs: dict = field(default_factory=dict)
    # "ve": the scheduler's sample is x0 + sigma * eps (k-diffusion style, init_noise_sigma > 1);
    # "vp": it is alpha * x0 + sigma_t * eps with alpha = 1 / sqrt(1 + sigma^2) (DDIM style).
    space: str = "ve"
    requires: tuple[str, ...] = ()  # importable modules the scheduler needs

    @property
    def available(self) -> bool:
        return all(_importable(m) for m in self.requires)

    def scheduler_class(self) -> type:
        return _scheduler_classes()[self.class_name]


_SPECS = [
    SamplerSpec("euler", "EulerDiscreteScheduler"),
    SamplerSpec("euler_ancestral", "EulerAncestralDiscreteScheduler"),
    SamplerSpec("heun", "HeunDiscreteScheduler"),
    SamplerSpec("dpm_2", "KDPM2DiscreteScheduler"),
    SamplerSpec("dpm_2_ancestral", "KDPM2AncestralDiscreteScheduler"),
    SamplerSpec("lms", "LMSDiscreteScheduler", requires=("scipy",)),
    SamplerSpec("dpmpp_sde", "DPMSolverSDEScheduler", requires=("torchsde",)),
    SamplerSpec("dpmpp_sde_gpu", "DPMSolverSDEScheduler", requires=("torchsde",)),
    SamplerSpec("dpmpp_2m", "DPMSolverMultistepScheduler",
                {"algorithm_type": "dpmsolver++", "solver_order": 2}, space="vp"),
    SamplerSpec("dpmpp_2m_sde", "DPMSolverMultistepScheduler",
                {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}, space="vp"),
    # ComfyUI's *_gpu variants differ only in where their Brownian noise lives; diffusers'
    # SDE solver draws plain Gaussian noise from our CPU generator, so they are the same here.
    SamplerSpec("dpmpp_2m_sde_gpu", "DPMSolverMultistepScheduler",
                {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}, space="vp"),
    SamplerSpec("dpmpp_3m_sde", "DPMSolverMultistepScheduler",
                {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}, space="vp"),
    SamplerSpec("dpmpp_3m_sde_gpu", "DPMSolverMultistepScheduler",
                {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}, space="vp"),
    SamplerSpec("ddpm", "DDPMScheduler", space="vp"),
    SamplerSpec("lcm", "LCMScheduler", space="vp"),
    SamplerSpec("deis", "DEISMultistepScheduler", space="vp"),
    SamplerSpec("ddim", "DDIMScheduler", {"eta": 0.0}, space="vp"),
    # diffusers' bh1 variant divides by h at the last step, which is infinite when the schedule
    # ends at sigma 0 (NaN images); it works when the schedule ends at sigma_min instead.
    SamplerSpec("uni_pc", "UniPCMultistepScheduler",
                {"solver_type": "bh1", "final_sigmas_type": "sigma_min"}, space="vp"),
    SamplerSpec("uni_pc_bh2", "UniPCMultistepScheduler", {"solver_type": "bh2"}, space="vp"),
]

# ComfyUI scheduler name -> scheduler options. "normal" keeps the model's own config (what a
# diffusers pipeline does by default). sgm_uniform and simple both start at the last training
# timestep and step uniformly ("trailing"), ddim_uniform is DDIM's original "leading" spacing.
SCHEDULE_OPTIONS: dict[str, dict[str, Any]] = {
    "normal": {},
    "karras": {"use_karras_sigmas": True},
    "exponential": {"use_exponential_sigmas": True},
    "sgm_uniform": {"timestep_spacing": "trailing"},
    "simple": {"timestep_spacing": "trailing"},
    "ddim_uniform": {"timestep_spacing": "leading", "steps_offset": 1},
    "beta": {"use_beta_sigmas": True},
}
_SCHEDULE_REQUIRES = {"beta": ("scipy",)}

# Options that are step() arguments rather than constructor arguments.
_STEP_KWARGS = ("eta",)


_import_lock = threading.Lock()


@functools.cache
def _scheduler_classes() -> dict[str, type]:
    """The diffusers scheduler classes, imported once. diffusers imports its attributes lazily,
    and two threads doing that first lookup at once can get "module 'diffusers' has no
    attribute ..."; the lock makes the first lookup one thread's, the cache the rest free."""
    with _import_lock:
        import diffusers

        return {s.class_name: getattr(diffusers, s.class_name) for s in _SPECS if s.available}


def preload() -> None:
    """Import diffusers' schedulers now (at start-up, off the event loop), not on a request."""
    _scheduler_classes()


@functools.cache
def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def sampler_specs() -> dict[str, SamplerSpec]:
    """The samplers this installation can run, by ComfyUI name, in ComfyUI's menu order."""
    return {s.name: s for s in _SPECS if s.available}


SAMPLER_NAMES: list[str] = list(sampler_specs())
SCHEDULER_NAMES: list[str] = [n for n in SCHEDULE_OPTIONS
                              if all(_importable(m) for m in _SCHEDULE_REQUIRES.get(n, ()))]


@functools.cache
def _init_params(cls: type) -> frozenset[str]:
    return frozenset(inspect.signature(cls.__init__).parameters) - {"self"}


def unsupported_reason(sampler_name: str, scheduler_name: str) -> str | None:
    """Why a (sampler, scheduler) pair cannot run, or None when it can."""
    specs = sampler_specs()
    if sampler_name not in specs:
        return (f"sampler {sampler_name!r} is not available (choices: "
                f"{', '.join(specs)})")
    if scheduler_name not in SCHEDULER_NAMES:
        return (f"scheduler {scheduler_name!r} is not available (choices: "
                f"{', '.join(SCHEDULER_NAMES)})")
    params = _init_params(specs[sampler_name].scheduler_class())
    missing = [k for k in SCHEDULE_OPTIONS[scheduler_name] if k not in params]
    if missing:
        ok = [n for n in SCHEDULER_NAMES if all(k in params for k in SCHEDULE_OPTIONS[n])]
        return (f"sampler {sampler_name!r} does not support the {scheduler_name!r} scheduler; "
                f"it works with: {', '.join(ok)}")
    return None


def supported_schedulers(sampler_name: str) -> list[str]:
    return [n for n in SCHEDULER_NAMES if unsupported_reason(sampler_name, n) is None]


def make_scheduler(scheduler_config: dict, prediction_type: str, sampler_name: str,
                   scheduler_name: str, seed: int | None = None) -> tuple[Any, SamplerSpec, dict]:
    """A fresh diffusers scheduler for one sampling run.

    Returns ``(scheduler, spec, step_kwargs)``; ``step_kwargs`` go to every ``scheduler.step``.
    Raises ``ValueError`` with a readable message for an unknown or unsupported pair.
    """
    reason = unsupported_reason(sampler_name, scheduler_name)
    if reason:
        raise ValueError(reason)
    spec = sampler_specs()[sampler_name]
    cls = spec.scheduler_class()
    params = _init_params(cls)
    config = dict(scheduler_config or {})
    # Values a diffusers config only holds because they were its class's defaults are not the
    # model's: diffusers' from_config drops them too, so e.g. a PNDM config's "leading" spacing
    # does not leak into Euler.
    for key in config.pop("_use_default_values", None) or ():
        config.pop(key, None)
    config = {**DEFAULT_SCHEDULER_CONFIG, **config}
    options = {k: v for k, v in spec.kwargs.items() if k not in _STEP_KWARGS}
    step_kwargs = {k: v for k, v in spec.kwargs.items() if k in _STEP_KWARGS}
    merged = {**config, **options, **SCHEDULE_OPTIONS[scheduler_name],
              "prediction_type": prediction_type}
    # Keep only what this class takes: from_config would warn about the rest (e.g. a PNDM config's
    # skip_prk_steps handed to Euler).
    merged = {k: v for k, v in merged.items() if k in params}
    if "noise_sampler_seed" in params and seed is not None:
        # SDE samplers draw their Brownian noise from this seed; unset, it comes from the
        # global RNG and the same seed would not give the same image.
        merged["noise_sampler_seed"] = seed
    return _fresh_scheduler(cls, merged), spec, step_kwargs


# diffusers' scheduler constructors compute their whole training schedule (the DPM-2 ones map
# 1,000 sigmas one by one: 100-170 ms on a CPU, bench/bench_schedulers.py). One scheduler is
# built per class and configuration; each run gets a deep copy of it, which is what a fresh
# construction would have been.
_PROTOTYPES: OrderedDict[tuple, Any] = OrderedDict()
_PROTOTYPES_MAX = 64
_prototypes_lock = threading.Lock()


def _fresh_scheduler(cls: type, config: dict) -> Any:
    key = (cls, json.dumps(config, sort_keys=True, default=repr))
    with _prototypes_lock:
        prototype = _PROTOTYPES.get(key)
        if prototype is not None:
            _PROTOTYPES.move_to_end(key)
    if prototype is None:
        prototype = cls.from_config(config)
        with _prototypes_lock:
            _PROTOTYPES[key] = prototype
            while len(_PROTOTYPES) > _PROTOTYPES_MAX:
                _PROTOTYPES.popitem(last=False)
    return copy.deepcopy(prototype)

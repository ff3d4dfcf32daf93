"""Noise levels in sigma space: ComfyUI's SIGMAS values, schedules by name and in closed form.

A ``SIGMAS`` value is a 1-D float32 CPU tensor of noise levels, highest first, usually ending
at 0; a sample at level ``sigma`` is ``x0 + sigma * eps`` (the latent scaled by the VAE factor).
The custom-sampling nodes build and cut them; Loom's sigma-space samplers
(:mod:`.solvers`) run on them.

Schedules by name (what BasicScheduler and KSampler's ``scheduler`` offer):

* the names KSampler already had (``normal``, ``karras``, …) are spaced exactly as diffusers'
  Euler scheduler spaces them for this model, so a custom-sampling graph equals the KSampler one;
* ``kl_optimal``: Sabour et al. 2024 ("Align Your Steps"), the KL-optimal schedule
  ``sigma(u) = tan((1 - u) * atan(sigma_max) + u * atan(sigma_min))`` for ``u`` evenly in [0, 1],
  then 0;
* ``linear_quadratic`` (Genmo's Mochi schedule): the noise fraction falls linearly over the first
  half of the steps by ``threshold`` (0.025), then along the quadratic that continues it with
  the same slope and reaches 0 at the last step; levels are that fraction of ``sigma_max``. Made
  for flow-matching models, where sigma_max is 1.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from loom.runtime.sampling.model_sampling import model_sampling
from loom.runtime.sampling.schedulers import SCHEDULE_OPTIONS, make_scheduler

# Schedules defined here in closed form (not by a diffusers scheduler option).
CLOSED_FORM_SCHEDULES = ("linear_quadratic", "kl_optimal")
LINEAR_QUADRATIC_THRESHOLD = 0.025


def schedule_names() -> list[str]:
    from loom.runtime.sampling.schedulers import SCHEDULER_NAMES

    return [*SCHEDULER_NAMES, *CLOSED_FORM_SCHEDULES]


def schedule_sigmas(model, name: str, steps: int) -> torch.Tensor:
    """``steps + 1`` noise levels (the last 0) of schedule ``name`` for ``model``."""
    if steps < 1:
        raise ValueError("steps must be at least 1")
    ms = model_sampling(model)
    if name == "kl_optimal":
        return kl_optimal_sigmas(steps, ms.sigma_min, ms.sigma_max)
    if name == "linear_quadratic":
        return linear_quadratic_sigmas(steps, ms.sigma_max)
    if name not in SCHEDULE_OPTIONS:
        raise ValueError(f"unknown scheduler {name!r} (choices: {', '.join(schedule_names())})")
    sched, _, _ = make_scheduler(model.scheduler_config, model.prediction_type, "euler", name)
    sched.set_timesteps(steps)
    return sched.sigmas.to("cpu", torch.float32).clone()


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. 2022, eq. (5): evenly spaced in ``sigma ** (1 / rho)``, then 0."""
    ramp = np.linspace(0.0, 1.0, steps)
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    return _with_zero((hi + ramp * (lo - hi)) ** rho)


def exponential_sigmas(steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Evenly spaced in log sigma, then 0."""
    return _with_zero(np.exp(np.linspace(math.log(sigma_max), math.log(sigma_min), steps)))


def kl_optimal_sigmas(steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    u = np.linspace(0.0, 1.0, steps) if steps > 1 else np.zeros(1)
    return _with_zero(np.tan((1 - u) * math.atan(sigma_max) + u * math.atan(sigma_min)))


def linear_quadratic_sigmas(steps: int, sigma_max: float,
                            threshold: float = LINEAR_QUADRATIC_THRESHOLD,
                            linear_steps: int | None = None) -> torch.Tensor:
    if steps == 1:
        return torch.tensor([sigma_max, 0.0], dtype=torch.float32)
    n = steps
    lin = n // 2 if linear_steps is None else linear_steps
    quad = n - lin
    # u(i) = threshold * i / lin for i < lin; u(i) = a i^2 + b i + c for lin <= i <= n, with
    # u(lin) = threshold, u'(lin) = threshold / lin (joins smoothly) and u(n) = 1.
    a = (lin - threshold * n) / (lin * quad**2)
    b = threshold / lin - 2 * a * lin
    c = threshold - a * lin**2 - b * lin
    i = np.arange(n + 1, dtype=np.float64)
    u = np.where(i < lin, threshold * i / max(lin, 1), a * i**2 + b * i + c)
    u[-1] = 1.0
    return torch.from_numpy((1.0 - u) * sigma_max).to(torch.float32)


def sd_turbo_sigmas(model, steps: int, denoise: float) -> torch.Tensor:
    """SD-Turbo's schedule: the levels at training timesteps 999, 899, …, 99 (every 100th from
    the top), starting ``10 - int(10 * denoise)`` entries in, ``steps`` of them, then 0."""
    ms = model_sampling(model)
    n_train = len(ms.sigmas)
    stride = n_train // 10
    timesteps = [n_train - 1 - stride * k for k in range(10)]
    start = 10 - int(10 * denoise)
    chosen = timesteps[start:start + steps]
    return _with_zero(np.array([ms.sigmas[t] for t in chosen], dtype=np.float64))


def window(sigmas: torch.Tensor, start: int, end: int, total: int,
           force_full_denoise: bool) -> torch.Tensor:
    """Steps ``start..end-1`` of a ``total``-step schedule (KSamplerAdvanced): stopping early
    keeps the leftover noise level, or ends at 0 with ``force_full_denoise``."""
    cut = sigmas[start:end + 1].clone()
    if end < total and force_full_denoise and len(cut):
        cut[-1] = 0.0
    return cut


def _with_zero(values: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.append(np.asarray(values, dtype=np.float64), 0.0)).to(torch.float32)

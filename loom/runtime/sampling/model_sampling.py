"""How a model is sampled in sigma space: its noise levels and what its input and output mean.

The sigma loop and its solvers only know noise levels ``sigma`` and samples in the
``x0 + sigma * eps`` form; this object translates for one kind of model:

* ``timestep(sigma)`` — what the network is given as its time input;
* ``model_input(x, sigma)`` — the sample scaled to what the network was trained on;
* ``clean(x, output, sigma)`` — the network's output turned into the clean-image estimate;
* ``percent_to_sigma`` — ComfyUI's "fraction of the schedule" for timestep ranges.

:class:`DiscreteVP` is the discrete-time, variance-preserving kind (Stable Diffusion 1.x/2.x,
SDXL: eps or v prediction over 1000 training timesteps). Flow-matching models (x = (1 - s) x0 +
s eps) would add a class with the same methods; the loop and the solvers stay as they are.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True, eq=False)
class DiscreteVP:
    """A discrete-time model's noise levels, ``sigmas[t]`` for each training timestep ``t``."""

    sigmas: np.ndarray  # float64, increasing with t
    prediction_type: str = "epsilon"  # "epsilon" | "v_prediction" | "sample"

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    @functools.cached_property
    def log_sigmas(self) -> np.ndarray:
        return np.log(self.sigmas)

    def timestep(self, sigma: float) -> float:
        """The (fractional) training timestep of ``sigma``: linear interpolation in log sigma, as
        diffusers' schedulers convert their Karras/exponential levels (and ComfyUI does)."""
        log_sigmas = self.log_sigmas
        log_sigma = math.log(max(float(sigma), 1e-10))
        low = int(np.clip(np.searchsorted(log_sigmas, log_sigma, side="right") - 1, 0,
                          len(log_sigmas) - 2))
        w = (log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[low + 1])
        w = min(max(w, 0.0), 1.0)
        return (1 - w) * low + w * (low + 1)

    def sigma_at(self, t: float) -> float:
        """Sigma at a fractional training timestep (log-linear between integer steps)."""
        t = min(max(float(t), 0.0), len(self.sigmas) - 1.0)
        low = min(int(math.floor(t)), len(self.sigmas) - 2)
        w = t - low
        return float(math.exp((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[low + 1]))

    def percent_to_sigma(self, percent: float) -> float:
        """ComfyUI's "percent of the schedule" (0 = pure noise .. 1 = clean) as a noise level:
        0 and below is above any level, 1 and above is 0."""
        if percent <= 0.0:
            return math.inf
        if percent >= 1.0:
            return 0.0
        return self.sigma_at((1.0 - percent) * (len(self.sigmas) - 1))

    def pure_noise_scale(self, sigma: torch.Tensor) -> torch.Tensor:
        """How much unit noise an empty latent starts with at level ``sigma``:
        ``sqrt(1 + sigma^2)``, the spread of a unit-variance latent noised to ``sigma`` — except
        at the model's highest level, where it is ``sigma`` (0.2% less at SD's 14.6). This is
        exactly what diffusers' Euler scheduler starts from for every spacing (``linspace`` and
        ``trailing`` start at the top, ``leading`` below it), so KSampler and SamplerCustom
        agree."""
        if float(sigma) >= self.sigma_max * (1 - 1e-6):
            return sigma
        return (sigma**2 + 1) ** 0.5

    def model_input(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """``x / sqrt(sigma^2 + 1)``: the variance-preserving sample the UNet was trained on."""
        return x / ((sigma**2 + 1) ** 0.5)

    def clean(self, x: torch.Tensor, output: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The clean-image estimate from the UNet's ``output`` at ``sigma``."""
        if self.prediction_type == "sample":
            return output
        if self.prediction_type == "v_prediction":
            return output * (-sigma / (sigma**2 + 1) ** 0.5) + x / (sigma**2 + 1)
        return x - sigma * output


def model_sampling(model) -> DiscreteVP:
    """The sampling parametrisation of a ``DiffusionModel`` (from its scheduler config)."""
    config = model.scheduler_config or {}
    key = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in config.items()))
    return _discrete_vp(key, model.prediction_type)


@functools.lru_cache(maxsize=16)
def _discrete_vp(config_key: tuple, prediction_type: str) -> DiscreteVP:
    from loom.runtime.sampling.schedulers import make_scheduler

    config = {k: list(v) if isinstance(v, tuple) else v for k, v in config_key}
    # The training noise levels, from the alphas diffusers derives from the config's betas.
    sched, _, _ = make_scheduler(config, prediction_type, "euler", "normal")
    ac = sched.alphas_cumprod.to(torch.float64).numpy()
    return DiscreteVP(((1 - ac) / ac) ** 0.5, prediction_type)

"""The sigma loop: Loom's own solvers on explicit noise levels (SIGMAS).

This is the engine of the custom-sampling nodes (SamplerCustom, SamplerCustomAdvanced) and of
KSampler for solvers and schedules diffusers lacks. The model is wrapped as a denoiser
``D(x, sigma)`` (Karras et al. 2022's preconditioning for a discrete-time model):

    model_in = x / sqrt(sigma^2 + 1)          # what the UNet was trained on
    t        = the training timestep of sigma (log-linear interpolation)
    D        = x - sigma * eps                # or from v / x0 predictions

with the guider's mix of the conditionings' outputs (:mod:`.prediction`); the model-specific
parts live in :mod:`.model_sampling`. Latents are in the ``x0 + sigma * eps`` form throughout,
as LATENT values hand them over.

A run with noise starts from ``latent + sigma_0 * noise``; from an empty latent (txt2img) the
noise is scaled by ``DiscreteVP.pure_noise_scale`` instead — diffusers' Euler convention, so
KSampler and SamplerCustom agree. (ComfyUI scales pure noise by ``sqrt(1 + sigma_0^2)`` only at
the model's highest level, where the two differ by 0.2%.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from loom.runtime.sampling.guidance import Guider
from loom.runtime.sampling.hooks import SamplingHooks, SamplingState, hook_session
from loom.runtime.sampling.model_sampling import model_sampling
from loom.runtime.sampling.noise import Noise
from loom.runtime.sampling.preview import latent_to_rgb
from loom.runtime.sampling.run_inputs import (
    check_latent_family,
    default_model_manager,
    guided_prediction,
    load_for_run,
)
from loom.runtime.sampling.solvers import SOLVERS, Solver, SolverRun


@dataclass
class SamplingRequest:
    """One run of the sigma loop."""

    guider: Guider
    latent: dict  # LATENT
    solver: str | Solver  # a SAMPLER, or the name of one in solvers.SOLVERS
    sigmas: torch.Tensor  # SIGMAS
    noise: Noise
    # callback(done, total[, preview]) after each step; raising from it stops the run
    callback: Callable[..., Any] | None = None
    hooks: Sequence[SamplingHooks] = ()
    previews: bool = False


def sample_sigmas(req: SamplingRequest, models: Any = None) -> tuple[dict, dict]:
    """Run ``req``; returns ``(output, denoised_output)`` LATENTs: the final sample, and the
    model's clean estimate at the last step (the input when no step runs)."""
    model = req.guider.model
    check_latent_family(req.latent, model)
    solver = SOLVERS.get(req.solver) if isinstance(req.solver, str) else req.solver
    if not isinstance(solver, Solver):
        raise ValueError(f"sampler {req.solver!r} is not available here (choices: "
                         f"{', '.join(SOLVERS)})")
    sigmas = torch.as_tensor(req.sigmas).detach().to("cpu", torch.float32).flatten()
    if not torch.isfinite(sigmas).all() or (sigmas < 0).any():
        raise ValueError("sigmas must be finite and not negative")
    if (sigmas[1:] > sigmas[:-1]).any():
        raise ValueError("sigmas must not increase: a schedule goes from the highest noise level "
                         "down")
    # A step from a level to the same level does nothing; multistep solvers would divide by 0.
    sigmas = torch.unique_consecutive(sigmas)
    out = dict(req.latent)
    if model.family:
        out["family"] = model.family
    if len(sigmas) < 2:
        return out, dict(out)
    models = models if models is not None else default_model_manager()
    hooks, controls, loading = load_for_run(models, model, req.guider, list(req.hooks))
    with loading:
        x, denoised = _run(req, solver, model, sigmas, hooks, controls, models.device)
    denoised_out = dict(out)
    out["samples"], denoised_out["samples"] = x, denoised
    return out, denoised_out


class _Run(SolverRun):
    def __init__(self, predict, ms, generator, seed, sigmas, callback, step_hooks, state,
                 preview_family):
        self.predict, self.seed = predict, seed
        self.ms, self.generator, self.n = ms, generator, len(sigmas) - 1
        self.callback, self.step_hooks, self.state = callback, step_hooks, state
        self.preview_family = preview_family
        self.uncond_index = predict.uncond_index()
        self.last_denoised = None

    def denoise(self, x, sigma, step):
        s = float(sigma)
        t = torch.tensor(self.ms.timestep(s), dtype=torch.float32, device=x.device)
        pred, sides = self.predict(self.ms.model_input(x, sigma), t, s, step, step / self.n,
                                   (step + 1) / self.n)
        if self.uncond_index is not None:
            self.uncond = self.ms.clean(x, sides[self.uncond_index], sigma)
        else:
            self.uncond = None
        return self.ms.clean(x, pred, sigma)

    def noise(self, like):
        return torch.randn(like.shape, generator=self.generator,
                           dtype=torch.float32).to(like.device)

    def brownian(self, like, sigma_min, sigma_max):
        from diffusers.schedulers.scheduling_dpmsolver_sde import BrownianTreeNoiseSampler

        return BrownianTreeNoiseSampler(like, sigma_min, sigma_max, self.seed)

    def done(self, step, x, denoised):
        self.last_denoised = denoised
        if step < self.n - 1:
            for h in self.step_hooks:
                x = h.after_step(step, step + 1, x, self.state)
        if self.callback is not None:
            if self.preview_family is not None:
                preview = latent_to_rgb(denoised[0], self.preview_family)
                if preview is not None:
                    self.callback(step + 1, self.n, preview)
                    return x
            self.callback(step + 1, self.n)
        return x


def _run(req: SamplingRequest, solver: Solver, model, sigmas, hooks, controls,
         device) -> tuple[torch.Tensor, torch.Tensor]:
    scale = float(model.latent_scaling_factor)
    ms = model_sampling(model)
    image = req.latent["samples"].to(device=device, dtype=torch.float32) * scale
    generator = req.noise.generator()
    noise = req.noise.initial(image.shape, generator, req.latent.get("batch_index")).to(device)
    levels = sigmas.tolist()
    timesteps = torch.tensor([ms.timestep(s) for s in levels[:-1]], dtype=torch.float32)
    state = SamplingState(scheduler=None, timesteps=timesteps, levels=levels, noise=noise,
                          latent_image=image, space="ve", device=device, model=model)
    hooks, predict = guided_prediction(req.latent, model, image, hooks, device, req.guider, state)
    step_hooks = [h for h in hooks if type(h).after_step is not SamplingHooks.after_step]
    run = _Run(predict, ms, generator, req.noise.seed, sigmas, req.callback, step_hooks, state,
               model.family if req.previews else None)

    if not req.noise.enabled:
        x = image
    elif not image.any():  # txt2img: pure noise at the first level
        x = noise * ms.pure_noise_scale(sigmas[0])
    else:
        x = image + noise * sigmas[0]
    with hook_session([*hooks, *controls], state):
        x = solver(run, x, sigmas)
        end_sigma = levels[-1]
        for h in hooks:
            x = h.on_end(x, state, end_sigma)
        denoised = run.last_denoised if run.last_denoised is not None else image
        for h in hooks:
            denoised = h.on_end(denoised, state, 0.0)
    return (x / scale).to("cpu", torch.float32), (denoised / scale).to("cpu", torch.float32)

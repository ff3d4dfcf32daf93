"""Loom's sampling loop over diffusers schedulers.

``sample`` takes ComfyUI-shaped values (MODEL, CONDITIONING, LATENT) and KSampler's settings and
returns a LATENT. The loop does what a diffusers Stable Diffusion pipeline does per step, in the
same order and with the same arithmetic, so results match the pipeline to float precision:

    x_in = scheduler.scale_model_input(cat([x] * n), t)
    out  = unet(x_in, t, encoder_hidden_states=[negative rows, positive rows], added_cond_kwargs)
    eps  = out_neg + cfg * (out_pos - out_neg)       # the negative pass is skipped at cfg == 1
    x    = scheduler.step(eps, t, x, generator=<the seed's CPU generator>).prev_sample

Steps, denoise and start/end follow ComfyUI:

* ``denoise < 1`` (img2img): a schedule of ``int(steps / denoise)`` steps is built and its last
  ``steps`` are run, after noising the input latent to the first of them (``scheduler.add_noise``).
  This is diffusers' img2img with ``num_inference_steps=int(steps / denoise)`` and
  ``strength=denoise`` (when ``int(that * strength) == steps``), except that the user's step count
  is what runs, as in ComfyUI.
* ``start_step``/``end_step`` (KSamplerAdvanced) cut a ``steps``-step schedule. Ending early with
  ``force_full_denoise`` returns the model's clean prediction at the last step run (the solver
  "stepping to sigma 0"); without it, the latent keeps its leftover noise.

LATENT values always hold latents in the x0 + sigma * eps form, divided by the VAE scaling factor
(ComfyUI's convention), whatever the solver's internal form: a DDIM-style ("vp") solver's sample
alpha * (x0 + sigma * eps) is converted on the way in and out. So a KSamplerAdvanced chain can hand
a half-denoised latent from one sampler to another.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from loom.runtime.sampling.catalog import unsupported_reason, uses_diffusers
from loom.runtime.sampling.guidance import CFG
from loom.runtime.sampling.hooks import SamplingHooks, SamplingState, hook_session
from loom.runtime.sampling.noise import Noise, initial_noise, seeded_generator
from loom.runtime.sampling.preview import latent_to_rgb
from loom.runtime.sampling.run_inputs import (
    check_latent_family,
    default_model_manager,
    guided_prediction,
    load_for_run,
)
from loom.runtime.sampling.schedulers import make_scheduler
from loom.runtime.sampling.sigma_loop import SamplingRequest, sample_sigmas
from loom.runtime.sampling.sigmas import schedule_sigmas, window

ProgressCallback = Callable[[int, int], Any]
__all__ = ["check_latent_family", "default_model_manager", "sample", "schedule_window"]


def schedule_window(steps: int, denoise: float, start_step: int | None, end_step: int | None,
                    max_total: int | None = None) -> tuple[int, int, int]:
    """``(total, start, end)``: build a ``total``-step schedule and run steps ``start..end-1``.

    With ``denoise < 1`` the schedule has ``int(steps / denoise)`` steps, at most ``max_total``
    (the model's training timesteps: diffusers schedulers cannot space more); when capped, the
    run keeps the ``denoise`` fraction of the capped schedule, so fewer steps run.
    """
    if steps < 1:
        raise ValueError("steps must be at least 1")
    total = steps
    if 0 < denoise < 1.0:
        total = max(steps, int(steps / denoise))
        if max_total is not None and total > max_total:
            total = max_total
            steps = min(steps, max(1, round(total * denoise)))
    start = total - steps
    if start_step is not None:
        start = max(start, int(start_step))
    end = total if end_step is None else min(total, int(end_step))
    return total, start, end


@torch.no_grad()
def sample(model: Any, positive: list, negative: list, latent: dict, *, seed: int, steps: int,
           cfg: float, sampler_name: str, scheduler: str, denoise: float = 1.0,
           start_step: int | None = None, end_step: int | None = None, add_noise: bool = True,
           force_full_denoise: bool = True, callback: ProgressCallback | None = None,
           hooks: Sequence[SamplingHooks] = (), models: Any = None,
           previews: bool = False) -> dict:
    """Denoise ``latent`` (a LATENT dict) with ``model`` (a DiffusionModel); returns a new LATENT.

    ``callback(done, total)`` runs after every solver iteration; raising from it (e.g. the
    node's ``ctx.progress``, which raises ``Interrupted``) stops sampling there. With
    ``previews``, it is called ``callback(done, total, image)`` with an RGB thumbnail of the
    current x0 estimate of the first image of the batch (see preview.py).
    """
    check_latent_family(latent, model)
    out = dict(latent)
    if model.family:
        # Which latent space these samples are in, so a VAE of another family refuses them.
        out["family"] = model.family
    if denoise <= 0.0:
        return out
    max_total = int((model.scheduler_config or {}).get("num_train_timesteps", 1000))
    total, start, end = schedule_window(steps, denoise, start_step, end_step, max_total)
    if start >= end:
        return out

    reason = unsupported_reason(sampler_name, scheduler)
    if reason:
        raise ValueError(reason)
    models = models if models is not None else default_model_manager()
    guider = CFG(model, positive=positive, negative=negative, cfg=cfg)
    if not uses_diffusers(sampler_name, scheduler):
        # Loom's own solver on the named schedule's noise levels (ComfyUI's semantics).
        sigmas = window(schedule_sigmas(model, scheduler, total), start, end, total,
                        force_full_denoise)
        request = SamplingRequest(guider=guider, latent=latent, solver=sampler_name,
                                  sigmas=sigmas, noise=Noise(seed, add_noise), callback=callback,
                                  hooks=hooks, previews=previews)
        return sample_sigmas(request, models)[0]
    all_hooks, controls, loading = load_for_run(models, model, guider, list(hooks))
    with loading:
        run = DiffusersRun(model=model, guider=guider, latent=latent, seed=seed, total=total,
                           start=start, end=end, sampler_name=sampler_name,
                           scheduler_name=scheduler, add_noise=add_noise,
                           force_full_denoise=force_full_denoise, callback=callback,
                           hooks=all_hooks, controls=controls, device=models.device,
                           preview_family=model.family if previews else None)
        out["samples"] = _run(run)
    return out


@dataclass
class DiffusersRun:
    """One KSampler run on a diffusers scheduler, as :func:`sample` settled it: run steps
    ``start..end-1`` of a ``total``-step schedule."""

    model: Any
    guider: CFG
    latent: dict
    seed: int
    total: int
    start: int
    end: int
    sampler_name: str
    scheduler_name: str
    add_noise: bool
    force_full_denoise: bool
    callback: ProgressCallback | None
    hooks: list
    controls: list
    device: torch.device
    preview_family: str | None = None  # set: previews of the first image, in this latent space


@dataclass
class _Steps:
    """Which of the scheduler's timesteps run, and how the run ends."""

    timesteps: torch.Tensor  # the ones that run
    first: int  # index of the first one in the whole schedule
    count: int  # length of the whole schedule (solver iterations, not user steps)
    levels: list[float]  # sigma at each index of the whole schedule, and one past its end
    early_stop: bool  # ends before the schedule does
    clean_at_end: bool  # ... and returns the clean prediction there


def _run(run: DiffusersRun) -> torch.Tensor:
    model = run.model
    sched, spec, step_kwargs = make_scheduler(model.scheduler_config, model.prediction_type,
                                              run.sampler_name, run.scheduler_name, run.seed)
    scale = float(model.latent_scaling_factor)
    steps = _steps(sched, run)
    image = run.latent["samples"].to(device=run.device, dtype=torch.float32) * scale
    generator = seeded_generator(run.seed)
    if run.add_noise:
        noise = initial_noise(image.shape, generator, run.latent.get("batch_index")).to(run.device)
    else:
        noise = torch.zeros_like(image)
    state = SamplingState(scheduler=sched, timesteps=steps.timesteps,
                          levels=steps.levels[steps.first:], noise=noise, latent_image=image,
                          space=spec.space, device=run.device, model=model)
    hooks, predict = guided_prediction(run.latent, model, image, run.hooks, run.device, run.guider,
                                       state)
    x = _starting_point(sched, state, steps, image, noise, run.add_noise)
    if "generator" in inspect.signature(sched.step).parameters:
        step_kwargs = {**step_kwargs, "generator": generator}
    with hook_session([*hooks, *run.controls], state):
        x = _loop(run, sched, spec.space, steps, predict, state, hooks, x, step_kwargs)
        # Back to x0 + sigma * eps: at the end of a full run sigma is ~0; after an early stop
        # the leftover noise is at the level of the next step.
        end_sigma = 0.0
        if steps.early_stop and not steps.clean_at_end:
            x = x / state.alpha(len(steps.timesteps))
            end_sigma = state.levels[len(steps.timesteps)]
        for h in hooks:
            x = h.on_end(x, state, end_sigma)
    return (x / scale).to("cpu", torch.float32)


def _steps(sched, run: DiffusersRun) -> _Steps:
    order = int(getattr(sched, "order", 1))
    sched.set_timesteps(run.total, device=run.device)
    all_timesteps = sched.timesteps
    first = run.start * order
    stop = len(all_timesteps) if run.end == run.total else run.end * order
    early_stop = run.end < run.total
    clean_at_end = early_stop and run.force_full_denoise
    if clean_at_end:
        stop = (run.end - 1) * order + 1  # the last step ends on the clean prediction
    if first > 0 and hasattr(sched, "set_begin_index"):
        sched.set_begin_index(first)
    return _Steps(all_timesteps[first:stop], first, len(all_timesteps), _noise_levels(sched),
                  early_stop, clean_at_end)


def _starting_point(sched, state: SamplingState, steps: _Steps, image, noise, add_noise: bool):
    if add_noise and steps.first == 0:
        # txt2img: exactly what a diffusers pipeline starts from (randn * init_noise_sigma); a
        # non-empty input latent is added at the first noise level (ComfyUI's behaviour).
        return noise * sched.init_noise_sigma + image * state.alpha(0)
    if add_noise:
        # img2img / a later start: diffusers' Img2Img pipeline noises the image this way.
        return sched.add_noise(image, noise, steps.timesteps[:1].repeat(image.shape[0]))
    return image * state.alpha(0)  # already noisy (a KSamplerAdvanced hand-over)


def _loop(run: DiffusersRun, sched, space: str, steps: _Steps, predict, state, hooks, x,
          step_kwargs) -> torch.Tensor:
    """The solver iterations; returns the last sample (or the clean prediction)."""
    prediction_type, callback = run.model.prediction_type, run.callback
    step_hooks = [h for h in hooks if type(h).after_step is not SamplingHooks.after_step]
    two_stage = hasattr(sched, "state_in_first_order")
    n_iter = len(steps.timesteps)
    for i, t in enumerate(steps.timesteps):
        last = i == n_iter - 1
        k = steps.first + i
        sigma = steps.levels[k]
        pred, _ = predict(sched.scale_model_input(x, t), t, sigma, i, k / steps.count,
                          (k + 1) / steps.count)
        if last and steps.clean_at_end:
            x = _predict_clean(x, pred, sigma, space, prediction_type)
            break
        preview = None
        if run.preview_family is not None and callback is not None:
            clean = _predict_clean(x[:1], pred[:1], sigma, space, prediction_type)
            preview = latent_to_rgb(clean[0], run.preview_family)
        x = sched.step(pred, t, x, **step_kwargs, return_dict=False)[0]
        if step_hooks and not last and (not two_stage or sched.state_in_first_order):
            for h in step_hooks:
                x = h.after_step(i, i + 1, x, state)
        if callback is not None:
            callback(i + 1, n_iter, *([preview] if preview is not None else []))
    if callback is not None and steps.clean_at_end:
        callback(n_iter, n_iter)
    return x


def _predict_clean(x, pred, sigma, space, prediction_type) -> torch.Tensor:
    """The model's x0 estimate from its output ``pred`` at noise level ``sigma``, in the
    scheduler's form ``x`` (a step to sigma 0 by any first-order solver lands here)."""
    if prediction_type == "sample":
        return pred
    if space == "ve":
        if prediction_type == "v_prediction":
            return pred * (-sigma / (sigma**2 + 1) ** 0.5) + x / (sigma**2 + 1)
        return x - sigma * pred
    alpha = 1.0 / (1.0 + sigma**2) ** 0.5
    sigma_t = sigma * alpha
    if prediction_type == "v_prediction":
        return alpha * x - sigma_t * pred
    return (x - sigma_t * pred) / alpha


def _noise_levels(sched) -> list[float]:
    """Sigma (x0 + sigma * eps form) for each index of ``sched.timesteps``, plus one past the
    end. Read once on the CPU so the loop never syncs with the device for it."""
    timesteps = sched.timesteps
    n = len(timesteps)
    sigmas = getattr(sched, "sigmas", None)
    if isinstance(sigmas, torch.Tensor) and sigmas.numel() >= n:
        values = sigmas.detach().to("cpu", torch.float64).tolist()
        return values[:n] + [values[n] if len(values) > n else 0.0]
    ac = sched.alphas_cumprod.to("cpu", torch.float64)
    idx = timesteps.detach().to("cpu").round().long().clamp(0, len(ac) - 1)
    a = ac[idx]
    return (((1 - a) / a) ** 0.5).tolist() + [0.0]

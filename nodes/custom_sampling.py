"""ComfyUI's custom-sampling nodes: samplers, schedules, noise and guiders as separate values.

Socket type -> value (see :mod:`loom.runtime.sampling`):

- ``SAMPLER`` a :class:`~loom.runtime.sampling.solvers.Solver` (one of Loom's sigma-space solvers)
- ``SIGMAS``  a 1-D float32 CPU tensor of noise levels, highest first
- ``NOISE``   a :class:`~loom.runtime.sampling.Noise` (seed, or disabled)
- ``GUIDER``  a :class:`~loom.runtime.sampling.Guider` (model + conditionings + how to mix them)

Class names, inputs, defaults and outputs are ComfyUI's. With the same model, seed, steps, cfg,
sampler and schedule, ``SamplerCustom`` gives KSampler's result (the tests check this).
"""

from __future__ import annotations

import torch

from loom.nodeapi import SEED_MAX, Boolean, Combo, Float, Int, Link, Node, Output, fraction
from loom.runtime.sampling import (
    CFG,
    DUAL_CFG_STYLES,
    SCHEDULER_NAMES,
    SOLVER_NAMES,
    Basic,
    DualCFG,
    Guider,
    Noise,
    SamplingRequest,
    sample_sigmas,
    schedule_window,
)
from loom.runtime.sampling.sigmas import exponential_sigmas, karras_sigmas, schedule_sigmas, sd_turbo_sigmas
from loom.runtime.sampling.solvers import SOLVERS
from nodes.sd_sampling import _models, _previews, sampler_use

SIGMA_MAX_DEFAULT = 14.614642  # SD 1.x's highest training noise level
SIGMA_MIN_DEFAULT = 0.0291675  # and its lowest


def _cfg_input() -> Float:
    return Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01,
                 tooltip="Classifier-free guidance scale.")


def _sigmas(value) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.dim() != 1:
        raise ValueError("sigmas must be a 1-D list of noise levels (connect a scheduler node)")
    return value


class KSamplerSelect(Node, category="sampling/custom_sampling/samplers", display_name="KSamplerSelect"):
    """Chooses the solver a custom sampler runs."""
    inputs = {"sampler_name": Combo(SOLVER_NAMES, default="euler")}
    outputs = (Output("SAMPLER"),)

    def run(self, sampler_name):
        return (SOLVERS[sampler_name],)


def _eta(max_: float = 100.0) -> Float:
    return Float(1.0, min=0.0, max=max_, step=0.01, round=False,
                 tooltip="How much fresh noise each step adds (0: none, a deterministic solver).")


def _s_noise(max_: float = 100.0) -> Float:
    return Float(1.0, min=0.0, max=max_, step=0.01, round=False,
                 tooltip="Scale of the fresh noise.")


class _AncestralSampler(Node, category="sampling/custom_sampling/samplers"):
    """A SAMPLER node for the ancestral solver ``solver``, with its noise settings."""

    solver = ""
    inputs = {"eta": _eta(), "s_noise": _s_noise()}
    outputs = (Output("SAMPLER"),)

    def run(self, eta, s_noise):
        return (SOLVERS[self.solver].with_options(eta=eta, s_noise=s_noise),)


class SamplerEulerAncestral(_AncestralSampler, display_name="SamplerEulerAncestral"):
    """euler_ancestral with its noise settings."""
    solver = "euler_ancestral"


class SamplerEulerAncestralCFGPP(_AncestralSampler, display_name="SamplerEulerAncestralCFG++"):
    """euler_ancestral_cfg_pp with its noise settings."""
    solver = "euler_ancestral_cfg_pp"
    inputs = {"eta": _eta(1.0), "s_noise": _s_noise(10.0)}


# The class name is ComfyUI's.
class SamplerDPMPP_2S_Ancestral(_AncestralSampler, display_name="SamplerDPMPP_2S_Ancestral"):
    """dpmpp_2s_ancestral with its noise settings."""
    solver = "dpmpp_2s_ancestral"


class SamplerDPMPP_2M_SDE(Node, category="sampling/custom_sampling/samplers",
                          display_name="SamplerDPMPP_2M_SDE"):  # ComfyUI's class name
    """dpmpp_2m_sde with its settings (Loom draws the noise on the CPU from the seed either way, so
    noise_device does not change the result)."""
    inputs = {
        "solver_type": Combo(["midpoint", "heun"], default="midpoint"),
        "eta": _eta(),
        "s_noise": _s_noise(),
        "noise_device": Combo(["gpu", "cpu"], default="gpu"),
    }
    outputs = (Output("SAMPLER"),)

    def run(self, solver_type, eta, s_noise, noise_device="gpu"):
        return (SOLVERS["dpmpp_2m_sde"].with_options(solver_type=solver_type, eta=eta,
                                                     s_noise=s_noise),)


class SamplerLMS(Node, category="sampling/custom_sampling/samplers", display_name="SamplerLMS"):
    """lms with its order (how many past steps it uses)."""
    inputs = {"order": Int(4, min=1, max=100)}
    outputs = (Output("SAMPLER"),)

    def run(self, order):
        return (SOLVERS["lms"].with_options(max_order=order),)


class BasicScheduler(Node, category="sampling/custom_sampling/schedulers", display_name="BasicScheduler"):
    """The noise levels KSampler would use for this model, schedule, step count and denoise."""
    inputs = {
        "model": Link("MODEL"),
        "scheduler": Combo(SCHEDULER_NAMES, default=SCHEDULER_NAMES[0]),
        "steps": Int(20, min=1, max=10000),
        "denoise": fraction(1.0),
    }
    outputs = (Output("SIGMAS"),)

    def run(self, model, scheduler, steps, denoise=1.0):
        if denoise <= 0.0:
            return (torch.zeros(0, dtype=torch.float32),)
        max_total = int((model.scheduler_config or {}).get("num_train_timesteps", 1000))
        total, start, _ = schedule_window(steps, denoise, None, None, max_total)
        return (schedule_sigmas(model, scheduler, total)[start:],)


def _sigma_range_inputs() -> dict:
    return {
        "steps": Int(20, min=1, max=10000),
        "sigma_max": Float(SIGMA_MAX_DEFAULT, min=0.0, max=5000.0, step=0.01, round=False),
        "sigma_min": Float(SIGMA_MIN_DEFAULT, min=0.0, max=5000.0, step=0.01, round=False),
    }


class KarrasScheduler(Node, category="sampling/custom_sampling/schedulers", display_name="KarrasScheduler"):
    """Karras et al.'s schedule: evenly spaced in sigma^(1/rho), then 0."""
    inputs = {**_sigma_range_inputs(), "rho": Float(7.0, min=0.0, max=100.0, step=0.01, round=False)}
    outputs = (Output("SIGMAS"),)

    def run(self, steps, sigma_max, sigma_min, rho):
        _check_range(sigma_min, sigma_max)
        if rho <= 0:
            raise ValueError("rho must be above 0")
        return (karras_sigmas(steps, sigma_min, sigma_max, rho),)


class ExponentialScheduler(Node, category="sampling/custom_sampling/schedulers",
                           display_name="ExponentialScheduler"):
    """Noise levels evenly spaced in log sigma, then 0."""
    inputs = _sigma_range_inputs()
    outputs = (Output("SIGMAS"),)

    def run(self, steps, sigma_max, sigma_min):
        _check_range(sigma_min, sigma_max)
        return (exponential_sigmas(steps, sigma_min, sigma_max),)


def _check_range(sigma_min: float, sigma_max: float) -> None:
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f"need 0 < sigma_min <= sigma_max (got sigma_min={sigma_min}, "
                         f"sigma_max={sigma_max})")


class SDTurboScheduler(Node, category="sampling/custom_sampling/schedulers", display_name="SDTurboScheduler"):
    """SD-Turbo's few-step schedule (every 100th training timestep from the top)."""
    inputs = {
        "model": Link("MODEL"),
        "steps": Int(1, min=1, max=10),
        "denoise": fraction(1.0),
    }
    outputs = (Output("SIGMAS"),)

    def run(self, model, steps, denoise=1.0):
        return (sd_turbo_sigmas(model, steps, denoise),)


class SplitSigmas(Node, category="sampling/custom_sampling/sigmas", display_name="SplitSigmas"):
    """Cuts a schedule at a step: the first part ends at that step's level, the second starts there
    (e.g. for a base/refiner pair)."""
    inputs = {"sigmas": Link("SIGMAS"), "step": Int(0, min=0, max=10000)}
    outputs = (Output("SIGMAS", "high_sigmas"), Output("SIGMAS", "low_sigmas"))

    def run(self, sigmas, step):
        sigmas = _sigmas(sigmas)
        return (sigmas[:step + 1].clone(), sigmas[step:].clone())


class RandomNoise(Node, category="sampling/custom_sampling/noise", display_name="RandomNoise"):
    """Seeded noise (the same seed gives KSampler's noise)."""
    inputs = {"noise_seed": Int(0, min=0, max=SEED_MAX, control_after_generate=True)}
    outputs = (Output("NOISE"),)

    def run(self, noise_seed):
        return (Noise(noise_seed),)


class DisableNoise(Node, category="sampling/custom_sampling/noise", display_name="DisableNoise"):
    """No initial noise: the latent is sampled as it is (already noisy)."""
    inputs = {}
    outputs = (Output("NOISE"),)

    def run(self):
        return (Noise(0, enabled=False),)


class CFGGuider(Node, category="sampling/custom_sampling/guiders", display_name="CFGGuider"):
    """Classifier-free guidance between a positive and a negative conditioning."""
    inputs = {"model": Link("MODEL"), "positive": Link("CONDITIONING"),
              "negative": Link("CONDITIONING"), "cfg": _cfg_input()}
    outputs = (Output("GUIDER"),)

    def run(self, model, positive, negative, cfg):
        return (CFG(model, positive=positive, negative=negative, cfg=cfg),)


class BasicGuider(Node, category="sampling/custom_sampling/guiders", display_name="BasicGuider"):
    """One conditioning, no guidance (cfg 1)."""
    inputs = {"model": Link("MODEL"), "conditioning": Link("CONDITIONING")}
    outputs = (Output("GUIDER"),)

    def run(self, model, conditioning):
        return (Basic(model, conditioning=conditioning),)


class DualCFGGuider(Node, category="sampling/custom_sampling/guiders", display_name="DualCFGGuider"):
    """Guidance with two positive conditionings: cond1 over cond2 (cfg_conds) and cond2 over the
    negative (cfg_cond2_negative)."""
    inputs = {
        "model": Link("MODEL"),
        "cond1": Link("CONDITIONING"),
        "cond2": Link("CONDITIONING"),
        "negative": Link("CONDITIONING"),
        "cfg_conds": _cfg_input(),
        "cfg_cond2_negative": _cfg_input(),
        "style": Combo(DUAL_CFG_STYLES, default="regular"),
    }
    outputs = (Output("GUIDER"),)

    def run(self, model, cond1, cond2, negative, cfg_conds, cfg_cond2_negative,
            style="regular"):
        return (DualCFG(model, cond1=cond1, cond2=cond2, negative=negative, cfg_conds=cfg_conds,
                        cfg_cond2_negative=cfg_cond2_negative, style=style),)


_OUTPUTS = (Output("LATENT", "output"), Output("LATENT", "denoised_output"))


class _CustomSampler(Node, category="sampling/custom_sampling"):
    outputs = _OUTPUTS

    def _sample(self, guider, sampler, sigmas, noise, latent_image):
        request = SamplingRequest(guider=guider, latent=latent_image, solver=sampler,
                                  sigmas=_sigmas(sigmas), noise=noise,
                                  callback=self.ctx.progress, previews=_previews(self.ctx))
        return sample_sigmas(request, _models(self.ctx))


class SamplerCustom(_CustomSampler, display_name="SamplerCustom"):
    """Samples with a chosen solver and schedule (KSampler's parts as separate nodes); also outputs
    the model's clean estimate at the last step."""
    inputs = {
        "model": Link("MODEL"),
        "add_noise": Boolean(True),
        "noise_seed": Int(0, min=0, max=SEED_MAX, control_after_generate=True),
        "cfg": _cfg_input(),
        "positive": Link("CONDITIONING"),
        "negative": Link("CONDITIONING"),
        "sampler": Link("SAMPLER"),
        "sigmas": Link("SIGMAS"),
        "latent_image": Link("LATENT"),
    }

    def uses(self, model, positive, negative, latent_image, cfg, **_):
        return sampler_use(self.ctx, model, [positive, negative], latent_image, 1 if cfg == 1.0 else 2)

    def run(self, model, add_noise, noise_seed, cfg, positive, negative, sampler, sigmas,
            latent_image):
        guider = CFG(model, positive=positive, negative=negative, cfg=cfg)
        return self._sample(guider, sampler, sigmas, Noise(noise_seed, add_noise), latent_image)


class SamplerCustomAdvanced(_CustomSampler, display_name="SamplerCustomAdvanced"):
    """Samples with separate noise, guider, solver and schedule."""
    inputs = {
        "noise": Link("NOISE"),
        "guider": Link("GUIDER"),
        "sampler": Link("SAMPLER"),
        "sigmas": Link("SIGMAS"),
        "latent_image": Link("LATENT"),
    }

    def uses(self, guider, latent_image, **_):
        if not isinstance(guider, Guider):
            return None  # a plugin's own guider: the loop places what it uses as it goes
        sides = [cond for _, cond in guider.sides]
        return sampler_use(self.ctx, guider.model, sides, latent_image, len(sides))

    def run(self, noise, guider, sampler, sigmas, latent_image):
        return self._sample(guider, sampler, sigmas, noise, latent_image)


NODES = [
    KSamplerSelect, SamplerEulerAncestral, SamplerEulerAncestralCFGPP, SamplerDPMPP_2S_Ancestral,
    SamplerDPMPP_2M_SDE, SamplerLMS, BasicScheduler, KarrasScheduler, ExponentialScheduler,
    SDTurboScheduler, SplitSigmas, RandomNoise, DisableNoise, CFGGuider, BasicGuider,
    DualCFGGuider, SamplerCustom, SamplerCustomAdvanced,
]

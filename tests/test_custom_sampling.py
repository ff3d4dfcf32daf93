"""The custom-sampling nodes (SamplerCustom, SamplerCustomAdvanced, schedulers, noise, guiders)
and ConditioningSetTimestepRange, on a tiny SD 1.x model.

References: KSampler (whose euler-family results have exact parity with diffusers pipelines)
for the equivalent settings; diffusers' own schedulers for schedules; closed-form formulas
computed here for the scheduler nodes; a KSamplerAdvanced hand-over for timestep ranges.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sd_fixtures import close, empty, sd1_setup, sd_cpu_only, tiny_pipeline  # noqa: F401  (autouse: CPU/fp32)

from loom.runtime.sampling.noise import initial_noise, seeded_generator
from loom.runtime.sampling.schedulers import make_scheduler
from nodes.conditioning import ConditioningCombine, ConditioningSetTimestepRange
from nodes.custom_sampling import (
    BasicGuider,
    BasicScheduler,
    CFGGuider,
    DisableNoise,
    DualCFGGuider,
    ExponentialScheduler,
    KarrasScheduler,
    KSamplerSelect,
    RandomNoise,
    SamplerCustom,
    SamplerCustomAdvanced,
    SDTurboScheduler,
    SplitSigmas,
)
from nodes.sd_sampling import KSampler, KSamplerAdvanced


def image_latent(seed=3):
    return {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(seed))}


def ksample(m, **kw):
    args = dict(seed=5, steps=4, cfg=7.0, sampler_name="euler", scheduler="normal",
                positive=m.pos, negative=m.neg, latent_image=empty(), denoise=1.0)
    args.update(kw)
    return KSampler().run(model=m.model, **args)[0]["samples"]


def custom(m, sampler="euler", scheduler="normal", steps=4, denoise=1.0, seed=5, cfg=7.0,
           latent=None, add_noise=True, sigmas=None):
    if sigmas is None:
        sigmas = BasicScheduler().run(model=m.model, scheduler=scheduler, steps=steps,
                                      denoise=denoise)[0]
    out, denoised = SamplerCustom().run(
        model=m.model, add_noise=add_noise, noise_seed=seed, cfg=cfg, positive=m.pos,
        negative=m.neg, sampler=KSamplerSelect().run(sampler)[0], sigmas=sigmas,
        latent_image=latent or empty())
    return out["samples"], denoised["samples"]


# -- parity with KSampler ----------------------------------------------------------------------

@pytest.mark.parametrize("sampler,scheduler", [
    ("euler", "normal"), ("euler", "karras"), ("euler", "exponential"), ("euler", "simple"),
    ("euler", "sgm_uniform"), ("euler", "beta"), ("euler_ancestral", "normal"),
    ("heun", "normal"), ("heun", "karras"), ("dpm_2", "karras"), ("dpm_2_ancestral", "normal"),
    ("lms", "normal"), ("lms", "karras"), ("euler", "ddim_uniform"), ("dpmpp_sde", "normal"),
    ("dpmpp_sde", "karras"),
])
def test_sampler_custom_equals_ksampler(sd1, sampler, scheduler):
    """KSampler runs these on diffusers' schedulers; SamplerCustom on Loom's solvers with
    BasicScheduler's levels: the same image up to float rounding."""
    expected = ksample(sd1, sampler_name=sampler, scheduler=scheduler)
    out, _ = custom(sd1, sampler, scheduler)
    assert close(out, expected), (out - expected).abs().max()


def test_dpmpp_2m_matches_diffusers_on_its_own_levels(sd1):
    """diffusers' DPM-Solver++(2M) starts from ``noise * sqrt(1 + sigma_max^2)`` (a VP
    scheduler) and spaces "normal" on integer timesteps: given those levels and that start,
    Loom's dpmpp_2m solver reproduces it."""
    expected = ksample(sd1, sampler_name="dpmpp_2m", scheduler="normal")
    sched, _, _ = make_scheduler(sd1.model.scheduler_config, "epsilon", "dpmpp_2m", "normal")
    sched.set_timesteps(4)
    sigmas = sched.sigmas.float()
    noisy = initial_noise((1, 4, 8, 8), seeded_generator(5)) * (1 + sigmas[0] ** 2) ** 0.5
    latent = {"samples": noisy / sd1.model.latent_scaling_factor}
    out, _ = custom(sd1, "dpmpp_2m", sigmas=sigmas, latent=latent, add_noise=False)
    assert close(out, expected), (out - expected).abs().max()


def test_dpmpp_2m_sde_matches_diffusers_on_its_own_levels(sd1):
    """As above for SDE-DPM-Solver++(2M): the same start (noise * sqrt(1 + sigma_max^2): here
    a latent that adds the difference to Loom's noise * sigma_max) and the same generator
    stream for the steps' noise."""
    expected = ksample(sd1, sampler_name="dpmpp_2m_sde", scheduler="normal")
    sched, _, _ = make_scheduler(sd1.model.scheduler_config, "epsilon", "dpmpp_2m_sde", "normal")
    sched.set_timesteps(4)
    sigmas = sched.sigmas.float()
    noise = initial_noise((1, 4, 8, 8), seeded_generator(5))
    extra = noise * ((1 + sigmas[0] ** 2) ** 0.5 - sigmas[0])
    latent = {"samples": extra / sd1.model.latent_scaling_factor}
    out, _ = custom(sd1, "dpmpp_2m_sde", sigmas=sigmas, latent=latent)
    assert close(out, expected), (out - expected).abs().max()


def test_ddpm_matches_diffusers_on_its_own_levels(sd1):
    """Ancestral DDPM: diffusers' DDPMScheduler (VP, integer timesteps) from the same start and
    with the same generator stream."""
    expected = ksample(sd1, sampler_name="ddpm", scheduler="normal")
    sched, _, _ = make_scheduler(sd1.model.scheduler_config, "epsilon", "ddpm", "normal")
    sched.set_timesteps(4)
    ac = sched.alphas_cumprod[sched.timesteps.long()].double()
    sigmas = torch.cat([((1 - ac) / ac) ** 0.5, torch.zeros(1, dtype=torch.float64)]).float()
    noise = initial_noise((1, 4, 8, 8), seeded_generator(5))
    extra = noise * ((1 + sigmas[0] ** 2) ** 0.5 - sigmas[0])
    latent = {"samples": extra / sd1.model.latent_scaling_factor}
    out, _ = custom(sd1, "ddpm", sigmas=sigmas, latent=latent)
    assert close(out, expected), (out - expected).abs().max()


@pytest.mark.parametrize("sampler", ["res_multistep", "er_sde", "ipndm", "euler_cfg_pp"])
def test_ksampler_runs_loom_solvers_like_sampler_custom(sd1, sampler):
    """Solvers diffusers lacks run through the same sigma loop from KSampler."""
    expected = ksample(sd1, sampler_name=sampler, scheduler="kl_optimal", cfg=1.5)
    out, _ = custom(sd1, sampler, "kl_optimal", cfg=1.5)
    assert torch.equal(out, expected)
    assert torch.isfinite(out).all()


def test_sampler_custom_advanced_equals_sampler_custom(sd1):
    sigmas = BasicScheduler().run(model=sd1.model, scheduler="karras", steps=4)[0]
    sampler = KSamplerSelect().run("euler_ancestral")[0]
    guider = CFGGuider().run(model=sd1.model, positive=sd1.pos, negative=sd1.neg, cfg=6.0)[0]
    out, den = SamplerCustomAdvanced().run(noise=RandomNoise().run(9)[0], guider=guider,
                                           sampler=sampler, sigmas=sigmas,
                                           latent_image=empty())
    ref, ref_den = custom(sd1, "euler_ancestral", "karras", seed=9, cfg=6.0)
    assert torch.equal(out["samples"], ref) and torch.equal(den["samples"], ref_den)
    # and KSampler (Loom's solver there too: diffusers' ancestral Euler has no Karras option)
    assert torch.equal(ksample(sd1, sampler_name="euler_ancestral", scheduler="karras", seed=9,
                               cfg=6.0), ref)


def test_basic_guider_equals_cfg_one(sd1):
    sigmas = BasicScheduler().run(model=sd1.model, scheduler="normal", steps=3)[0]
    sampler = KSamplerSelect().run("euler")[0]
    guider = BasicGuider().run(model=sd1.model, conditioning=sd1.pos)[0]
    out, _ = SamplerCustomAdvanced().run(noise=RandomNoise().run(2)[0], guider=guider,
                                         sampler=sampler, sigmas=sigmas, latent_image=empty())
    expected = ksample(sd1, steps=3, seed=2, cfg=1.0)
    assert close(out["samples"], expected)


@pytest.mark.parametrize("style", ["regular", "nested"])
def test_dual_cfg_guider(sd1, style):
    """With cond1 == cond2 both styles are plain CFG at cfg_cond2_negative; with different
    conds the result differs from either single-prompt run."""
    sigmas = BasicScheduler().run(model=sd1.model, scheduler="normal", steps=3)[0]
    sampler = KSamplerSelect().run("euler")[0]

    def run(cond1, cond2):
        guider = DualCFGGuider().run(model=sd1.model, cond1=cond1, cond2=cond2,
                                     negative=sd1.neg, cfg_conds=3.0, cfg_cond2_negative=6.0,
                                     style=style)[0]
        return SamplerCustomAdvanced().run(noise=RandomNoise().run(2)[0], guider=guider,
                                           sampler=sampler, sigmas=sigmas,
                                           latent_image=empty())[0]["samples"]

    same = run(sd1.pos, sd1.pos)
    assert close(same, ksample(sd1, steps=3, seed=2, cfg=6.0))
    mixed = run(sd1.pos, sd1.other)
    assert not close(mixed, same, rel=1e-3)


def test_dual_cfg_combination_formulas():
    from loom.runtime.sampling import DualCFG

    neg, mid, pos = torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([4.0])
    regular = DualCFG(None, cfg_conds=3.0, cfg_cond2_negative=5.0).combine([neg, mid, pos])
    assert regular.item() == pytest.approx(1 + 5 * (2 - 1) + 3 * (4 - 2))
    nested = DualCFG(None, cfg_conds=3.0, cfg_cond2_negative=5.0,
                     style="nested").combine([neg, mid, pos])
    assert nested.item() == pytest.approx(1 + 5 * ((2 + 3 * (4 - 2)) - 1))


def test_img2img_denoise_equals_ksampler(sd1):
    latent = image_latent()
    expected = ksample(sd1, latent_image=latent, denoise=0.5)
    out, _ = custom(sd1, denoise=0.5, latent=latent)
    assert close(out, expected), (out - expected).abs().max()
    # denoise 0: no levels, the latent comes back unchanged
    sigmas = BasicScheduler().run(model=sd1.model, scheduler="normal", steps=4, denoise=0.0)[0]
    assert len(sigmas) == 0
    unchanged, _ = custom(sd1, sigmas=sigmas, latent=latent)
    assert torch.equal(unchanged, latent["samples"])


def test_split_sigmas_hand_over_equals_one_run(sd1):
    sigmas = BasicScheduler().run(model=sd1.model, scheduler="karras", steps=5)[0]
    high, low = SplitSigmas().run(sigmas=sigmas, step=2)
    assert torch.equal(high, sigmas[:3]) and torch.equal(low, sigmas[2:])
    full, _ = custom(sd1, sigmas=sigmas)
    first, _ = custom(sd1, sigmas=high)
    rest, _ = custom(sd1, sigmas=low, latent={"samples": first}, add_noise=False)
    assert close(rest, full), (rest - full).abs().max()
    # the same with DisableNoise through SamplerCustomAdvanced
    guider = CFGGuider().run(model=sd1.model, positive=sd1.pos, negative=sd1.neg, cfg=7.0)[0]
    rest2, _ = SamplerCustomAdvanced().run(noise=DisableNoise().run()[0], guider=guider,
                                           sampler=KSamplerSelect().run("euler")[0],
                                           sigmas=low, latent_image={"samples": first})
    assert torch.equal(rest2["samples"], rest)


def test_denoised_output_is_the_last_clean_estimate(sd1):
    """Euler's last step goes to sigma 0, i.e. to the model's clean estimate."""
    out, den = custom(sd1)
    assert close(out, den)
    sigmas = BasicScheduler().run(model=sd1.model, scheduler="normal", steps=4)[0]
    high, _ = SplitSigmas().run(sigmas=sigmas, step=2)
    noisy, clean = custom(sd1, sigmas=high)
    assert not close(noisy, clean, rel=1e-2)  # leftover noise vs the estimate


def test_seeds_are_reproducible_and_matter(sd1):
    a, _ = custom(sd1, "er_sde", "karras", seed=3)
    b, _ = custom(sd1, "er_sde", "karras", seed=3)
    c, _ = custom(sd1, "er_sde", "karras", seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)


# -- scheduler nodes ---------------------------------------------------------------------------

def test_karras_and_exponential_scheduler_formulas():
    n, lo, hi, rho = 6, 0.03, 14.6, 7.0
    karras = KarrasScheduler().run(steps=n, sigma_max=hi, sigma_min=lo, rho=rho)[0]
    ref = [(hi ** (1 / rho) + i / (n - 1) * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
           for i in range(n)] + [0.0]
    assert karras.dtype == torch.float32 and len(karras) == n + 1
    assert np.allclose(karras.numpy(), ref, rtol=1e-6)
    expo = ExponentialScheduler().run(steps=n, sigma_max=hi, sigma_min=lo)[0]
    ref = [math.exp(math.log(hi) + i / (n - 1) * (math.log(lo) - math.log(hi)))
           for i in range(n)] + [0.0]
    assert np.allclose(expo.numpy(), ref, rtol=1e-6)
    with pytest.raises(ValueError, match="sigma_min"):
        KarrasScheduler().run(steps=4, sigma_max=1.0, sigma_min=2.0, rho=7.0)
    with pytest.raises(ValueError, match="sigma_min"):
        ExponentialScheduler().run(steps=4, sigma_max=1.0, sigma_min=0.0)


def test_basic_scheduler_matches_diffusers(sd1):
    import diffusers

    config = dict(sd1.pipe.scheduler.config)
    for name, option in [("normal", {}), ("karras", {"use_karras_sigmas": True})]:
        ref = diffusers.EulerDiscreteScheduler.from_config(config, **option,
                                                           timestep_spacing="linspace")
        ref.set_timesteps(7)
        got = BasicScheduler().run(model=sd1.model, scheduler=name, steps=7)[0]
        assert torch.allclose(got, ref.sigmas.float(), rtol=1e-6), name
    half = BasicScheduler().run(model=sd1.model, scheduler="normal", steps=5, denoise=0.5)[0]
    full = BasicScheduler().run(model=sd1.model, scheduler="normal", steps=10)[0]
    assert torch.equal(half, full[5:])


def test_sd_turbo_scheduler(sd1):
    ac = torch.cumprod(1 - torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000,
                                          dtype=torch.float64) ** 2, 0)
    train = ((1 - ac) / ac) ** 0.5
    one = SDTurboScheduler().run(model=sd1.model, steps=1, denoise=1.0)[0]
    assert torch.allclose(one, torch.tensor([train[999].item(), 0.0]), rtol=1e-5)
    two = SDTurboScheduler().run(model=sd1.model, steps=2, denoise=0.5)[0]
    assert torch.allclose(two, torch.tensor([train[499].item(), train[399].item(), 0.0]),
                          rtol=1e-5)


def test_bad_sigmas_are_refused(sd1):
    with pytest.raises(ValueError, match="1-D"):
        custom(sd1, sigmas=torch.ones(2, 2))
    with pytest.raises(ValueError, match="finite"):
        custom(sd1, sigmas=torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="must not increase"):
        custom(sd1, sigmas=torch.tensor([1.0, 2.0, 0.0]))
    # repeated levels (e.g. KarrasScheduler with sigma_min == sigma_max) are single steps
    flat = KarrasScheduler().run(steps=4, sigma_max=3.0, sigma_min=3.0, rho=7.0)[0]
    for sampler in ("dpmpp_2m", "res_multistep", "er_sde", "lms"):
        out, _ = custom(sd1, sampler, sigmas=flat)
        ref, _ = custom(sd1, sampler, sigmas=torch.tensor([3.0, 0.0]))
        assert torch.equal(out, ref), sampler


# -- ConditioningSetTimestepRange ----------------------------------------------------------------

def _ranged(m, first, second, split):
    a = ConditioningSetTimestepRange().run(conditioning=first, start=0.0, end=split)[0]
    b = ConditioningSetTimestepRange().run(conditioning=second, start=split, end=1.0)[0]
    return ConditioningCombine().run(conditioning_1=a, conditioning_2=b)[0]


@pytest.mark.parametrize("sampler", ["euler", "ddim"])
def test_timestep_ranges_switch_the_prompt_mid_run(sd1, sampler):
    """Prompt A for the first half of the noise range, B for the second == a KSamplerAdvanced
    run with A for steps 0-1 handing over to one with B for steps 2-3 (4 steps: timesteps 999,
    666, 333, 0 for Euler, 751, 501, 251, 1 for DDIM; the switch at 50% is timestep 499.5).
    Single-evaluation solvers, so each step sees exactly one prompt."""
    positive = _ranged(sd1, sd1.pos, sd1.other, 0.5)
    common = dict(noise_seed=6, steps=4, cfg=7.0, sampler_name=sampler, scheduler="normal",
                  negative=sd1.neg)
    ranged = KSamplerAdvanced().run(model=sd1.model, add_noise="enable", latent_image=empty(),
                                    positive=positive, start_at_step=0, end_at_step=10000,
                                    return_with_leftover_noise="disable",
                                    **common)[0]["samples"]
    half = KSamplerAdvanced().run(model=sd1.model, add_noise="enable", latent_image=empty(),
                                  positive=sd1.pos, start_at_step=0, end_at_step=2,
                                  return_with_leftover_noise="enable", **common)[0]
    rest = KSamplerAdvanced().run(model=sd1.model, add_noise="disable", latent_image=half,
                                  positive=sd1.other, start_at_step=2, end_at_step=10000,
                                  return_with_leftover_noise="disable", **common)[0]["samples"]
    assert close(ranged, rest), (ranged - rest).abs().max()
    only_a = ksample(sd1, seed=6, sampler_name=sampler)
    assert (ranged - only_a).abs().max() > 1e-2  # the second prompt did take over


def test_timestep_ranges_in_the_sigma_loop(sd1):
    positive = _ranged(sd1, sd1.pos, sd1.other, 0.5)
    sigmas = BasicScheduler().run(model=sd1.model, scheduler="normal", steps=4)[0]
    high, low = SplitSigmas().run(sigmas=sigmas, step=2)
    sampler = KSamplerSelect().run("euler")[0]

    def run(pos, sig, latent, add_noise):
        return SamplerCustom().run(model=sd1.model, add_noise=add_noise, noise_seed=6, cfg=7.0,
                                   positive=pos, negative=sd1.neg, sampler=sampler, sigmas=sig,
                                   latent_image=latent)[0]

    ranged = run(positive, sigmas, empty(), True)["samples"]
    first = run(sd1.pos, high, empty(), True)
    rest = run(sd1.other, low, first, False)["samples"]
    assert close(ranged, rest), (ranged - rest).abs().max()


def test_entries_out_of_range_everywhere_give_a_clear_error(sd1):
    never = ConditioningSetTimestepRange().run(conditioning=sd1.pos, start=1.0, end=1.0)[0]
    with pytest.raises(ValueError, match="no conditioning is active"):
        ksample(sd1, positive=never, cfg=1.0)


def test_v_prediction_model_equals_ksampler():
    m = sd1_setup("sd2v", family="sd2", prediction_type="v_prediction")
    for sampler, scheduler in [("euler", "normal"), ("heun", "karras")]:
        expected = ksample(m, sampler_name=sampler, scheduler=scheduler, steps=3)
        out, _ = custom(m, sampler, scheduler, steps=3)
        assert close(out, expected), (sampler, (out - expected).abs().max())


# -- progress, interrupt, masks, SDXL ----------------------------------------------------------

def test_progress_once_per_step_and_interrupt(sd1):
    from loom.nodeapi import Interrupted, RunContext

    sigmas = BasicScheduler().run(model=sd1.model, scheduler="normal", steps=3)[0]
    events = []
    ctx = RunContext(on_progress=lambda v, t, p=None: events.append((v, t)))
    SamplerCustom(ctx).run(model=sd1.model, add_noise=True, noise_seed=1, cfg=7.0,
                           positive=sd1.pos, negative=sd1.neg,
                           sampler=KSamplerSelect().run("heun")[0], sigmas=sigmas,
                           latent_image=empty())
    assert events == [(1, 3), (2, 3), (3, 3)]  # heun's two evaluations are one step

    import threading

    interrupt = threading.Event()

    def on_progress(value, total, preview=None):
        if value == 1:
            interrupt.set()

    ctx = RunContext(interrupt=interrupt, on_progress=on_progress)
    with pytest.raises(Interrupted):
        SamplerCustom(ctx).run(model=sd1.model, add_noise=True, noise_seed=1, cfg=7.0,
                               positive=sd1.pos, negative=sd1.neg,
                               sampler=KSamplerSelect().run("euler")[0], sigmas=sigmas,
                               latent_image=empty())


@pytest.mark.parametrize("sampler", ["euler_ancestral", "res_multistep"])
def test_noise_mask_keeps_the_unmasked_part(sd1, sampler):
    image = image_latent()["samples"]
    mask = torch.zeros(1, 64, 64)
    mask[:, :, :32] = 1.0  # repaint the left half
    latent = {"samples": image, "noise_mask": mask}
    out, den = custom(sd1, sampler, "karras", denoise=0.8, latent=latent)
    for result in (out, den):
        assert torch.allclose(result[..., 4:], image[..., 4:], atol=1e-5)
        assert (result[..., :4] - image[..., :4]).abs().mean() > 1e-2


def test_sdxl_sampler_custom_equals_ksampler():
    m = sd1_setup("sdxl", family="sdxl")
    expected = ksample(m, sampler_name="euler", scheduler="karras", steps=2)
    out, _ = custom(m, "euler", "karras", steps=2)
    assert close(out, expected), (out - expected).abs().max()


def test_previews_each_step_when_asked(sd1):
    from loom.nodeapi import RunContext

    sigmas = BasicScheduler().run(model=sd1.model, scheduler="karras", steps=3)[0]
    seen = []
    ctx = RunContext(on_progress=lambda v, t, p=None: seen.append((v, t, p)), previews=True)
    SamplerCustom(ctx).run(model=sd1.model, add_noise=True, noise_seed=1, cfg=7.0,
                           positive=sd1.pos, negative=sd1.neg,
                           sampler=KSamplerSelect().run("dpmpp_2m")[0], sigmas=sigmas,
                           latent_image=empty())
    assert [(v, t) for v, t, _ in seen] == [(1, 3), (2, 3), (3, 3)]
    assert all(p is not None and tuple(p.shape) == (8, 8, 3) for _, _, p in seen)


def test_sampler_option_nodes(sd1):
    from nodes.custom_sampling import (
        SamplerDPMPP_2M_SDE,
        SamplerDPMPP_2S_Ancestral,
        SamplerEulerAncestral,
        SamplerLMS,
    )

    sigmas = BasicScheduler().run(model=sd1.model, scheduler="karras", steps=3)[0]
    guider = CFGGuider().run(model=sd1.model, positive=sd1.pos, negative=sd1.neg, cfg=7.0)[0]

    def run(sampler):
        return SamplerCustomAdvanced().run(noise=RandomNoise().run(4)[0], guider=guider,
                                           sampler=sampler, sigmas=sigmas,
                                           latent_image=empty())[0]["samples"]

    default = run(KSamplerSelect().run("euler_ancestral")[0])
    assert torch.equal(run(SamplerEulerAncestral().run(eta=1.0, s_noise=1.0)[0]), default)
    assert not torch.equal(run(SamplerEulerAncestral().run(eta=0.5, s_noise=1.0)[0]), default)
    assert close(run(SamplerEulerAncestral().run(eta=0.0, s_noise=1.0)[0]),
                 run(KSamplerSelect().run("euler")[0]))
    sde = SamplerDPMPP_2M_SDE().run(solver_type="heun", eta=1.0, s_noise=1.0,
                                    noise_device="cpu")[0]
    assert torch.isfinite(run(sde)).all()
    assert torch.isfinite(run(SamplerDPMPP_2S_Ancestral().run(eta=1.0, s_noise=0.5)[0])).all()
    assert torch.equal(run(SamplerLMS().run(order=4)[0]), run(KSamplerSelect().run("lms")[0]))

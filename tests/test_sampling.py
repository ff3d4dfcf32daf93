"""Sampling loop and KSampler nodes on a tiny SD 1.x model: determinism, batches, interrupt,
progress, KSamplerAdvanced hand-over, noise masks, conditioning combine/areas, hooks, and every
offered sampler/scheduler pair."""

from __future__ import annotations

import threading

import pytest
import torch
from sd_fixtures import close, empty, sd1_setup, sd_cpu_only, tiny_pipeline  # noqa: F401  (autouse: CPU/fp32)

from loom.nodeapi import Interrupted, RunContext
from loom.runtime.sampling import (
    SAMPLER_NAMES,
    SCHEDULER_NAMES,
    SamplingHooks,
    sample,
    schedule_window,
    supported_schedulers,
    unsupported_reason,
)
from loom.runtime.sampling.noise import initial_noise, seeded_generator
from loom.runtime.sd.types import DiffusionModel
from nodes.conditioning import ConditioningCombine, ConditioningSetArea
from nodes.latent import LatentFromBatch, RepeatLatentBatch
from nodes.sd_sampling import KSampler, KSamplerAdvanced


class CountingUNet:
    """Counts UNet calls and the rows each got (a forward pre-hook on the real module)."""

    def __init__(self, unet):
        self.calls: list[int] = []
        self.handle = unet.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        self.calls.append(args[0].shape[0])



def ksample(m, latent=None, **kw):
    args = dict(seed=1, steps=3, cfg=7.0, sampler_name="euler", scheduler="normal",
                positive=m.pos, negative=m.neg, latent_image=latent or empty(), denoise=1.0)
    args.update(kw)
    return KSampler().run(model=m.model, **args)[0]["samples"]


# -- names and validation -------------------------------------------------------------------

def test_sampler_and_scheduler_names_follow_comfyui():
    for name in ("euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "dpmpp_2m",
                 "dpmpp_2m_sde", "ddim", "uni_pc", "uni_pc_bh2", "lcm", "ddpm", "deis"):
        assert name in SAMPLER_NAMES
    for name in ("normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform"):
        assert name in SCHEDULER_NAMES
    assert SAMPLER_NAMES[0] == "euler" and SCHEDULER_NAMES[0] == "normal"


def test_unsupported_pairs_get_a_clear_validation_error():
    assert unsupported_reason("euler", "karras") is None
    # diffusers-only solvers run the schedules their scheduler class offers
    reason = unsupported_reason("uni_pc", "kl_optimal")
    assert "uni_pc" in reason and "kl_optimal" in reason and "normal" in reason
    assert "kl_optimal" not in supported_schedulers("uni_pc")
    # Loom's own solvers run every schedule (euler_ancestral + karras has no diffusers class)
    assert "karras" in supported_schedulers("euler_ancestral")
    assert unsupported_reason("ddpm", "karras") is None
    msg = KSampler.validate_inputs(RunContext(), sampler_name="deis", scheduler="linear_quadratic")
    assert msg and "does not support" in msg
    assert KSampler.validate_inputs(RunContext(), sampler_name="dpmpp_2m", scheduler="karras") is None
    assert "not available" in unsupported_reason("no_such_sampler", "normal")


def test_schedule_window_follows_comfyui():
    assert schedule_window(20, 1.0, None, None) == (20, 0, 20)
    assert schedule_window(20, 0.5, None, None) == (40, 20, 40)  # 20 steps of a 40-step schedule
    assert schedule_window(10, 1.0, 3, 7) == (10, 3, 7)
    assert schedule_window(10, 1.0, 0, 10000) == (10, 0, 10)
    # a schedule longer than the training timesteps is capped (diffusers cannot space it)
    assert schedule_window(20, 0.01, None, None, max_total=1000) == (1000, 990, 1000)


def test_tiny_denoise_runs(sd1):
    image = {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))}
    for sampler in ("euler", "ddim"):
        counter = CountingUNet(sd1.model.unet)
        try:
            out = ksample(sd1, latent=image, denoise=0.01, steps=20, cfg=1.0, sampler_name=sampler)
        finally:
            counter.handle.remove()
        assert torch.isfinite(out).all()
        assert len(counter.calls) == 10  # 1% of a (capped) 1000-step schedule


# -- noise ------------------------------------------------------------------------------------

def test_noise_is_per_item_and_batch_index_skips_ahead():
    shape = (3, 4, 9, 7)  # 252 values per item: not a multiple of 16
    full = initial_noise(shape, seeded_generator(5))
    assert full.shape == shape and full.dtype == torch.float32
    second = initial_noise((1, 4, 9, 7), seeded_generator(5), batch_index=[1])
    assert torch.equal(second[0], full[1])
    picked = initial_noise((2, 4, 9, 7), seeded_generator(5), batch_index=[2, 0])
    assert torch.equal(picked[0], full[2]) and torch.equal(picked[1], full[0])
    assert not torch.equal(initial_noise(shape, seeded_generator(6)), full)


# -- determinism --------------------------------------------------------------------------------

def test_same_seed_same_latent_different_seed_different(sd1):
    a = ksample(sd1, seed=123)
    b = ksample(sd1, seed=123)
    c = ksample(sd1, seed=124)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-2
    assert torch.isfinite(a).all()


def test_seed_range_is_u64(sd1):
    out = ksample(sd1, seed=2**64 - 1, steps=1)
    assert torch.isfinite(out).all()


def test_batch_items_equal_single_runs_via_latent_from_batch(sd1):
    batch = ksample(sd1, latent=empty(batch=2), seed=9)
    first = ksample(sd1, latent=LatentFromBatch().run(empty(batch=2), 0, 1)[0], seed=9)
    second = ksample(sd1, latent=LatentFromBatch().run(empty(batch=2), 1, 1)[0], seed=9)
    assert close(batch[0:1], first)
    assert close(batch[1:2], second)
    assert (batch[0] - batch[1]).abs().max() > 1e-2  # items of a batch get different noise
    # RepeatLatentBatch gives later copies new batch positions, hence new noise
    repeated = RepeatLatentBatch().run(LatentFromBatch().run(empty(batch=2), 1, 1)[0], 2)[0]
    assert repeated["batch_index"] == [1, 2]


# -- progress and interrupt -------------------------------------------------------------------

def test_progress_events_once_per_step(sd1):
    events = []
    ctx = RunContext(on_progress=lambda v, t, p=None: events.append((v, t)))
    counter = CountingUNet(sd1.model.unet)
    try:
        KSampler(ctx).run(model=sd1.model, seed=1, steps=4, cfg=7.0, sampler_name="euler",
                          scheduler="normal", positive=sd1.pos, negative=sd1.neg,
                          latent_image=empty())
    finally:
        counter.handle.remove()
    assert events == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert counter.calls == [2, 2, 2, 2]  # one batched cond+uncond call per step


def test_interrupt_stops_within_one_step(sd1):
    interrupt = threading.Event()

    def on_progress(value, total, preview=None):
        if value == 2:
            interrupt.set()

    ctx = RunContext(interrupt=interrupt, on_progress=on_progress)
    counter = CountingUNet(sd1.model.unet)
    try:
        with pytest.raises(Interrupted):
            KSampler(ctx).run(model=sd1.model, seed=1, steps=10, cfg=7.0, sampler_name="euler",
                              scheduler="normal", positive=sd1.pos, negative=sd1.neg,
                              latent_image=empty())
    finally:
        counter.handle.remove()
    assert len(counter.calls) <= 3


def test_cfg_one_skips_the_negative_pass(sd1):
    counter = CountingUNet(sd1.model.unet)
    try:
        ksample(sd1, cfg=1.0, steps=2)
    finally:
        counter.handle.remove()
    assert counter.calls == [1, 1]


# -- denoise and KSamplerAdvanced -------------------------------------------------------------

def test_denoise_zero_returns_input_and_partial_denoise_keeps_the_image(sd1):
    image = {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))}
    assert torch.equal(ksample(sd1, latent=image, denoise=0.0), image["samples"])
    low = ksample(sd1, latent=image, denoise=0.1, steps=2, cfg=1.0)
    high = ksample(sd1, latent=image, denoise=1.0, steps=2, cfg=1.0)
    assert (low - image["samples"]).abs().mean() < (high - image["samples"]).abs().mean()


@pytest.mark.parametrize("sampler", ["euler", "ddim", "heun"])
def test_advanced_hand_over_equals_one_run(sd1, sampler):
    """Steps 0..2 with leftover noise, then 2..5 without adding noise == one 5-step run."""
    common = dict(noise_seed=4, steps=5, cfg=7.0, sampler_name=sampler, scheduler="normal",
                  positive=sd1.pos, negative=sd1.neg)
    full = KSamplerAdvanced().run(model=sd1.model, add_noise="enable", latent_image=empty(),
                                  start_at_step=0, end_at_step=10000,
                                  return_with_leftover_noise="disable", **common)[0]["samples"]
    half = KSamplerAdvanced().run(model=sd1.model, add_noise="enable", latent_image=empty(),
                                  start_at_step=0, end_at_step=2,
                                  return_with_leftover_noise="enable", **common)[0]
    rest = KSamplerAdvanced().run(model=sd1.model, add_noise="disable", latent_image=half,
                                  start_at_step=2, end_at_step=10000,
                                  return_with_leftover_noise="disable", **common)[0]["samples"]
    assert close(rest, full), (rest - full).abs().max()


@pytest.mark.parametrize("sampler", ["euler", "ddim"])
def test_advanced_early_end_without_leftover_noise_is_the_clean_prediction(sd1, sampler):
    """Ending at step 3 of 6 with return_with_leftover_noise=disable returns the model's x0
    estimate at step 3: diffusers' own ``pred_original_sample`` of that step."""
    import diffusers

    common = dict(noise_seed=4, steps=6, cfg=7.0, sampler_name=sampler, scheduler="normal",
                  positive=sd1.pos, negative=sd1.neg, latent_image=empty(), add_noise="enable",
                  start_at_step=0, end_at_step=3)
    clean = KSamplerAdvanced().run(model=sd1.model, return_with_leftover_noise="disable",
                                   **common)[0]["samples"]
    cls = {"euler": diffusers.EulerDiscreteScheduler, "ddim": diffusers.DDIMScheduler}[sampler]
    sched = cls.from_config(sd1.pipe.scheduler.config)
    sched.set_timesteps(6)
    x = initial_noise((1, 4, 8, 8), seeded_generator(4)) * sched.init_noise_sigma
    context = torch.cat([sd1.neg[0][0], sd1.pos[0][0]])
    with torch.no_grad():
        for t in sched.timesteps[:3]:
            x_in = sched.scale_model_input(torch.cat([x] * 2), t)
            uncond, cond = sd1.model.unet(x_in, t, encoder_hidden_states=context).sample.chunk(2)
            result = sched.step(uncond + 7.0 * (cond - uncond), t, x)
            x = result.prev_sample
    expected = result.pred_original_sample / sd1.model.latent_scaling_factor
    assert close(clean, expected), (clean - expected).abs().max()


def test_start_after_end_returns_input(sd1):
    latent = empty()
    out = KSamplerAdvanced().run(model=sd1.model, add_noise="enable", noise_seed=1, steps=4,
                                 cfg=7.0, sampler_name="euler", scheduler="normal",
                                 positive=sd1.pos, negative=sd1.neg, latent_image=latent,
                                 start_at_step=4, end_at_step=10000)[0]
    assert torch.equal(out["samples"], latent["samples"])


# -- noise mask ---------------------------------------------------------------------------------

@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m", "heun"])
def test_noise_mask_keeps_the_unmasked_part(sd1, sampler):
    image = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    mask = torch.zeros(1, 64, 64)
    mask[:, :, :32] = 1.0  # repaint the left half (mask at pixel resolution)
    out = ksample(sd1, latent={"samples": image, "noise_mask": mask}, sampler_name=sampler,
                  denoise=0.8)
    assert torch.allclose(out[..., 4:], image[..., 4:], atol=1e-6)
    assert (out[..., :4] - image[..., :4]).abs().mean() > 1e-2


# -- conditioning -------------------------------------------------------------------------------

def test_combine_of_identical_entries_equals_one_entry(sd1):
    single = ksample(sd1, steps=2)
    combined = ConditioningCombine().run(sd1.pos, sd1.pos)[0]
    assert len(combined) == 2
    both = ksample(sd1, steps=2, positive=combined)
    assert close(single, both)
    mixed = ksample(sd1, steps=2, positive=ConditioningCombine().run(sd1.pos, sd1.other)[0])
    assert (mixed - single).abs().max() > 1e-3


def test_area_conditioning(sd1):
    area = ConditioningSetArea().run(sd1.other, width=32, height=64, x=32, y=0, strength=1.0)[0]
    assert area[0][1]["area"] == (8, 4, 0, 4)
    assert "area" not in sd1.other[0][1]  # the input is not modified
    counter = CountingUNet(sd1.model.unet)
    try:
        out = ksample(sd1, steps=2, positive=ConditioningCombine().run(sd1.pos, area)[0])
    finally:
        counter.handle.remove()
    assert torch.isfinite(out).all()
    assert counter.calls == [2, 1, 2, 1]  # whole-image cond+uncond, then the area crop
    assert (out - ksample(sd1, steps=2)).abs().max() > 1e-3
    # a whole-image "area" is no area at all
    whole = ConditioningSetArea().run(sd1.pos, width=64, height=64, x=0, y=0, strength=1.0)[0]
    assert close(ksample(sd1, steps=2, positive=whole), ksample(sd1, steps=2))


def test_prompts_of_different_lengths_batch_together(sd1):
    long_neg = [[torch.cat([sd1.neg[0][0]] * 2, dim=1), {"pooled_output": None}]]
    counter = CountingUNet(sd1.model.unet)
    try:
        out = ksample(sd1, steps=2, negative=long_neg)
    finally:
        counter.handle.remove()
    assert counter.calls == [2, 2]  # 77 tokens repeated to 154, one call per step
    # repeating every token leaves cross-attention unchanged
    assert close(out, ksample(sd1, steps=2))


# -- hooks ---------------------------------------------------------------------------------------

class ZeroResiduals(SamplingHooks):
    """A ControlNet stand-in: adds (scaled) residuals to the UNet's skip connections."""

    def __init__(self, unet, scale=0.0):
        self.unet, self.scale, self.calls = unet, scale, []

    def unet_kwargs(self, call):
        self.calls.append((call.step, call.sample.shape[0], call.is_uncond))
        x = call.sample
        # residuals shaped like the down-block outputs: run the UNet's encoder half
        with torch.no_grad():
            emb = self.unet.time_embedding(self.unet.time_proj(call.timestep.expand(x.shape[0])))
            h = self.unet.conv_in(x)
            res = [h]
            for block in self.unet.down_blocks:
                if getattr(block, "has_cross_attention", False):
                    h, r = block(h, emb, encoder_hidden_states=call.encoder_hidden_states)
                else:
                    h, r = block(h, emb)
                res.extend(r)
            mid = self.unet.mid_block(h, emb, encoder_hidden_states=call.encoder_hidden_states)
        return {"down_block_additional_residuals": tuple(r * self.scale for r in res),
                "mid_block_additional_residual": mid * self.scale}


class ControlObject:
    def __init__(self, hook):
        self.hook = hook

    def unet_kwargs(self, call):
        return self.hook.unet_kwargs(call)


def test_hooks_add_unet_residuals(sd1):
    plain = sample(sd1.model, sd1.pos, sd1.neg, empty(), seed=1, steps=2, cfg=7.0,
                   sampler_name="euler", scheduler="normal")["samples"]
    zero = ZeroResiduals(sd1.model.unet, 0.0)
    same = sample(sd1.model, sd1.pos, sd1.neg, empty(), seed=1, steps=2, cfg=7.0,
                  sampler_name="euler", scheduler="normal", hooks=[zero])["samples"]
    assert zero.calls == [(0, 2, [True, False]), (1, 2, [True, False])]
    assert close(plain, same)
    strong = ZeroResiduals(sd1.model.unet, 0.5)
    changed = sample(sd1.model, sd1.pos, sd1.neg, empty(), seed=1, steps=2, cfg=7.0,
                     sampler_name="euler", scheduler="normal", hooks=[strong])["samples"]
    assert (changed - plain).abs().max() > 1e-3


def test_control_objects_on_conditioning_entries(sd1):
    hook = ZeroResiduals(sd1.model.unet, 0.5)
    control = ControlObject(hook)
    pos = [[sd1.pos[0][0], {**sd1.pos[0][1], "control": control}]]
    neg = [[sd1.neg[0][0], {**sd1.neg[0][1], "control": control}]]
    counter = CountingUNet(sd1.model.unet)
    try:
        ksample(sd1, steps=1, positive=pos, negative=neg)  # same control: one batched call
        ksample(sd1, steps=1, positive=pos)  # only the positive: two calls
    finally:
        counter.handle.remove()
    assert counter.calls == [2, 1, 1]
    assert [c[2] for c in hook.calls] == [[True, False], [False]]  # the negative has none


# -- every sampler/scheduler pair runs ------------------------------------------------------

@pytest.mark.slow
def test_every_offered_pair_runs(sd1):
    latent = empty()
    for sampler in SAMPLER_NAMES:
        for scheduler in supported_schedulers(sampler):
            out = sample(sd1.model, sd1.pos, sd1.neg, latent, seed=1, steps=2, cfg=5.0,
                         sampler_name=sampler, scheduler=scheduler)["samples"]
            assert torch.isfinite(out).all(), (sampler, scheduler)
            assert out.shape == latent["samples"].shape


def test_each_run_gets_a_scheduler_of_its_own_as_if_freshly_built():
    """Schedulers are copied from one built per configuration: a copy must behave as a new one,
    and a run stepping its copy must not touch the next run's."""
    from loom.runtime.sampling import schedulers

    config = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012}
    first, _, _ = schedulers.make_scheduler(config, "epsilon", "dpm_2", "karras")
    first.set_timesteps(4)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    for t in first.timesteps[:3]:
        x = first.step(torch.ones_like(x), t, x).prev_sample
    second, _, _ = schedulers.make_scheduler(config, "epsilon", "dpm_2", "karras")
    schedulers._PROTOTYPES.clear()
    fresh, _, _ = schedulers.make_scheduler(config, "epsilon", "dpm_2", "karras")
    assert second is not first and second.step_index is None
    assert dict(second.config) == dict(fresh.config)
    for s in (second, fresh):
        s.set_timesteps(4)
    assert torch.equal(second.sigmas, fresh.sigmas) and torch.equal(second.timesteps, fresh.timesteps)


# -- precision -----------------------------------------------------------------------------------

def test_reduced_precision_unet(sd1):
    """A bf16 UNet (as on GPUs) gets inputs in its dtype; the solver stays in float32."""
    import copy

    model16 = DiffusionModel(unet=copy.deepcopy(sd1.model.unet).to(torch.bfloat16), family="sd1",
                             prediction_type="epsilon", scheduler_config=sd1.model.scheduler_config,
                             latent_scaling_factor=sd1.model.latent_scaling_factor)
    ref = ksample(sd1, steps=2)
    out = KSampler().run(model=model16, seed=1, steps=2, cfg=7.0, sampler_name="euler",
                         scheduler="normal", positive=sd1.pos, negative=sd1.neg,
                         latent_image=empty())[0]["samples"]
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert (out - ref).abs().max() < 0.1 * ref.abs().max()


def test_sdxl_combine_and_areas_run():
    xl = sd1_setup("sdxl", family="sdxl")
    model, positive, negative = xl.model, xl.pos, xl.neg
    pos = positive[0][0]
    area = ConditioningSetArea().run(positive, width=32, height=32, x=32, y=32, strength=0.8)[0]
    both = ConditioningCombine().run(positive, area)[0]
    settings = dict(seed=3, steps=2, cfg=6.0, sampler_name="dpmpp_2m", scheduler="karras")
    out = sample(model, both, negative, empty(batch=2), **settings)["samples"]
    assert out.shape == (2, 4, 8, 8) and torch.isfinite(out).all()
    # The area covers the bottom-right 4x4 latent pixels (32 px from 32 px): after one step,
    # outside it the latent is the run's without the area (later steps see across the border);
    # inside it differs.
    settings["steps"] = 1
    out = sample(model, both, negative, empty(batch=2), **settings)["samples"]
    plain = sample(model, positive, negative, empty(batch=2), **settings)["samples"]
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[4:, 4:] = False
    torch.testing.assert_close(out[..., outside], plain[..., outside], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(out[..., 4:, 4:], plain[..., 4:, 4:], atol=1e-3)
    with pytest.raises(ValueError, match="pooled"):
        sample(model, [[pos, {"pooled_output": None}]], negative, empty(), seed=3, steps=1, cfg=6.0,
               sampler_name="euler", scheduler="normal")


def test_noise_mask_with_leftover_noise_keeps_the_original_noised(sd1):
    image = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4] = 1.0
    common = dict(noise_seed=4, steps=6, cfg=7.0, sampler_name="euler", scheduler="normal",
                  positive=sd1.pos, negative=sd1.neg, add_noise="enable", start_at_step=2)
    half = KSamplerAdvanced().run(model=sd1.model, end_at_step=4, return_with_leftover_noise="enable",
                                  latent_image={"samples": image, "noise_mask": mask},
                                  **common)[0]["samples"]
    # unmasked: the original plus the run's noise at the level of step 4
    import diffusers

    sched = diffusers.EulerDiscreteScheduler.from_config(sd1.pipe.scheduler.config)
    sched.set_timesteps(6)
    noise = initial_noise((1, 4, 8, 8), seeded_generator(4))
    expected = image + noise * float(sched.sigmas[4]) / sd1.model.latent_scaling_factor
    assert torch.allclose(half[..., 4:], expected[..., 4:], atol=1e-4)


def test_latent_to_rgb_projection_recovers_a_colour():
    """A latent made to project to a known colour comes back as that colour, per family."""
    from loom.runtime.sampling.preview import LATENT_RGB, latent_to_rgb

    colour = torch.tensor([0.8, 0.3, 0.1])
    for family, (factors, bias) in LATENT_RGB.items():
        f = torch.tensor(factors)  # [4, 3]
        target = colour * 2 - 1 - torch.tensor(bias)
        channels = torch.linalg.pinv(f.T) @ target  # a latent pixel that maps onto it
        latent = channels[:, None, None].expand(4, 5, 7)
        rgb = latent_to_rgb(latent, family)
        assert rgb.shape == (5, 7, 3)
        assert torch.allclose(rgb[2, 3], colour, atol=1e-5), family
    assert latent_to_rgb(torch.zeros(4, 2, 2), "unknown") is None
    assert latent_to_rgb(torch.zeros(16, 2, 2), "sd1") is None

"""The sampling hooks' lifecycle and the ControlNet run's clean-up, in both loops (KSampler's
diffusers-scheduler loop and the sigma loop of Loom's own solvers): models loaded with the UNet
before the loop, setup/teardown around it also on interrupt and error, kwargs that stack, and
the UNet and model manager as they were afterwards."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from control_fixtures import tiny_controlnet
from sd_fixtures import sd1_setup, sd_cpu_only, tiny_pipeline  # noqa: F401  (autouse: CPU/fp32)

from loom.nodeapi import Interrupted
from loom.runtime.control import Control, ControlModel, apply_control
from loom.runtime.devices import DevicePolicy
from loom.runtime.model_manager import ModelManager
from loom.runtime.sampling import SamplingHooks, sample
from loom.runtime.sampling.hooks import merge_unet_kwargs
from loom.runtime.sd.types import DiffusionModel

CPU = DevicePolicy(torch.device("cpu"), torch.float32, torch.float32)
# euler runs on a diffusers scheduler, res_multistep on Loom's sigma loop
LOOPS = ["euler", "res_multistep"]


@pytest.fixture(scope="module")
def sd1():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    m = sd1_setup()
    m.net = ControlModel(module=tiny_controlnet("sd1", seed=5), kind="controlnet", family="sd1")
    m.image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    yield m
    torch.set_num_threads(before)


def run(m, *, sampler="euler", positive=None, negative=None, manager=None, **kw):
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    return sample(m.model, positive or m.pos, negative or m.neg, latent, seed=3, steps=3,
                  cfg=7.0, sampler_name=sampler, scheduler="normal",
                  models=manager or ModelManager(CPU), **kw)["samples"]


def unet_snapshot(unet):
    return ({k: v.clone() for k, v in unet.state_dict().items()},
            dict(unet.attn_processors), len(unet._forward_hooks), len(unet._forward_pre_hooks))


def assert_unet_as_before(unet, snap):
    weights, processors, hooks, pre_hooks = snap
    now = unet.state_dict()
    assert all(torch.equal(now[k], v) for k, v in weights.items())
    assert all(unet.attn_processors[k] is p for k, p in processors.items())
    assert (len(unet._forward_hooks), len(unet._forward_pre_hooks)) == (hooks, pre_hooks)


class Recorder(SamplingHooks):
    """Records its lifecycle; checks that what it needs is loaded, with the UNet, at setup."""

    def __init__(self, manager, unet, fail_at_step=None, extra=None):
        self.module = torch.nn.Linear(2, 2)
        self.manager, self.unet, self.fail_at_step, self.extra = manager, unet, fail_at_step, extra
        self.events = []

    def models(self):
        return (self.module,)

    def setup(self, state):
        in_use = self.manager._in_use
        self.events.append(("setup", id(self.module) in in_use, id(self.unet) in in_use))
        state.extras[self] = "prepared"

    def unet_kwargs(self, call):
        assert call.state.extras[self] == "prepared"
        self.events.append(("call", call.step))
        if call.step == self.fail_at_step:
            raise RuntimeError("hook failed")
        return self.extra

    def teardown(self, state):
        self.events.append(("teardown", state.extras.pop(self)))


@pytest.mark.parametrize("sampler", LOOPS)
def test_hook_models_load_with_the_unet_and_teardown_follows_setup(sd1, sampler):
    manager = ModelManager(CPU)
    hook = Recorder(manager, sd1.model.unet)
    run(sd1, sampler=sampler, manager=manager, hooks=[hook])
    assert hook.events[0] == ("setup", True, True)
    assert hook.events[-1] == ("teardown", "prepared")
    assert [e for e in hook.events if e[0] == "call"]
    assert not manager._in_use


@pytest.mark.parametrize("sampler", LOOPS)
def test_teardown_runs_on_interrupt_and_on_error(sd1, sampler):
    manager = ModelManager(CPU)
    hook = Recorder(manager, sd1.model.unet)

    def interrupt(done, total, *_):
        if done == 1:
            raise Interrupted()

    with pytest.raises(Interrupted):
        run(sd1, sampler=sampler, manager=manager, hooks=[hook], callback=interrupt)
    assert hook.events[-1] == ("teardown", "prepared") and not manager._in_use

    failing = Recorder(manager, sd1.model.unet, fail_at_step=1)
    with pytest.raises(RuntimeError, match="hook failed"):
        run(sd1, sampler=sampler, manager=manager, hooks=[failing])
    assert failing.events[-1] == ("teardown", "prepared") and not manager._in_use


class RecordingProcessor:
    """An attention processor that records the cross_attention_kwargs it gets."""

    def __init__(self, inner, seen):
        self.inner, self.seen = inner, seen

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, a=None, b=None):  # diffusers passes the kwargs a processor names
        self.seen.append({"a": a, "b": b})
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


class AttentionKwargs(SamplingHooks):
    """Installs recording processors for the run (undone in teardown) and adds kwargs."""

    def __init__(self, unet, kwargs, install=False):
        self.unet, self.kwargs, self.install, self.seen = unet, kwargs, install, []

    def setup(self, state):
        if self.install:
            state.extras[self] = dict(self.unet.attn_processors)
            self.unet.set_attn_processor({k: RecordingProcessor(p, self.seen)
                                          for k, p in state.extras[self].items()})

    def teardown(self, state):
        if self.install:
            self.unet.set_attn_processor(state.extras.pop(self))

    def unet_kwargs(self, call):
        return {"cross_attention_kwargs": dict(self.kwargs)}


@pytest.mark.parametrize("sampler", LOOPS)
def test_hooks_stack_cross_attention_kwargs_and_undo_their_changes(sd1, sampler):
    snap = unet_snapshot(sd1.model.unet)
    first = AttentionKwargs(sd1.model.unet, {"a": 1}, install=True)
    second = AttentionKwargs(sd1.model.unet, {"b": 2})
    run(sd1, sampler=sampler, hooks=[first, second])
    assert first.seen and all(kw == {"a": 1, "b": 2} for kw in first.seen)
    assert_unet_as_before(sd1.model.unet, snap)


def test_added_cond_kwargs_merge_into_a_copy_and_sum():
    base = {"text_embeds": torch.ones(2, 3), "time_ids": torch.zeros(2, 6)}
    kwargs = {"added_cond_kwargs": base}
    merge_unet_kwargs(kwargs, {"added_cond_kwargs": {"text_embeds": torch.ones(2, 3),
                                                     "image_embeds": torch.ones(2, 4)}})
    merge_unet_kwargs(kwargs, {"added_cond_kwargs": {"text_embeds": torch.ones(2, 3)}})
    assert torch.equal(kwargs["added_cond_kwargs"]["text_embeds"], torch.full((2, 3), 3.0))
    assert set(kwargs["added_cond_kwargs"]) == {"text_embeds", "time_ids", "image_embeds"}
    assert set(base) == {"text_embeds", "time_ids"} and torch.equal(base["text_embeds"],
                                                                   torch.ones(2, 3))
    with pytest.raises(TypeError, match="cannot combine"):
        merge_unet_kwargs({"cross_attention_kwargs": {"scale": 0.5}},
                          {"cross_attention_kwargs": {"scale": 0.7}})


# -- a ControlNet run that stops early ----------------------------------------------------------

@pytest.mark.parametrize("sampler", LOOPS)
@pytest.mark.parametrize("stop", ["interrupt", "error"])
def test_controlnet_run_stopped_leaves_unet_and_manager_clean(sd1, sampler, stop):
    manager = ModelManager(CPU)
    made: dict = {}
    pos = apply_control(sd1.pos, sd1.net, sd1.image, 0.8, made=made)
    neg = apply_control(sd1.neg, sd1.net, sd1.image, 0.8, made=made)
    control = pos[0][1]["control"]
    fresh = run(sd1, sampler=sampler, positive=pos, negative=neg)
    snap = unet_snapshot(sd1.model.unet)
    net_snap = {k: v.clone() for k, v in sd1.net.module.state_dict().items()}
    calls = []

    def fail(module, args):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("ControlNet failed")

    def interrupt(done, total, *_):
        if done == 1:
            raise Interrupted()

    handle = sd1.net.module.register_forward_pre_hook(fail) if stop == "error" else None
    try:
        with pytest.raises(RuntimeError if stop == "error" else Interrupted):
            run(sd1, sampler=sampler, positive=pos, negative=neg, manager=manager,
                callback=interrupt if stop == "interrupt" else None)
    finally:
        if handle is not None:
            handle.remove()
    assert_unet_as_before(sd1.model.unet, snap)
    assert all(torch.equal(v, sd1.net.module.state_dict()[k]) for k, v in net_snap.items())
    assert not manager._in_use
    assert {id(m) for m in manager.resident()} <= {id(sd1.model.unet), id(sd1.net.module)}
    assert isinstance(control, Control) and control.previous is None
    # the same manager and the same (cached) conditioning run again as if nothing happened
    again = run(sd1, sampler=sampler, positive=pos, negative=neg, manager=manager)
    assert torch.equal(again, fresh)


@pytest.mark.parametrize("sampler", LOOPS)
def test_controlnet_in_both_loops_changes_the_result(sd1, sampler):
    made: dict = {}
    pos = apply_control(sd1.pos, sd1.net, sd1.image, 1.0, made=made)
    neg = apply_control(sd1.neg, sd1.net, sd1.image, 1.0, made=made)
    plain = run(sd1, sampler=sampler)
    controlled = run(sd1, sampler=sampler, positive=pos, negative=neg)
    off = run(sd1, sampler=sampler, positive=apply_control(sd1.pos, sd1.net, sd1.image, 1.0,
                                                           start_percent=1.0),
              negative=sd1.neg)
    assert (controlled - plain).abs().max() > 0.01 * plain.abs().max()
    # active on no step: no control (the positive then runs in its own UNet call, so equal up
    # to float rounding of a batch of 1 vs 2)
    assert (off - plain).abs().max() <= 1e-5 * plain.abs().max()


def test_custom_sampling_with_controlnet_equals_ksampler(sd1):
    """SamplerCustom's loop (Loom's euler on the normal schedule's sigmas) adds the same
    residuals at the same steps as KSampler's diffusers loop: the same latents."""
    from loom.runtime.sampling import CFG, Noise, SamplingRequest, sample_sigmas
    from loom.runtime.sampling.sigmas import schedule_sigmas

    made: dict = {}
    pos = apply_control(sd1.pos, sd1.net, sd1.image, 0.9, 0.0, 0.67, made=made)
    neg = apply_control(sd1.neg, sd1.net, sd1.image, 0.9, 0.0, 0.67, made=made)
    ksampler = run(sd1, positive=pos, negative=neg)
    request = SamplingRequest(guider=CFG(sd1.model, positive=pos, negative=neg, cfg=7.0),
                              latent={"samples": torch.zeros(1, 4, 8, 8)}, solver="euler",
                              sigmas=schedule_sigmas(sd1.model, "normal", 3), noise=Noise(3))
    custom = sample_sigmas(request, ModelManager(CPU))[0]["samples"]
    assert (custom - ksampler).abs().max() <= 1e-4 * ksampler.abs().max()
    assert (ksampler - run(sd1)).abs().max() > 0.01 * ksampler.abs().max()


class AddedCond(SamplingHooks):
    """Adds to SDXL's pooled text embedding through ``added_cond_kwargs``."""

    def __init__(self, delta):
        self.delta, self.seen = delta, []

    def unet_kwargs(self, call):
        self.seen.append(call.added_cond_kwargs)
        return {"added_cond_kwargs": {"text_embeds": self.delta}}


@pytest.mark.parametrize("sampler", LOOPS)
def test_hooks_add_to_added_cond_kwargs_without_changing_the_conditioning(sampler):
    pipe = tiny_pipeline("sdxl")
    model = DiffusionModel(unet=pipe.unet, family="sdxl", prediction_type="epsilon",
                           scheduler_config=dict(pipe.scheduler.config),
                           latent_scaling_factor=pipe.vae.config.scaling_factor)
    with torch.no_grad():
        pos, neg, pooled, neg_pooled = pipe.encode_prompt("a cat", device="cpu",
                                                          do_classifier_free_guidance=True,
                                                          negative_prompt="blurry")
    m = SimpleNamespace(model=model, pos=[[pos, {"pooled_output": pooled}]],
                        neg=[[neg, {"pooled_output": neg_pooled}]])
    plain = run(m, sampler=sampler)
    zero, half = AddedCond(torch.zeros(1)), AddedCond(torch.full((1,), 0.5))
    assert torch.equal(run(m, sampler=sampler, hooks=[zero]), plain)
    once = run(m, sampler=sampler, hooks=[half])
    twice = run(m, sampler=sampler, hooks=[half, half])  # stacked: +1.0 in all
    assert (once - plain).abs().max() > 1e-3 * plain.abs().max()
    assert not torch.equal(once, twice)
    # what the hooks saw was the conditioning's own, never changed by the sums
    assert all(torch.equal(s["text_embeds"], half.seen[0]["text_embeds"]) for s in half.seen)
    assert torch.equal(m.pos[0][1]["pooled_output"], pooled)

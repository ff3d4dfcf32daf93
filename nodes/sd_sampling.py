"""KSampler and KSamplerAdvanced: ComfyUI's sampler nodes on Loom's sampling loop.

Class names, input names, defaults and outputs are ComfyUI's, so saved workflows run unchanged.
The work is done by :func:`loom.runtime.sampling.sample`; see it for the semantics of
``denoise``, start/end steps, noise and seeds.
"""

from __future__ import annotations

from loom.nodeapi import (
    SEED_MAX,
    Allocation,
    Combo,
    Float,
    Int,
    Link,
    ModelUse,
    Node,
    Output,
    RunContext,
    fraction,
)
from loom.runtime.model_manager import ModelManager
from loom.runtime.sampling import SAMPLER_NAMES, SCHEDULER_NAMES, sample, unsupported_reason


def _sampler_inputs() -> dict:
    return {
        "steps": Int(20, min=1, max=10000, tooltip="Number of denoising steps."),
        "cfg": Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01,
                     tooltip="Classifier-free guidance scale; 1 skips the negative prompt."),
        "sampler_name": Combo(SAMPLER_NAMES, default=SAMPLER_NAMES[0],
                              tooltip="The solver (a diffusers scheduler where one matches, "
                                      "else Loom's own)."),
        "scheduler": Combo(SCHEDULER_NAMES, default=SCHEDULER_NAMES[0],
                           tooltip="How the noise levels of the steps are spaced."),
        "positive": Link("CONDITIONING", tooltip="What the image should show."),
        "negative": Link("CONDITIONING", tooltip="What the image should not show."),
        "latent_image": Link("LATENT", tooltip="The latent to denoise (Empty Latent Image for "
                                                "txt2img, a VAE-encoded image for img2img)."),
    }


def warm_up() -> None:
    """Import diffusers' schedulers at start-up (the validation of every KSampler needs them)."""
    from loom.runtime.sampling.schedulers import preload

    preload()


def _check_pair(inputs: dict) -> str | None:
    sampler, scheduler = inputs.get("sampler_name"), inputs.get("scheduler")
    if sampler is None or scheduler is None:  # linked from another node: checked at run time
        return None
    return unsupported_reason(sampler, scheduler)


def _models(ctx: RunContext | None) -> ModelManager | None:
    return ctx.models if ctx is not None else None


def sampler_use(ctx, model, conditionings: list, latent_image, sides: int) -> ModelUse:
    """The UNet, what its hooks and the conditionings' ControlNets run, and a sampling step's
    activations (``sides``: the conditionings evaluated per step, 2 with CFG)."""
    from loom.runtime.sampling.hooks import controls_of, models_of
    from loom.runtime.sd.common import manager_of
    from loom.runtime.working_memory import unet_bytes

    controls = controls_of(conditionings)
    extras = models_of([*model.options.get("sampling_hooks", ()), *controls])
    samples = latent_image.get("samples") if isinstance(latent_image, dict) else None
    shape = tuple(samples.shape) if samples is not None else ()
    size = manager_of(ctx).policy.dtype.itemsize
    working = unet_bytes(model.family, shape, sides=sides, element_size=size, controls=len(controls))
    return ModelUse(models=(model, *extras), working_bytes=working)


class _Sampler(Node):
    """What both KSamplers share: the sampler/scheduler pair checked before the run, the output
    latent allocated like the input, the models and memory declared to the model manager."""

    @classmethod
    def validate_inputs(cls, ctx, **inputs):
        return _check_pair(inputs)

    @classmethod
    def allocation(cls, ctx, latent_image=None, **_):
        return Allocation((latent_image,)) if latent_image else None  # same shape as its input

    def uses(self, model, positive, negative, latent_image, cfg, **_):
        return sampler_use(self.ctx, model, [positive, negative], latent_image, 1 if cfg == 1.0 else 2)


class KSampler(_Sampler, category="sampling", display_name="KSampler"):
    """Denoises a latent with a model, guided by positive and negative conditioning."""
    inputs = {
        "model": Link("MODEL"),
        "seed": Int(0, min=0, max=SEED_MAX, control_after_generate=True,
                    tooltip="The seed of the initial noise (and of ancestral/SDE solvers)."),
        **_sampler_inputs(),
        "denoise": fraction(1.0, tooltip="How much of the schedule to run: below 1 keeps part of the "
                                         "input latent (img2img)."),
    }
    outputs = (Output("LATENT"),)

    def run(self, model, seed, steps, cfg, sampler_name, scheduler, positive, negative,
            latent_image, denoise=1.0):
        out = sample(model, positive, negative, latent_image, seed=seed, steps=steps, cfg=cfg,
                     sampler_name=sampler_name, scheduler=scheduler, denoise=denoise,
                     callback=self.ctx.progress, models=_models(self.ctx),
                     previews=_previews(self.ctx))
        return (out,)


class KSamplerAdvanced(_Sampler, category="sampling", display_name="KSampler (Advanced)"):
    """KSampler with control over the noise and the part of the schedule that runs (for base/refiner
    chains)."""
    inputs = {
        "model": Link("MODEL"),
        "add_noise": Combo(["enable", "disable"], default="enable"),
        "noise_seed": Int(0, min=0, max=SEED_MAX, control_after_generate=True),
        **_sampler_inputs(),
        "start_at_step": Int(0, min=0, max=10000),
        "end_at_step": Int(10000, min=0, max=10000),
        "return_with_leftover_noise": Combo(["disable", "enable"], default="disable"),
    }
    outputs = (Output("LATENT"),)

    def run(self, model, add_noise, noise_seed, steps, cfg, sampler_name, scheduler, positive,
            negative, latent_image, start_at_step=0, end_at_step=10000,
            return_with_leftover_noise="disable"):
        out = sample(model, positive, negative, latent_image, seed=noise_seed, steps=steps,
                     cfg=cfg, sampler_name=sampler_name, scheduler=scheduler,
                     start_step=start_at_step, end_step=end_at_step,
                     add_noise=add_noise == "enable",
                     force_full_denoise=return_with_leftover_noise == "disable",
                     callback=self.ctx.progress, models=_models(self.ctx),
                     previews=_previews(self.ctx))
        return (out,)


NODES = [KSampler, KSamplerAdvanced]


def _previews(ctx: RunContext | None) -> bool:
    """Step previews only when someone will see them (the server decides per prompt)."""
    return ctx is not None and ctx.previews

"""Parity with diffusers, through a Loom graph.

A Loom prompt (CheckpointLoaderSimple -> CLIPTextEncode x2 -> EmptyLatentImage / VAEEncode ->
KSampler -> VAEDecode) is executed by the engine on a tiny single-file checkpoint; the reference
is diffusers' ``StableDiffusion(XL)Pipeline`` / ``…Img2ImgPipeline`` built independently from the
same weights, with the same scheduler, steps, cfg and noise. fp32 on the CPU; the acceptance bar
is 1e-4 (max abs difference of the decoded images, 0..1).

"Same noise": Loom draws the initial noise from ``torch.Generator("cpu").manual_seed(seed)``
and continues that generator for ancestral/SDE steps; the reference draws the same initial
noise from such a generator, passes it as ``latents`` (diffusers multiplies it by
``init_noise_sigma``, as Loom does) and passes the advanced generator for the steps. For
img2img, the reference gets the image already VAE-encoded (4-channel ``image``), so its generator
is only used for the noise, as Loom's.

Loom's ``KSampler(steps=S, denoise=d)`` runs the last S steps of an ``int(S/d)``-step schedule
(ComfyUI's semantics), i.e. diffusers' img2img with ``num_inference_steps=int(S/d)`` and
``strength=d``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sd_fixtures import sd_cpu_only, sd_files, tiny_pipeline  # noqa: F401  (fixtures)

from loom.config import REPO_ROOT
from loom.engine.executor import Executor
from loom.engine.validate import validate_prompt
from loom.nodeapi import Node, NodeRegistry, Output, RunContext
from loom.nodeapi.capture import capture_node
from loom.nodeapi.loader import load_packs
from loom.paths import Folders

TOL = 1e-4
SEED = 1234
POSITIVE = "a photo of a cat on a sofa"
NEGATIVE = "blurry, low quality"


ParityCapture = capture_node("ParityCapture", always_run=False, latent="LATENT", image="IMAGE")


class ParityImage(Node):
    """Test source node: a fixed IMAGE."""

    inputs = {}
    outputs = (Output("IMAGE"),)
    image = None

    def run(self):
        return (ParityImage.image,)


def _schedulers(config):
    import diffusers

    return {
        "euler": lambda: diffusers.EulerDiscreteScheduler.from_config(config),
        "euler_ancestral": lambda: diffusers.EulerAncestralDiscreteScheduler.from_config(config),
        "dpmpp_2m_karras": lambda: diffusers.DPMSolverMultistepScheduler.from_config(
            config, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True),
        # a latent-diffusion DDIM never clips x0 (SD configs say so; the tiny SDXL's omits it)
        "ddim": lambda: diffusers.DDIMScheduler.from_config(
            config, clip_sample=False, set_alpha_to_one=False),
        "uni_pc": lambda: diffusers.UniPCMultistepScheduler.from_config(
            config, solver_type="bh1", final_sigmas_type="sigma_min"),
        "lms": lambda: diffusers.LMSDiscreteScheduler.from_config(config),
        "dpmpp_sde": lambda: diffusers.DPMSolverSDEScheduler.from_config(
            config, noise_sampler_seed=SEED),
        "dpmpp_3m_sde": lambda: diffusers.DPMSolverMultistepScheduler.from_config(
            config, algorithm_type="sde-dpmsolver++", solver_order=3),
    }


LOOM_NAMES = {"euler": ("euler", "normal"), "euler_ancestral": ("euler_ancestral", "normal"),
              "dpmpp_2m_karras": ("dpmpp_2m", "karras"), "ddim": ("ddim", "normal"),
              "uni_pc": ("uni_pc", "normal"), "lms": ("lms", "normal"),
              "dpmpp_sde": ("dpmpp_sde", "normal"), "dpmpp_3m_sde": ("dpmpp_3m_sde", "normal")}
CASES = ["euler", "euler_ancestral", "dpmpp_2m_karras", "ddim", "uni_pc"]
# More samplers, SD 1.x only: lms (needs scipy), dpmpp_sde (torchsde), dpmpp_3m_sde.
EXTRA_CASES = ["lms", "dpmpp_sde", "dpmpp_3m_sde"]


class Env:
    """A Loom installation with one tiny checkpoint, and the diffusers reference pipeline."""

    def __init__(self, family, folders, ckpt):
        self.family, self.folders, self.ckpt = family, folders, ckpt
        self.registry = NodeRegistry()
        load_packs(self.registry, REPO_ROOT / "nodes", builtin=True)
        self.registry.register("ParityCapture", ParityCapture, "tests")
        self.registry.register("ParityImage", ParityImage, "tests")
        self.executor = Executor(paths=folders)
        self.pipe = tiny_pipeline(family)
        self.runs = 0

    def run(self, sampler, *, steps, cfg, seed=SEED, denoise=1.0, batch=1, image=None,
            executor=None):
        sampler_name, scheduler = LOOM_NAMES[sampler]
        prompt = {
            "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": self.ckpt}},
            "2": {"class_type": "CLIPTextEncode", "inputs": {"text": POSITIVE, "clip": ["1", 1]}},
            "3": {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": ["1", 1]}},
            "5": {"class_type": "KSampler", "inputs": {
                "model": ["1", 0], "seed": seed, "steps": steps, "cfg": cfg,
                "sampler_name": sampler_name, "scheduler": scheduler, "positive": ["2", 0],
                "negative": ["3", 0], "latent_image": ["4", 0], "denoise": denoise}},
            "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
            "7": {"class_type": "ParityCapture", "inputs": {"latent": ["5", 0], "image": ["6", 0]}},
        }
        if image is None:
            prompt["4"] = {"class_type": "EmptyLatentImage",
                           "inputs": {"width": 64, "height": 64, "batch_size": batch}}
        else:
            ParityImage.image = image
            prompt["8"] = {"class_type": "ParityImage", "inputs": {}}
            prompt["4"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["8", 0], "vae": ["1", 2]}}
        ctx = RunContext(paths=self.folders)
        self.runs += 1
        pid = f"{self.family}-{self.runs}"
        result = (executor or self.executor).execute(validate_prompt(prompt, self.registry, ctx), pid)
        assert result.status == "success", result.error
        seen = ParityCapture.take(pid)
        latent, decoded = seen["latent"], seen["image"]
        return latent["samples"], decoded

    def reference(self, sampler, *, steps, cfg, seed=SEED, batch=1, image=None, strength=None):
        from diffusers import (
            StableDiffusionImg2ImgPipeline,
            StableDiffusionXLImg2ImgPipeline,
        )

        pipe = self.pipe
        out = []
        for output_type in ("latent", "np"):  # two runs, each from a fresh generator
            generator = torch.Generator("cpu").manual_seed(seed)
            kwargs = dict(prompt=POSITIVE, negative_prompt=NEGATIVE, num_inference_steps=steps,
                          guidance_scale=cfg, num_images_per_prompt=batch, generator=generator,
                          output_type=output_type)
            if image is None:
                ref = _pipeline(type(pipe), pipe, sampler)
                noise = torch.randn((batch, 4, 8, 8), generator=generator)
                out.append(ref(latents=noise, height=64, width=64, **kwargs).images)
            else:
                cls = (StableDiffusionXLImg2ImgPipeline if self.family == "sdxl"
                       else StableDiffusionImg2ImgPipeline)
                ref = _pipeline(cls, pipe, sampler)
                with torch.no_grad():
                    pixels = image.permute(0, 3, 1, 2) * 2 - 1
                    latents = pipe.vae.encode(pixels).latent_dist.mode() * pipe.vae.config.scaling_factor
                out.append(ref(image=latents, strength=strength, **kwargs).images)
        latents, images = out
        return latents / pipe.vae.config.scaling_factor, torch.from_numpy(np.asarray(images))


def _pipeline(cls, pipe, sampler):
    """A ``cls`` pipeline sharing ``pipe``'s modules, with a fresh scheduler for ``sampler``."""
    import inspect

    names = set(inspect.signature(cls.__init__).parameters)
    parts = {k: v for k, v in pipe.components.items() if k in names}
    parts["scheduler"] = _schedulers(pipe.scheduler.config)[sampler]()
    ref = cls(**parts)
    ref.set_progress_bar_config(disable=True)
    return ref


@pytest.fixture(scope="module")
def envs(sd_files, tmp_path_factory):  # noqa: F811
    made = {}

    def get(family):
        if family not in made:
            folders = Folders.under(tmp_path_factory.mktemp(f"loom-{family}"))
            folders.create()
            name = f"tiny-{family}.safetensors"
            (folders.model_folder("checkpoints") / name).write_bytes(sd_files(family).read_bytes())
            made[family] = Env(family, folders, name)
        return made[family]

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is faster, and steady on a busy machine
    yield get
    torch.set_num_threads(before)


def _report(what, latents, ref_latents, images, ref_images):
    lat = (latents - ref_latents).abs().max().item()
    img = (images - ref_images).abs().max().item()
    print(f"\nparity {what}: max|Δimage| = {img:.3g}, max|Δlatent| = {lat:.3g} "
          f"(latent scale {ref_latents.abs().max().item():.3g})")
    return lat, img


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
@pytest.mark.parametrize("sampler", CASES)
def test_txt2img_matches_diffusers(envs, family, sampler):
    env = envs(family)
    latents, images = env.run(sampler, steps=3, cfg=7.5)
    ref_latents, ref_images = env.reference(sampler, steps=3, cfg=7.5)
    assert images.shape == ref_images.shape == (1, 64, 64, 3)
    lat, img = _report(f"{family} txt2img {sampler}", latents, ref_latents, images, ref_images)
    assert img <= TOL
    assert lat <= TOL * max(1.0, ref_latents.abs().max().item())


@pytest.mark.parametrize("sampler", EXTRA_CASES)
def test_more_samplers_match_diffusers(envs, sampler):
    env = envs("sd1")
    latents, images = env.run(sampler, steps=3, cfg=7.5)
    ref_latents, ref_images = env.reference(sampler, steps=3, cfg=7.5)
    lat, img = _report(f"sd1 txt2img {sampler}", latents, ref_latents, images, ref_images)
    assert img <= TOL
    assert lat <= TOL * max(1.0, ref_latents.abs().max().item())
    again, _ = env.run(sampler, steps=3, cfg=7.5, executor=Executor(paths=env.folders))
    assert torch.equal(again, latents)  # same seed, fresh cache: the very same latents


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
@pytest.mark.parametrize("sampler", CASES)
def test_img2img_matches_diffusers(envs, family, sampler):
    env = envs(family)
    gen = torch.Generator().manual_seed(7)
    image = torch.rand((1, 64, 64, 3), generator=gen)
    latents, images = env.run(sampler, steps=2, cfg=6.0, denoise=0.5, image=image)
    ref_latents, ref_images = env.reference(sampler, steps=4, cfg=6.0, image=image, strength=0.5)
    lat, img = _report(f"{family} img2img {sampler}", latents, ref_latents, images, ref_images)
    assert img <= TOL
    assert lat <= TOL * max(1.0, ref_latents.abs().max().item())


def test_batch_of_two_matches_diffusers(envs):
    env = envs("sd1")
    latents, images = env.run("euler_ancestral", steps=3, cfg=7.5, batch=2)
    ref_latents, ref_images = env.reference("euler_ancestral", steps=3, cfg=7.5, batch=2)
    _, img = _report("sd1 txt2img batch 2 euler_ancestral", latents, ref_latents, images, ref_images)
    assert img <= TOL


def test_v_prediction_model_matches_diffusers(envs):
    env = envs("sd2v")
    assert env.pipe.scheduler.config.prediction_type == "v_prediction"
    for sampler in ("euler", "dpmpp_2m_karras"):
        latents, images = env.run(sampler, steps=3, cfg=7.5)
        ref_latents, ref_images = env.reference(sampler, steps=3, cfg=7.5)
        _, img = _report(f"sd2v txt2img {sampler}", latents, ref_latents, images, ref_images)
        assert img <= TOL


def test_same_seed_same_pixels_different_seed_different_pixels(envs):
    env = envs("sd1")
    first = env.run("euler", steps=2, cfg=7.5, seed=5, executor=Executor(paths=env.folders))[1]
    again = env.run("euler", steps=2, cfg=7.5, seed=5, executor=Executor(paths=env.folders))[1]
    other = env.run("euler", steps=2, cfg=7.5, seed=6, executor=Executor(paths=env.folders))[1]
    assert torch.equal(first, again)
    assert (first - other).abs().max() > 1e-3


@pytest.fixture(scope="module")
def inpaint_pipe(envs):
    """A tiny SD 1.x inpainting pipeline: the sd1 components with a 9-channel UNet."""
    from diffusers import StableDiffusionInpaintPipeline, UNet2DConditionModel

    base = envs("sd1").pipe
    torch.manual_seed(3)
    unet = UNet2DConditionModel(**{**dict(base.unet.config), "in_channels": 9}).eval()
    parts = {k: v for k, v in base.components.items() if k != "unet"}
    return StableDiffusionInpaintPipeline(**{**parts, "unet": unet})


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m_karras"])
def test_inpainting_unet_matches_diffusers(inpaint_pipe, sampler):
    """The 9-channel input layout [sample, mask, masked-image latents]."""
    from loom.runtime.sampling import InpaintConcatHook, sample
    from loom.runtime.sd.types import DiffusionModel

    pipe = inpaint_pipe
    scale = pipe.vae.config.scaling_factor
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 1:5] = 1.0
    masked = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2)) * scale
    with torch.no_grad():
        pos, neg = pipe.encode_prompt(POSITIVE, "cpu", 1, True, NEGATIVE)
    model = DiffusionModel(unet=pipe.unet, family="sd1", prediction_type="epsilon",
                           scheduler_config=dict(pipe.scheduler.config), latent_scaling_factor=scale)
    loom_name, schedule = LOOM_NAMES[sampler]
    out = sample(model, [[pos, {}]], [[neg, {}]], {"samples": torch.zeros(1, 4, 8, 8)}, seed=SEED,
                 steps=3, cfg=7.5, sampler_name=loom_name, scheduler=schedule,
                 hooks=[InpaintConcatHook(mask, masked)])["samples"]
    ref = _pipeline(type(pipe), pipe, sampler)(
        prompt_embeds=pos, negative_prompt_embeds=neg, image=torch.zeros(1, 3, 64, 64),
        mask_image=torch.nn.functional.interpolate(mask, scale_factor=8.0),
        masked_image_latents=masked, height=64, width=64, num_inference_steps=3,
        guidance_scale=7.5, generator=torch.Generator("cpu").manual_seed(SEED),
        output_type="latent").images / scale
    diff = (out - ref).abs().max().item()
    print(f"\nparity sd1 inpainting UNet {sampler}: max|Δlatent| = {diff:.3g}")
    assert diff <= TOL * max(1.0, ref.abs().max().item())


def test_inpainting_unet_through_ksampler_keeps_the_unmasked_part(inpaint_pipe):
    from loom.runtime.sd.types import DiffusionModel
    from nodes.sd_sampling import KSampler

    pipe = inpaint_pipe
    with torch.no_grad():
        pos, neg = pipe.encode_prompt(POSITIVE, "cpu", 1, True, NEGATIVE)
    model = DiffusionModel(unet=pipe.unet, family="sd1", prediction_type="epsilon",
                           scheduler_config=dict(pipe.scheduler.config))
    image = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    mask = torch.zeros(1, 64, 64)
    mask[:, 16:48, 16:48] = 1.0
    out = KSampler().run(model=model, seed=1, steps=3, cfg=7.0, sampler_name="euler",
                         scheduler="normal", positive=[[pos, {}]], negative=[[neg, {}]],
                         latent_image={"samples": image, "noise_mask": mask})[0]["samples"]
    keep = torch.ones(8, 8, dtype=torch.bool)
    keep[2:6, 2:6] = False
    assert torch.allclose(out[..., keep], image[..., keep], atol=1e-6)
    assert (out[..., ~keep] - image[..., ~keep]).abs().mean() > 1e-2


def test_sdxl_size_conditioning_matches_diffusers(envs):
    """CONDITIONING size fields (CLIPTextEncodeSDXL's) become diffusers' add_time_ids."""
    from loom.runtime.sampling import sample
    from loom.runtime.sd.types import DiffusionModel

    pipe = envs("sdxl").pipe
    sizes = {"width": 96, "height": 80, "crop_w": 8, "crop_h": 16, "target_width": 48,
             "target_height": 56}
    with torch.no_grad():
        pos, neg, pooled, neg_pooled = pipe.encode_prompt(POSITIVE, POSITIVE, device="cpu",
                                                          negative_prompt=NEGATIVE)
    model = DiffusionModel(unet=pipe.unet, family="sdxl", prediction_type="epsilon",
                           scheduler_config=dict(pipe.scheduler.config),
                           latent_scaling_factor=pipe.vae.config.scaling_factor)
    out = sample(model, [[pos, {"pooled_output": pooled, **sizes}]],
                 [[neg, {"pooled_output": neg_pooled, **sizes}]], {"samples": torch.zeros(1, 4, 8, 8)},
                 seed=SEED, steps=3, cfg=7.5, sampler_name="euler", scheduler="normal")["samples"]
    plain = sample(model, [[pos, {"pooled_output": pooled}]], [[neg, {"pooled_output": neg_pooled}]],
                   {"samples": torch.zeros(1, 4, 8, 8)}, seed=SEED, steps=3, cfg=7.5,
                   sampler_name="euler", scheduler="normal")["samples"]
    ref = _pipeline(type(pipe), pipe, "euler")(
        prompt_embeds=pos, negative_prompt_embeds=neg, pooled_prompt_embeds=pooled,
        negative_pooled_prompt_embeds=neg_pooled, original_size=(80, 96),
        crops_coords_top_left=(16, 8), target_size=(56, 48), height=64, width=64,
        num_inference_steps=3, guidance_scale=7.5,
        generator=torch.Generator("cpu").manual_seed(SEED), output_type="latent").images
    ref = ref / pipe.vae.config.scaling_factor
    diff = (out - ref).abs().max().item()
    print(f"\nparity sdxl size conditioning: max|Δlatent| = {diff:.3g}")
    assert diff <= TOL * max(1.0, ref.abs().max().item())
    assert (plain - out).abs().max() > 1e-3  # the sizes do matter

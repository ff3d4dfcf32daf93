"""ControlNet and T2I-Adapter through Loom graphs, against diffusers' pipelines.

A Loom prompt (CheckpointLoaderSimple -> CLIPTextEncode x2 -> ControlNetLoader(s) ->
ControlNetApplyAdvanced (stacked) -> KSampler) runs in the engine on tiny single-file
checkpoints and tiny random-weight ControlNets written to ``models/controlnet/`` in the original
layout, as diffusers files and as diffusers folders. References: diffusers'
``StableDiffusionControlNetPipeline`` (single and multi ControlNet, conditioning scale, guidance
start/end), ``StableDiffusionXLControlNetPipeline``, ``StableDiffusionAdapterPipeline`` and
``StableDiffusionXLAdapterPipeline``, built
from the same modules, same scheduler (Euler), noise and settings. fp32 on the CPU; the bar is
1e-4 relative to the latents' magnitude. Second runs change strength, remove or add a
ControlNet and must equal fresh runs.
"""

from __future__ import annotations

import pytest
import torch
from control_fixtures import save_controlnet, tiny_adapter, tiny_controlnet
from sd_fixtures import sd_cpu_only, sd_files, tiny_pipeline  # noqa: F401  (fixtures)

from loom.config import REPO_ROOT
from loom.engine.executor import Executor
from loom.engine.validate import validate_prompt
from loom.nodeapi import Int, Node, NodeRegistry, Output, RunContext
from loom.nodeapi.capture import capture_node
from loom.nodeapi.loader import load_packs
from loom.paths import Folders

TOL = 1e-4
SEED = 77
STEPS = 3
CFG = 7.5
POSITIVE = "a photo of a cat on a sofa"
NEGATIVE = "blurry, low quality"


def hint(seed: int, size: int = 64) -> torch.Tensor:
    """An IMAGE [1, H, W, 3] in 0..1: blocky random 'edges'."""
    g = torch.Generator().manual_seed(seed)
    small = (torch.rand(1, 3, size // 8, size // 8, generator=g) > 0.5).float()
    return torch.nn.functional.interpolate(small, scale_factor=8).permute(0, 2, 3, 1).contiguous()


Capture = capture_node("Capture", latent="LATENT")  # reports every run, cached upstream or not


class HintImage(Node):
    inputs = {"index": Int(0, min=0, max=10)}
    outputs = (Output("IMAGE"),)

    def run(self, index):
        return (hint(index),)


class Env:
    def __init__(self, family, root, ckpt_bytes):
        self.family = family
        self.folders = Folders.under(root)
        self.folders.create()
        (self.folders.model_folder("checkpoints") / "tiny.safetensors").write_bytes(ckpt_bytes)
        cn_dir = self.folders.model_folder("controlnet")
        self.nets = {"a": tiny_controlnet(family, seed=1), "b": tiny_controlnet(family, seed=2)}
        save_controlnet(self.nets["a"], cn_dir / "cn-a.safetensors", "original")
        save_controlnet(self.nets["b"], cn_dir / "cn-b", "diffusers-folder")
        self.adapter = tiny_adapter(seed=3, family=family)
        self.adapter.save_pretrained(cn_dir / "adapter", safe_serialization=True)
        self.registry = NodeRegistry()
        load_packs(self.registry, REPO_ROOT / "nodes", builtin=True)
        self.registry.register("Capture", Capture, "tests")
        self.registry.register("HintImage", HintImage, "tests")
        self.executor = Executor(paths=self.folders)
        self.pipe = tiny_pipeline(family)
        self.runs = 0

    def prompt(self, controls, *, seed=SEED, steps=STEPS):
        """``controls``: (file, hint index, strength, start, end) applied in order."""
        p = {
            "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
            "2": {"class_type": "CLIPTextEncode", "inputs": {"text": POSITIVE, "clip": ["1", 1]}},
            "3": {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": ["1", 1]}},
            "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64,
                                                               "batch_size": 1}},
        }
        pos, neg = ["2", 0], ["3", 0]
        for k, (name, index, strength, start, end) in enumerate(controls):
            loader = "T2IAdapterLoader" if name == "adapter" else "ControlNetLoader"
            key = "t2i_adapter_name" if name == "adapter" else "control_net_name"
            p[f"l{k}"] = {"class_type": loader, "inputs": {key: name}}
            p[f"h{k}"] = {"class_type": "HintImage", "inputs": {"index": index}}
            p[f"a{k}"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
                "positive": pos, "negative": neg, "control_net": [f"l{k}", 0],
                "image": [f"h{k}", 0], "strength": strength, "start_percent": start,
                "end_percent": end}}
            pos, neg = [f"a{k}", 0], [f"a{k}", 1]
        p["5"] = {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": seed, "steps": steps, "cfg": CFG, "sampler_name": "euler",
            "scheduler": "normal", "positive": pos, "negative": neg, "latent_image": ["4", 0],
            "denoise": 1.0}}
        p["6"] = {"class_type": "Capture", "inputs": {"latent": ["5", 0]}}
        return p

    def run(self, controls, executor=None, **kw):
        ctx = RunContext(paths=self.folders)
        self.runs += 1
        pid = f"{self.family}-{self.runs}"
        prompt = validate_prompt(self.prompt(controls, **kw), self.registry, ctx)
        result = (executor or self.executor).execute(prompt, pid)
        assert result.status == "success", result.error
        return Capture.take(pid)["latent"]["samples"]

    def reference(self, controls):
        """The diffusers pipeline's latents (divided by the VAE scale, as LATENTs hold them)."""
        import diffusers
        from diffusers import (
            StableDiffusionAdapterPipeline,
            StableDiffusionControlNetPipeline,
            StableDiffusionXLAdapterPipeline,
            StableDiffusionXLControlNetPipeline,
        )

        parts = {k: v for k, v in self.pipe.components.items()
                 if k not in ("safety_checker", "feature_extractor", "image_encoder")}
        parts["scheduler"] = diffusers.EulerDiscreteScheduler.from_config(self.pipe.scheduler.config)
        images = [hint(index).permute(0, 3, 1, 2) for _, index, *_ in controls]
        scales = [c[2] for c in controls]
        if controls[0][0] == "adapter" and self.family == "sdxl":
            # diffusers' SDXL adapter pipeline: the first int(N * factor) steps (start 0)
            assert len(controls) == 1 and controls[0][3] == 0.0
            pipe = StableDiffusionXLAdapterPipeline(**parts, adapter=self.adapter)
            extra = dict(image=images[0], adapter_conditioning_scale=scales[0],
                         adapter_conditioning_factor=controls[0][4])
        elif controls[0][0] == "adapter":
            assert len(controls) == 1
            pipe = StableDiffusionAdapterPipeline(**parts, adapter=self.adapter,
                                                  safety_checker=None, feature_extractor=None,
                                                  requires_safety_checker=False)
            extra = dict(image=images[0], adapter_conditioning_scale=scales[0])
        else:
            nets = [self.nets[name.removeprefix("cn-").removesuffix(".safetensors")]
                    for name, *_ in controls]
            if self.family == "sdxl":
                pipe = StableDiffusionXLControlNetPipeline(**parts, controlnet=nets[0]
                                                           if len(nets) == 1 else nets,
                                                           add_watermarker=False)
            else:
                pipe = StableDiffusionControlNetPipeline(
                    **parts, controlnet=nets[0] if len(nets) == 1 else nets,
                    safety_checker=None, feature_extractor=None, requires_safety_checker=False)
            one = len(nets) == 1
            extra = dict(image=images[0] if one else images,
                         controlnet_conditioning_scale=scales[0] if one else scales,
                         control_guidance_start=[c[3] for c in controls],
                         control_guidance_end=[c[4] for c in controls])
        pipe.set_progress_bar_config(disable=True)
        generator = torch.Generator("cpu").manual_seed(SEED)
        noise = torch.randn((1, 4, 8, 8), generator=generator)
        out = pipe(prompt=POSITIVE, negative_prompt=NEGATIVE, num_inference_steps=STEPS,
                   guidance_scale=CFG, generator=generator, latents=noise, height=64, width=64,
                   output_type="latent", **extra).images
        return out / self.pipe.vae.config.scaling_factor


@pytest.fixture(scope="module")
def envs(sd_files, tmp_path_factory):  # noqa: F811
    made = {}

    def get(family):
        if family not in made:
            made[family] = Env(family, tmp_path_factory.mktemp(f"cn-{family}"),
                               sd_files(family).read_bytes())
        return made[family]

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield get
    torch.set_num_threads(before)


def _changes(latents, plain):
    """The control changes the result (by more than a percent of the latents' magnitude)."""
    return (latents - plain).abs().max() > 0.01 * plain.abs().max()


def _check(what, latents, ref):
    diff = (latents - ref).abs().max().item()
    scale = max(1.0, ref.abs().max().item())
    print(f"\nparity {what}: max|Δlatent| = {diff:.3g} (latent scale {scale:.3g})")
    assert diff <= TOL * scale


CN_A = ("cn-a.safetensors", 0, 0.7, 0.0, 1.0)


def test_single_controlnet_matches_diffusers(envs):
    env = envs("sd1")
    plain = env.run([])
    latents = env.run([CN_A])
    _check("sd1 controlnet", latents, env.reference([CN_A]))
    assert _changes(latents, plain)


def test_guidance_start_end_match_diffusers(envs):
    env = envs("sd1")
    controls = [("cn-a.safetensors", 0, 0.9, 0.34, 0.67)]
    latents = env.run(controls)
    _check("sd1 controlnet start/end", latents, env.reference(controls))
    assert _changes(latents, env.run([("cn-a.safetensors", 0, 0.9, 0.0, 1.0)]))


def test_multi_controlnet_matches_diffusers(envs):
    env = envs("sd1")
    controls = [("cn-a.safetensors", 0, 0.8, 0.0, 0.67), ("cn-b", 1, 0.5, 0.34, 1.0)]
    _check("sd1 multi-controlnet", env.run(controls), env.reference(controls))


@pytest.mark.parametrize("family, control, label", [
    ("sdxl", ("cn-a.safetensors", 0, 0.6, 0.0, 1.0), "sdxl controlnet"),
    ("sd1", ("adapter", 2, 0.8, 0.0, 1.0), "sd1 t2i-adapter"),
])
def test_sdxl_controlnet_and_t2i_adapter_match_diffusers(envs, family, control, label):
    env = envs(family)
    latents = env.run([control])
    _check(label, latents, env.reference([control]))
    assert _changes(latents, env.run([]))


def test_second_runs_equal_fresh_runs(envs):
    """Change strength, add a second ControlNet, remove one: each result equals a fresh run
    (new executor: nothing cached), and the cached upstream conditioning is untouched."""
    env = envs("sd1")
    sequence = [
        [CN_A],
        [("cn-a.safetensors", 0, 0.3, 0.0, 1.0)],
        [("cn-a.safetensors", 0, 0.3, 0.0, 1.0), ("cn-b", 1, 0.5, 0.0, 1.0)],
        [("cn-b", 1, 0.5, 0.0, 1.0)],
        [],
        [CN_A],
    ]
    results = [env.run(controls) for controls in sequence]
    for controls, got in zip(sequence, results, strict=True):
        fresh = env.run(controls, executor=Executor(paths=env.folders))
        assert torch.equal(got, fresh), controls
    assert torch.equal(results[0], results[-1])
    assert not torch.equal(results[0], results[1])


def test_sdxl_t2i_adapter_matches_diffusers(envs):
    env = envs("sdxl")
    controls = [("adapter", 2, 0.8, 0.0, 0.67)]  # diffusers' adapter_conditioning_factor 0.67
    latents = env.run(controls)
    _check("sdxl t2i-adapter", latents, env.reference(controls))
    assert _changes(latents, env.run([]))

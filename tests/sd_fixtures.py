"""Tiny random-weight Stable Diffusion models for tests (SD 1.x, SD 2.x v-prediction, SDXL).

Public and stable (the loading, text, VAE, LoRA and sampling tests all use them):

- ``tiny_components(family, seed=0) -> dict``: fresh diffusers/transformers modules
  (``unet``, ``vae``, ``text_encoder`` [, ``text_encoder_2``], ``tokenizer`` [, ``tokenizer_2``],
  ``scheduler``) with deterministic random weights. ``family``: ``"sd1"``, ``"sd2v"``, ``"sdxl"``.
- ``tiny_pipeline(family, seed=0)``: the matching diffusers pipeline built from them.
- ``save_diffusers_folder(family, path, seed=0)``: ``pipeline.save_pretrained(path)``.
- ``save_single_file(family, path, fmt="safetensors" | "ckpt", seed=0)``: the *original*
  LDM/CompVis single-file layout (``model.diffusion_model.*``, ``first_stage_model.*``,
  ``cond_stage_model.transformer.*`` (SD1), ``cond_stage_model.model.*`` (SD2, OpenCLIP),
  ``conditioner.embedders.0/1.*`` (SDXL)), written by our own diffusers -> original key mapping.
- ``component_state_dicts(family, seed=0)``: ``{"unet": sd, "vae": sd, "text_encoder": sd, …}``
  of what ``tiny_components`` builds, to compare loaded models against.
- ``make_lora(pipe, family, fmt, seed=1) -> dict``: a random LoRA state dict ("kohya" or "peft"
  names) over many layer kinds of a tiny pipeline's UNet and text encoder(s).
- pytest fixtures ``sd_files`` (session): ``sd_files(family, kind)`` -> path of a cached file
  (``kind``: "safetensors", "ckpt" or "diffusers").

The shapes mirror the real models where it matters to the loaders (where attention sits, linear
vs conv ``proj_in``, SDXL's ``text_time`` embedding and two text encoders), at a size that builds
in about a second. Head counts follow the conventions the loaders use for real models, since
they cannot be read off tensor shapes: SD 1.x has 8 heads everywhere; SD 2.x/SDXL have
``max(1, channels // 64)`` heads in the UNet, and text encoders ``max(1, hidden // 64)``.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from loom.runtime.sd.keymap import clip_to_ldm, unet_to_ldm, vae_to_ldm  # noqa: F401  (re-exported)

FAMILIES = ("sd1", "sd2v", "sdxl")

# ---------------------------------------------------------------------------------------------
# Tiny configs
# ---------------------------------------------------------------------------------------------

_SD15_SCHEDULER = {
    "_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "set_alpha_to_one": False,
    "skip_prk_steps": True, "steps_offset": 1, "clip_sample": False, "prediction_type": "epsilon",
    "trained_betas": None,
}
_SD21_SCHEDULER = {
    "_class_name": "DDIMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "set_alpha_to_one": False,
    "steps_offset": 1, "clip_sample": False, "prediction_type": "v_prediction",
    "trained_betas": None,
}
_SDXL_SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler", "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "steps_offset": 1,
    "interpolation_type": "linear", "timestep_spacing": "leading", "use_karras_sigmas": False,
    "prediction_type": "epsilon", "sample_max_value": 1.0, "trained_betas": None,
}


def _heads(channels: int) -> int:
    return max(1, channels // 64)


def _unet_config(family: str) -> dict:
    blocks = (32, 64)
    cfg = {
        "sample_size": 8, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
        "block_out_channels": blocks, "norm_num_groups": 32,
        "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
        "cross_attention_dim": 32, "attention_head_dim": 8,
    }
    if family == "sd2v":
        cfg.update(use_linear_projection=True, attention_head_dim=[_heads(c) for c in blocks])
    elif family == "sdxl":
        # SDXL: no attention in the first level, attention (2 transformer layers) below it.
        cfg.update(
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2), use_linear_projection=True,
            attention_head_dim=[_heads(c) for c in blocks], cross_attention_dim=64,
            addition_embed_type="text_time", addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=6 * 8 + 32,
        )
    return cfg


def _vae_config(family: str) -> dict:
    return {
        "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 1,
        "block_out_channels": (32, 64, 64, 64), "norm_num_groups": 32, "sample_size": 64,
        "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
        "scaling_factor": 0.13025 if family == "sdxl" else 0.18215,
        "force_upcast": family == "sdxl",
    }


def _text_config(act: str, layers: int = 3, projection_dim: int = 32) -> dict:
    return {
        "vocab_size": 49408, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": layers,
        "num_attention_heads": _heads(32), "max_position_embeddings": 77, "hidden_act": act,
        "projection_dim": projection_dim, "bos_token_id": 49406, "eos_token_id": 49407,
        "pad_token_id": 1, "layer_norm_eps": 1e-5,
    }


def tiny_configs(family: str) -> dict:
    """The configs ``tiny_components`` builds from (plain data, a fresh copy each call)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    cfgs = {"unet": _unet_config(family), "vae": _vae_config(family)}
    if family == "sd1":
        cfgs["text_encoder"] = _text_config("quick_gelu")
        cfgs["scheduler"] = dict(_SD15_SCHEDULER)
    elif family == "sd2v":
        cfgs["text_encoder"] = _text_config("gelu")
        cfgs["scheduler"] = dict(_SD21_SCHEDULER)
    else:
        cfgs["text_encoder"] = _text_config("quick_gelu")
        cfgs["text_encoder_2"] = _text_config("gelu", projection_dim=32)
        cfgs["scheduler"] = dict(_SDXL_SCHEDULER)
    return cfgs


# ---------------------------------------------------------------------------------------------
# Components
# ---------------------------------------------------------------------------------------------

def _make_scheduler(cfg: dict):
    import diffusers

    cfg = dict(cfg)
    cls = getattr(diffusers, cfg.pop("_class_name"))
    return cls.from_config(cfg)


def _build(family: str, cfgs: dict, empty: bool = False) -> dict:
    """The modules of ``cfgs``; ``empty``: parameters on the meta device (no random init)."""
    import contextlib

    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from loom.runtime.sd.shipped import clip_tokenizer

    with init_empty_weights() if empty else contextlib.nullcontext():
        parts = {
            "unet": UNet2DConditionModel(**cfgs["unet"]),
            "vae": AutoencoderKL(**cfgs["vae"]),
            "text_encoder": CLIPTextModel(CLIPTextConfig(**cfgs["text_encoder"])),
        }
        if family == "sdxl":
            parts["text_encoder_2"] = CLIPTextModelWithProjection(CLIPTextConfig(**cfgs["text_encoder_2"]))
    parts["tokenizer"] = clip_tokenizer("open_clip" if family == "sd2v" else "clip_l")
    parts["scheduler"] = _make_scheduler(cfgs["scheduler"])
    if family == "sdxl":
        parts["tokenizer_2"] = clip_tokenizer("open_clip")
    for module in parts.values():
        if isinstance(module, torch.nn.Module):
            module.eval().requires_grad_(False)
    return parts


@functools.cache
def _weights(family: str, seed: int) -> dict[str, dict[str, torch.Tensor]]:
    """Random weights, made once per (family, seed). Norm scales and biases are randomised too
    so that a mapping that swapped two of them would show."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    parts = _build(family, tiny_configs(family))
    weights = {}
    for name, module in parts.items():
        if not isinstance(module, torch.nn.Module):
            continue
        sd = {}
        for key, value in module.state_dict().items():
            if value.is_floating_point():
                if key.endswith("bias") or "norm" in key.lower() and value.dim() == 1:
                    base = torch.ones_like(value) if key.endswith("weight") else torch.zeros_like(value)
                    value = base + 0.1 * torch.randn(value.shape, generator=gen)
                elif key.endswith("embedding.weight"):
                    value = 0.5 * torch.randn(value.shape, generator=gen)
            sd[key] = value.clone().contiguous()
        weights[name] = sd
    return weights


def component_state_dicts(family: str, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """The weights ``tiny_components(family, seed)`` has, per component (copies)."""
    return {name: {k: v.clone() for k, v in sd.items()} for name, sd in _weights(family, seed).items()}


def tiny_components(family: str, seed: int = 0) -> dict:
    """Fresh tiny modules for ``family`` ("sd1", "sd2v", "sdxl") with deterministic weights."""
    weights = _weights(family, seed)
    parts = _build(family, tiny_configs(family), empty=True)
    for name, sd in weights.items():
        parts[name].load_state_dict({k: v.clone() for k, v in sd.items()}, strict=True, assign=True)
    return parts


def tiny_pipeline(family: str, seed: int = 0):
    """The diffusers pipeline of ``tiny_components`` (StableDiffusion(XL)Pipeline), on the CPU."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    parts = tiny_components(family, seed)
    if family == "sdxl":
        pipe = StableDiffusionXLPipeline(**parts, force_zeros_for_empty_prompt=True)
    else:
        pipe = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_diffusers_folder(family: str, path: str | Path, seed: int = 0) -> Path:
    """A diffusers folder (model_index.json, unet/, vae/, text_encoder/, …) of the tiny model."""
    path = Path(path)
    tiny_pipeline(family, seed).save_pretrained(path, safe_serialization=True)
    return path


# ---------------------------------------------------------------------------------------------
# diffusers -> original (LDM / CompVis / OpenCLIP) key mapping, for writing single files
# ---------------------------------------------------------------------------------------------

def clip_to_open_clip(sd: dict, prefix: str, *, extra_block: bool, gen: torch.Generator) -> dict:
    """transformers CLIP text model -> OpenCLIP ``model.*`` layout (SD2 / SDXL's second encoder).

    ``extra_block``: real SD 2.x files carry one more transformer block than SD 2.x uses (it takes
    the penultimate layer's output); we write a random extra block so the loader must drop it.
    """
    sd = {k.removeprefix("text_model."): v for k, v in sd.items()}
    width = sd["embeddings.token_embedding.weight"].shape[1]
    out = {
        "token_embedding.weight": sd["embeddings.token_embedding.weight"],
        "positional_embedding": sd["embeddings.position_embedding.weight"],
        "ln_final.weight": sd["final_layer_norm.weight"],
        "ln_final.bias": sd["final_layer_norm.bias"],
        "logit_scale": torch.tensor(4.6052),
    }
    if "text_projection.weight" in sd:
        out["text_projection"] = sd["text_projection.weight"].T.contiguous()
    else:
        out["text_projection"] = torch.randn(width, width, generator=gen) * width**-0.5
    layers = sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder.layers.")})
    for i in layers:
        src = f"encoder.layers.{i}."
        dst = f"transformer.resblocks.{i}."
        for p in ("weight", "bias"):
            out[dst + f"attn.in_proj_{p}"] = torch.cat(
                [sd[src + f"self_attn.{x}_proj.{p}"] for x in ("q", "k", "v")], 0)
            out[dst + f"attn.out_proj.{p}"] = sd[src + f"self_attn.out_proj.{p}"]
            out[dst + f"ln_1.{p}"] = sd[src + f"layer_norm1.{p}"]
            out[dst + f"ln_2.{p}"] = sd[src + f"layer_norm2.{p}"]
            out[dst + f"mlp.c_fc.{p}"] = sd[src + f"mlp.fc1.{p}"]
            out[dst + f"mlp.c_proj.{p}"] = sd[src + f"mlp.fc2.{p}"]
    if extra_block:
        i = len(layers)
        template = {k.replace(f"resblocks.{layers[-1]}.", f"resblocks.{i}."): v
                    for k, v in out.items() if k.startswith(f"transformer.resblocks.{layers[-1]}.")}
        for k, v in template.items():
            out[k] = torch.randn(v.shape, generator=gen) * 0.1
    return {prefix + k: v for k, v in out.items()}


def original_state_dict(family: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """The whole model in the original single-file layout (what ``save_single_file`` writes)."""
    weights = _weights(family, seed)
    cfgs = tiny_configs(family)
    gen = torch.Generator().manual_seed(seed + 1000)
    sd = {}
    sd.update(unet_to_ldm(weights["unet"], cfgs["unet"]))
    sd.update(vae_to_ldm(weights["vae"], cfgs["vae"]))
    if family == "sd1":
        sd.update(clip_to_ldm(weights["text_encoder"], "cond_stage_model.transformer."))
    elif family == "sd2v":
        sd.update(clip_to_open_clip(weights["text_encoder"], "cond_stage_model.model.",
                                    extra_block=True, gen=gen))
        # Some trainers mark v-prediction models with an empty "v_pred" tensor.
        sd["v_pred"] = torch.tensor([])
    else:
        sd.update(clip_to_ldm(weights["text_encoder"], "conditioner.embedders.0.transformer."))
        sd.update(clip_to_open_clip(weights["text_encoder_2"], "conditioner.embedders.1.model.",
                                    extra_block=False, gen=gen))
    return {k: v.contiguous() for k, v in sd.items()}


def save_single_file(family: str, path: str | Path, fmt: str = "safetensors", seed: int = 0) -> Path:
    """Write the tiny model as one original-layout checkpoint (``.safetensors`` or ``.ckpt``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = original_state_dict(family, seed)
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(path), metadata={"format": "pt"})
    elif fmt == "ckpt":
        torch.save({"state_dict": sd, "global_step": 1}, path)
    else:
        raise ValueError(f"fmt must be 'safetensors' or 'ckpt', not {fmt!r}")
    return path


# ---------------------------------------------------------------------------------------------
# pytest fixtures
# ---------------------------------------------------------------------------------------------

class _FileCache:
    def __init__(self, root: Path):
        self.root = root
        self._made: dict[tuple[str, str], Path] = {}

    def __call__(self, family: str, kind: str = "safetensors") -> Path:
        key = (family, kind)
        if key not in self._made:
            if kind == "diffusers":
                path = save_diffusers_folder(family, self.root / f"{family}-diffusers")
            else:
                ext = {"safetensors": "safetensors", "ckpt": "ckpt"}[kind]
                path = save_single_file(family, self.root / f"tiny-{family}.{ext}", fmt=kind)
            self._made[key] = path
        return self._made[key]


@pytest.fixture(scope="session")
def sd_files(tmp_path_factory) -> _FileCache:
    """``sd_files(family, kind)``: a tiny model file/folder made once per test session."""
    return _FileCache(tmp_path_factory.mktemp("sd_files"))


@pytest.fixture(autouse=True)
def sd_cpu_only(monkeypatch):
    """Keep SD tests on the CPU in fp32 even on a GPU machine, so they compare like for like with
    diffusers references built on the CPU. Autouse in the test modules that import it."""
    from loom.runtime import devices
    from loom.runtime.sd import common

    real = devices.DevicePolicy.detect.__func__

    def detect(cls, force_cpu: bool = False):
        return real(cls, force_cpu=True)

    monkeypatch.setattr(devices.DevicePolicy, "detect", classmethod(detect))
    monkeypatch.setattr(common, "_default", None)
    yield


# ---------------------------------------------------------------------------------------------
# LoRA files
# ---------------------------------------------------------------------------------------------

UNET_LAYERS = ("attn1.to_q", "attn1.to_v", "attn2.to_k", "attn2.to_out.0", "ff.net.2", "proj_in",
               "resnets.0.conv1", "resnets.1.time_emb_proj")
TEXT_LAYERS = ("q_proj", "v_proj", "out_proj", "fc1")
RANK = 4


def make_lora(pipe, family: str, fmt: str, seed: int = 1) -> dict[str, torch.Tensor]:
    """A random LoRA over many layer kinds (attention, feed-forward, conv, resnet) of the tiny model.

    ``fmt``: "kohya" (lora_unet_/lora_te*_ names with alpha; SDXL UNet in original names, as
    sd-scripts writes them) or "peft" (diffusers' unet./text_encoder.* lora_A/lora_B, no alpha).
    """
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def add(name: str, weight: torch.Tensor) -> None:
        conv = weight.dim() == 4
        down = torch.randn(RANK, weight.shape[1], *weight.shape[2:], generator=g) * 0.2
        up = torch.randn(weight.shape[0], RANK, *((1, 1) if conv else ()), generator=g) * 0.2
        if fmt == "kohya":
            sd[f"{name}.lora_down.weight"], sd[f"{name}.lora_up.weight"] = down, up
            sd[f"{name}.alpha"] = torch.tensor(2.0)
        else:
            sd[f"{name}.lora_A.weight"], sd[f"{name}.lora_B.weight"] = down, up

    for m, mod in pipe.unet.named_modules():
        if m.endswith(UNET_LAYERS) and hasattr(mod, "weight"):
            if fmt == "peft":
                add(f"unet.{m}", mod.weight)
            else:
                name = m
                if family == "sdxl":
                    (ldm,) = unet_to_ldm({f"{m}.weight": None}, dict(pipe.unet.config))
                    name = ldm.removeprefix("model.diffusion_model.").removesuffix(".weight")
                add("lora_unet_" + name.replace(".", "_"), mod.weight)
    encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if family == "sdxl" else [])
    for i, enc in enumerate(encoders):
        for m, mod in enc.named_modules():
            if m.endswith(TEXT_LAYERS):
                full = m if m.startswith("text_model.") else f"text_model.{m}"
                if fmt == "peft":
                    add(("text_encoder.", "text_encoder_2.")[i] + full, mod.weight)
                else:
                    pre = ("lora_te1_", "lora_te2_")[i] if family == "sdxl" else "lora_te_"
                    add(pre + full.replace(".", "_"), mod.weight)
    return sd


# -- helpers of the sampling tests -------------------------------------------------------------

def sd1_setup(kind: str = "sd1", family: str = "sd1", prediction_type: str = "epsilon"):
    """A tiny pipeline (SD 1.x unless ``kind`` says another), a MODEL over its UNet and three
    encoded prompts (positive "a photo of a cat", negative "blurry", another positive), as the
    sampling tests use them; for SDXL two, "a cat" and "blurry", with their pooled outputs."""
    from types import SimpleNamespace

    from loom.runtime.sd.types import DiffusionModel

    pipe = tiny_pipeline(kind)
    model = DiffusionModel(unet=pipe.unet, family=family, prediction_type=prediction_type,
                           scheduler_config=dict(pipe.scheduler.config),
                           latent_scaling_factor=pipe.vae.config.scaling_factor)
    with torch.no_grad():
        if family == "sdxl":  # two text encoders and pooled outputs; no "other" prompt
            pos, neg, pooled, neg_pooled = pipe.encode_prompt("a cat", "a cat", device="cpu",
                                                              negative_prompt="blurry")
            return SimpleNamespace(pipe=pipe, model=model, pos=[[pos, {"pooled_output": pooled}]],
                                   neg=[[neg, {"pooled_output": neg_pooled}]])
        pos, neg = pipe.encode_prompt("a photo of a cat", "cpu", 1, True, "blurry")
        other, _ = pipe.encode_prompt("a red house by the sea", "cpu", 1, False)
    return SimpleNamespace(pipe=pipe, model=model, pos=[[pos, {"pooled_output": None}]],
                           neg=[[neg, {"pooled_output": None}]],
                           other=[[other, {"pooled_output": None}]])


def close(a, b, rel=1e-5):
    """Equal up to float rounding, relative to the magnitude (the random tiny UNet's latents are
    large)."""
    return bool((a - b).abs().max() <= rel * max(1.0, b.abs().max().item()))


def empty(batch=1, size=64):
    """An empty LATENT (EmptyLatentImage)."""
    from nodes.latent import EmptyLatentImage

    return EmptyLatentImage().run(width=size, height=size, batch_size=batch)[0]

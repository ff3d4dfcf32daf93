"""Loading SD checkpoints: detection, config inference, single files, diffusers folders, errors.

The tiny models of ``sd_fixtures`` are written in the original single-file layout by our own
diffusers -> original mapping and read back through diffusers' original -> diffusers converters
inside Loom's loader; identical state dicts prove both directions and the inferred configs.
"""

from __future__ import annotations

import logging
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file
from sd_fixtures import (
    FAMILIES,
    clip_to_ldm,
    clip_to_open_clip,
    component_state_dicts,
    original_state_dict,
    sd_cpu_only,  # noqa: F401  (autouse: CPU/fp32 even on GPU machines)
    sd_files,  # noqa: F401  (pytest fixture)
    tiny_components,
    tiny_configs,
)

from loom.nodeapi import RunContext
from loom.runtime.sd import detect, reader
from loom.runtime.sd.keymap import unet_to_ldm, vae_to_ldm
from loom.runtime.sd.loader import load_checkpoint, load_diffusers, load_vae_file
from loom.runtime.sd.reader import ModelFileError
from loom.runtime.sd.shipped import base_config

FAMILY = {"sd1": "sd1", "sd2v": "sd2", "sdxl": "sdxl"}


def _same(module, ref: dict, what: str) -> None:
    got = module.state_dict()
    assert set(got) == set(ref), f"{what}: keys differ: {sorted(set(got) ^ set(ref))[:5]}"
    bad = [k for k in got if not torch.equal(got[k], ref[k])]
    assert not bad, f"{what}: tensors differ: {bad[:5]}"


@pytest.fixture(scope="module")
def loaded(sd_files):  # noqa: F811
    """(family, fmt) -> load_checkpoint result, memoised."""
    cache = {}

    def get(family, fmt="safetensors"):
        if (family, fmt) not in cache:
            cache[(family, fmt)] = load_checkpoint(sd_files(family, fmt))
        return cache[(family, fmt)]

    return get


@pytest.mark.parametrize("fmt", ["safetensors", "ckpt"])
@pytest.mark.parametrize("family", FAMILIES)
def test_single_file_round_trip(loaded, family, fmt):
    model, clip, vae = loaded(family, fmt)
    ref = component_state_dicts(family)
    _same(model.unet, ref["unet"], "unet")
    _same(vae.vae, ref["vae"], "vae")
    _same(clip.encoders[0], ref["text_encoder"], "text encoder")
    if family == "sdxl":
        _same(clip.encoders[1], ref["text_encoder_2"], "text encoder 2")
    assert model.family == clip.family == FAMILY[family]
    assert model.prediction_type == ("v_prediction" if family == "sd2v" else "epsilon")
    assert model.latent_scaling_factor == pytest.approx(0.13025 if family == "sdxl" else 0.18215)
    assert vae.latent_channels == 4 and vae.family == ("sdxl" if family == "sdxl" else "sd1")
    assert model.scheduler_config["prediction_type"] == model.prediction_type
    assert model.scheduler_config["beta_schedule"] == "scaled_linear"
    # modules come out on the CPU in the policy's dtype (fp32 here), not moved anywhere
    assert next(model.unet.parameters()).device.type == "cpu"
    assert next(model.unet.parameters()).dtype == torch.float32
    # attention runs through PyTorch SDPA in both libraries
    from diffusers.models.attention_processor import AttnProcessor2_0

    assert {type(p) for p in model.unet.attn_processors.values()} == {AttnProcessor2_0}
    assert all(e.config._attn_implementation == "sdpa" for e in clip.encoders)


@pytest.mark.parametrize("family", FAMILIES)
def test_loaded_models_compute_like_the_originals(loaded, family):
    """Same weights are not enough: head counts etc. (not in the weights) must match too."""
    model, clip, _ = loaded(family)
    ref = tiny_components(family)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=g)
    ctx = torch.randn(1, 77, ref["unet"].config.cross_attention_dim, generator=g)
    kw = {}
    if family == "sdxl":
        kw["added_cond_kwargs"] = {"text_embeds": torch.randn(1, 32, generator=g),
                                   "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]])}
    with torch.no_grad():
        a = model.unet(x, torch.tensor([10]), ctx, **kw).sample
        b = ref["unet"](x, torch.tensor([10]), ctx, **kw).sample
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
        ids = torch.randint(0, 49406, (1, 77), generator=g)
        for enc, name in zip(clip.encoders, ("text_encoder", "text_encoder_2"), strict=False):
            torch.testing.assert_close(enc(ids, output_hidden_states=True).hidden_states[-1],
                                       ref[name](ids, output_hidden_states=True).hidden_states[-1],
                                       rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_diffusers_folder(sd_files, family):  # noqa: F811
    model, clip, vae = load_diffusers(sd_files(family, "diffusers"))
    ref = component_state_dicts(family)
    _same(model.unet, ref["unet"], "unet")
    _same(vae.vae, ref["vae"], "vae")
    assert model.family == FAMILY[family]
    assert model.prediction_type == ("v_prediction" if family == "sd2v" else "epsilon")
    assert len(clip.encoders) == (2 if family == "sdxl" else 1)
    assert clip.tokenizers[0]("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


# -- detection on real-size shapes (meta tensors: nothing is allocated) -----------------------

def _meta_unet(cfg: dict):
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    with init_empty_weights():
        return UNet2DConditionModel(**{k: v for k, v in cfg.items() if not k.startswith("_")})


def _meta_original(unet_cfg: dict, vae_cfg: dict, text: dict):
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL

    unet = _meta_unet(unet_cfg)
    with init_empty_weights():
        vae = AutoencoderKL(**{k: v for k, v in vae_cfg.items() if not k.startswith("_")})
    sd = unet_to_ldm(unet.state_dict(), unet_cfg)
    sd.update(vae_to_ldm(vae.state_dict(), vae_cfg))
    sd.update(text)
    return sd, unet


def _meta_text(name: str, projection: bool = False):
    from accelerate import init_empty_weights
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = {k: v for k, v in base_config(name).items() if k not in ("architectures", "model_type")}
    with init_empty_weights():
        cls = CLIPTextModelWithProjection if projection else CLIPTextModel
        return cls(CLIPTextConfig(**cfg)).state_dict(), cfg


@pytest.mark.parametrize("ref", ["sd15", "sd21", "sdxl", "sd15-inpaint"])
def test_real_size_checkpoints_get_the_published_configs(ref):
    name = ref.split("-")[0]
    unet_cfg = base_config(f"{name}_unet")
    if ref.endswith("inpaint"):
        unet_cfg["in_channels"] = 9
    vae_cfg = base_config(f"{name}_vae")
    if name == "sd15":
        te, te_cfg = _meta_text("sd15_text_encoder")
        text = clip_to_ldm(te, "cond_stage_model.transformer.")
    elif name == "sd21":
        te, te_cfg = _meta_text("sd21_text_encoder")
        text = clip_to_open_clip(te, "cond_stage_model.model.", extra_block=False, gen=None)
        # the real files have a 24th block that SD 2.x does not use
        text.update({k.replace("resblocks.22.", "resblocks.23."): v for k, v in text.items()
                     if "resblocks.22." in k})
    else:
        te, te_cfg = _meta_text("sdxl_text_encoder")
        te2, te2_cfg = _meta_text("sdxl_text_encoder_2", projection=True)
        text = clip_to_ldm(te, "conditioner.embedders.0.transformer.")
        text.update(clip_to_open_clip(te2, "conditioner.embedders.1.model.", extra_block=False, gen=None))
    sd, ref_unet = _meta_original(unet_cfg, vae_cfg, text)
    info = detect.detect_checkpoint(sd, name="real.safetensors")
    assert info.family == {"sd15": "sd1", "sd21": "sd2", "sdxl": "sdxl"}[name]
    if name == "sdxl":
        detect.finish_sdxl_config(info.unet_config, info.text_encoders[1].config["projection_dim"])
    got = _meta_unet(info.unet_config)
    shapes = {k: tuple(v.shape) for k, v in got.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in ref_unet.state_dict().items()}
    for k in ("attention_head_dim", "cross_attention_dim", "in_channels", "use_linear_projection",
              "addition_time_embed_dim", "addition_embed_type", "down_block_types", "up_block_types"):
        assert got.config[k] == ref_unet.config[k], k
    assert info.inpaint == ref.endswith("inpaint")
    for k in ("block_out_channels", "layers_per_block", "latent_channels"):
        assert info.vae_config[k] == vae_cfg[k], k
    for k in ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads", "hidden_act"):
        assert info.text_encoders[0].config[k] == te_cfg[k], k
    if name == "sdxl":
        for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "projection_dim", "hidden_act"):
            assert info.text_encoders[1].config[k] == te2_cfg[k], k


def test_prediction_type_detection():
    sd = original_state_dict("sd2v")
    assert detect.detect_checkpoint(sd).prediction_type == "v_prediction"
    del sd["v_pred"]
    assert detect.detect_checkpoint(sd).prediction_type == "epsilon"  # SD2-512 style default
    assert detect.detect_checkpoint(sd, name="v2-1_768-v-ema.safetensors").prediction_type == "v_prediction"
    meta = {"modelspec.prediction_type": "v"}
    info = detect.detect_checkpoint(sd, metadata=meta)
    assert (info.prediction_type, info.prediction_source) == ("v_prediction", "metadata")


def test_prediction_override_and_model_sampling_node(tmp_path):
    from nodes.sd_loaders import ModelSamplingDiscrete

    sd = original_state_dict("sd2v")
    del sd["v_pred"]
    path = tmp_path / "plain-sd2.safetensors"
    save_file(sd, str(path))
    model, _, _ = load_checkpoint(path, prediction_type="v_prediction", load_text=False, load_vae=False)
    assert model.prediction_type == "v_prediction"
    (eps,) = ModelSamplingDiscrete().run(model, "eps", False)
    assert eps.prediction_type == "epsilon" and eps.scheduler_config["prediction_type"] == "epsilon"
    assert model.prediction_type == "v_prediction"  # the input wrapper is untouched
    assert eps.unet is model.unet


# -- the node, with real folders --------------------------------------------------------------

def test_checkpoint_loader_node_and_fingerprint(folders, sd_files):  # noqa: F811
    from nodes.sd_loaders import CheckpointLoaderSimple

    dest = folders.model_folder("checkpoints") / "tiny.safetensors"
    dest.write_bytes(sd_files("sd1").read_bytes())
    ctx = RunContext(paths=folders)
    assert "tiny.safetensors" in CheckpointLoaderSimple.inputs["ckpt_name"].resolve_choices(ctx)
    model, clip, vae = CheckpointLoaderSimple(ctx).run(ckpt_name="tiny.safetensors")
    assert model.family == "sd1" and clip.embeddings_dir.endswith("embeddings") and vae is not None
    fp = CheckpointLoaderSimple.fingerprint(ctx, ckpt_name="tiny.safetensors")
    assert fp is not None and CheckpointLoaderSimple.fingerprint(ctx, ckpt_name="gone.safetensors") is None
    # validation names the folder for a missing file
    with pytest.raises(Exception) as err:
        CheckpointLoaderSimple.inputs["ckpt_name"].coerce("missing.safetensors", ctx)
    assert "models/checkpoints/" in str(err.value)
    with pytest.raises(FileNotFoundError, match="models/checkpoints/"):
        CheckpointLoaderSimple(ctx).run(ckpt_name="missing.safetensors")


def test_diffusers_loader_node(folders, sd_files):  # noqa: F811
    import shutil

    from nodes.sd_loaders import DiffusersLoader

    shutil.copytree(sd_files("sdxl", "diffusers"), folders.model_folder("diffusers") / "tiny-xl")
    ctx = RunContext(paths=folders)
    assert DiffusersLoader.inputs["model_path"].resolve_choices(ctx) == ["tiny-xl"]
    model, clip, vae = DiffusersLoader(ctx).run(model_path="tiny-xl")
    assert model.family == clip.family == "sdxl" and vae.family == "sdxl"


def test_big_files_log_progress(sd_files, monkeypatch, caplog):  # noqa: F811
    monkeypatch.setattr(reader, "BIG_FILE", 0)
    seen = []
    with caplog.at_level(logging.INFO, logger="loom.models"):
        load_checkpoint(sd_files("sd1"), progress=lambda d, t: seen.append((d, t)))
    text = caplog.text
    assert "Loading checkpoint tiny-sd1.safetensors" in text and "%" in text
    assert "UNet:" in text and "VAE:" in text and "Loaded tiny-sd1.safetensors" in text
    assert seen and seen[-1][0] == seen[-1][1]


# -- user mistakes ----------------------------------------------------------------------------

def test_wrong_files_say_what_they_are(tmp_path):
    lora = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32),
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(32, 4)}
    save_file(lora, str(tmp_path / "lora.safetensors"))
    with pytest.raises(ModelFileError, match=r"LoRA.*models/loras/"):
        load_checkpoint(tmp_path / "lora.safetensors")

    vae_only = {k.removeprefix("first_stage_model."): v for k, v in original_state_dict("sd1").items()
                if k.startswith("first_stage_model.")}
    save_file(vae_only, str(tmp_path / "vae.safetensors"))
    with pytest.raises(ModelFileError, match=r"VAE.*models/vae/"):
        load_checkpoint(tmp_path / "vae.safetensors")

    save_file({"weight": torch.zeros(3, 3)}, str(tmp_path / "junk.safetensors"))
    with pytest.raises(ModelFileError, match=r"not a Stable Diffusion checkpoint.*no model type Loom knows"):
        load_checkpoint(tmp_path / "junk.safetensors")

    (tmp_path / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(ModelFileError, match="not a valid .safetensors"):
        load_checkpoint(tmp_path / "broken.safetensors")

    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelFileError, match="unsupported file type"):
        load_checkpoint(tmp_path / "notes.txt")

    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nothing.safetensors")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickles_with_code_are_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "callback": _Evil()}, path)
    with pytest.raises(ModelFileError, match="weights-only"):
        load_checkpoint(path)
    # torch's legacy (pre-zip) format cannot be memory-mapped but still loads in weights-only mode
    torch.save({"state_dict": {"w": torch.ones(2)}}, tmp_path / "old.ckpt",
               _use_new_zipfile_serialization=False)
    assert torch.equal(reader.load_state_dict(tmp_path / "old.ckpt")["w"], torch.ones(2))
    # a legacy pickle that is not a torch file at all
    (tmp_path / "raw.pt").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ModelFileError):
        load_checkpoint(tmp_path / "raw.pt")


def test_partial_checkpoints_and_unsupported_variants(tmp_path):
    sd = original_state_dict("sd1")
    unet_only = {k: v for k, v in sd.items() if k.startswith("model.diffusion_model.")}
    save_file(unet_only, str(tmp_path / "unet.safetensors"))
    with pytest.raises(ModelFileError, match="UNet-only"):
        load_checkpoint(tmp_path / "unet.safetensors")

    no_vae = {k: v for k, v in sd.items() if not k.startswith("first_stage_model.")}
    save_file(no_vae, str(tmp_path / "novae.safetensors"))
    model, clip, vae = load_checkpoint(tmp_path / "novae.safetensors")
    assert vae is None and model.family == "sd1"

    xl = original_state_dict("sdxl")
    refiner = {k: v for k, v in xl.items() if not k.startswith("conditioner.embedders.0.")}
    refiner = {k.replace("conditioner.embedders.1.", "conditioner.embedders.0."): v
               for k, v in refiner.items()}
    with pytest.raises(ModelFileError, match="refiner"):
        detect.detect_checkpoint(refiner)

    broken = dict(sd)
    del broken["model.diffusion_model.out.2.bias"]
    save_file(broken, str(tmp_path / "broken.safetensors"))
    with pytest.raises(ModelFileError, match=r"missing.*conv_out.bias"):
        load_checkpoint(tmp_path / "broken.safetensors")


def test_vae_files(tmp_path, sd_files):  # noqa: F811
    ref = component_state_dicts("sd1")["vae"]
    sd = original_state_dict("sd1")
    # original layout without prefix (the usual vae-ft-mse file)
    bare = {k.removeprefix("first_stage_model."): v for k, v in sd.items()
            if k.startswith("first_stage_model.")}
    save_file(bare, str(tmp_path / "vae-ft-mse-840000-ema-pruned.safetensors"))
    vae = load_vae_file(tmp_path / "vae-ft-mse-840000-ema-pruned.safetensors")
    _same(vae.vae, ref, "vae")
    assert vae.family == "sd1"
    # diffusers layout
    save_file(ref, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    vae = load_vae_file(tmp_path / "diffusion_pytorch_model.safetensors")
    _same(vae.vae, ref, "vae")
    assert vae.family == ""  # unknown: no metadata and a name that says nothing
    # named / described as SDXL
    save_file(bare, str(tmp_path / "sdxl_vae.safetensors"))
    assert load_vae_file(tmp_path / "sdxl_vae.safetensors").family == "sdxl"
    save_file(bare, str(tmp_path / "x.safetensors"),
              metadata={"modelspec.architecture": "stable-diffusion-xl-v1-base/vae"})
    assert load_vae_file(tmp_path / "x.safetensors").family == "sdxl"
    # a full checkpoint in models/vae/ gives its VAE and the checkpoint's family
    vae = load_vae_file(sd_files("sdxl"))
    _same(vae.vae, component_state_dicts("sdxl")["vae"], "vae")
    assert vae.family == "sdxl"
    lora = {"lora_unet_x.lora_down.weight": torch.zeros(1, 1),
            "lora_unet_x.lora_up.weight": torch.zeros(1, 1)}
    save_file(lora, str(tmp_path / "l.safetensors"))
    with pytest.raises(ModelFileError, match="not a VAE: it looks like a LoRA"):
        load_vae_file(tmp_path / "l.safetensors")


def test_no_network_and_offline():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    import socket

    with pytest.raises(RuntimeError, match="network connection"):
        socket.socket().connect(("1.1.1.1", 443))


def test_tiny_configs_are_plain_data():
    import json

    for family in FAMILIES:
        json.dumps(tiny_configs(family))


def test_nodes_are_declared_like_comfyui():
    from pathlib import Path

    from loom.nodeapi import NodeRegistry
    from loom.nodeapi.loader import load_packs

    registry = NodeRegistry()
    infos = load_packs(registry, Path(__file__).resolve().parent.parent / "nodes", builtin=True)
    for pack in ("sd_loaders", "sd_conditioning", "sd_vae"):
        info = next(i for i in infos if i.name == pack)
        assert info.error is None, info.error
    d = registry.describe
    assert d("CheckpointLoaderSimple")["output"] == ["MODEL", "CLIP", "VAE"]
    assert list(d("CheckpointLoaderSimple")["input"]["required"]) == ["ckpt_name"]
    lora = d("LoraLoader")["input"]["required"]
    assert list(lora) == ["model", "clip", "lora_name", "strength_model", "strength_clip"]
    assert lora["strength_model"][1] | {} == {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}
    assert list(d("LoraLoaderModelOnly")["input"]["required"]) == ["model", "lora_name", "strength_model"]
    assert d("LoraLoader")["output"] == ["MODEL", "CLIP"]
    assert list(d("CLIPTextEncode")["input"]["required"]) == ["text", "clip"]
    assert d("CLIPTextEncode")["input"]["required"]["text"][1]["multiline"] is True
    last = d("CLIPSetLastLayer")["input"]["required"]["stop_at_clip_layer"][1]
    assert (last["default"], last["min"], last["max"]) == (-1, -24, -1)
    sdxl = list(d("CLIPTextEncodeSDXL")["input"]["required"])
    widgets = [n for n in sdxl if n != "clip"]
    assert widgets == ["width", "height", "crop_w", "crop_h", "target_width", "target_height",
                       "text_g", "text_l"]
    tiled = d("VAEDecodeTiled")["input"]["required"]
    assert list(tiled) == ["samples", "vae", "tile_size", "overlap", "temporal_size", "temporal_overlap"]
    assert (tiled["tile_size"][1]["default"], tiled["overlap"][1]["default"]) == (512, 64)
    assert list(d("VAEEncodeTiled")["input"]["required"])[:4] == ["pixels", "vae", "tile_size", "overlap"]
    assert list(d("VAEDecode")["input"]["required"]) == ["samples", "vae"]
    assert list(d("VAEEncode")["input"]["required"]) == ["pixels", "vae"]
    assert d("VAELoader")["output"] == ["VAE"]
    assert list(d("DiffusersLoader")["input"]["required"]) == ["model_path"]


@pytest.mark.slow
@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_a_comfyui_workflow_runs_end_to_end(folders, sd_files, family):  # noqa: F811
    """Checkpoint -> LoRA -> prompts -> KSampler -> VAEDecode -> PreviewImage through the executor."""
    from pathlib import Path

    from loom.engine.executor import Executor
    from loom.engine.validate import validate_prompt
    from loom.nodeapi import NodeRegistry
    from loom.nodeapi.loader import load_packs
    from loom.runtime.devices import DevicePolicy
    from loom.runtime.model_manager import ModelManager

    (folders.model_folder("checkpoints") / "tiny.safetensors").write_bytes(sd_files(family).read_bytes())
    lora = {"lora_unet_" + ("down_blocks_0_attentions_0_proj_in" if family == "sd1"
                            else "input_blocks_4_1_proj_in") + suffix: t
            for suffix, t in ((".lora_down.weight", torch.randn(2, 64 if family == "sdxl" else 32)),
                              (".lora_up.weight", torch.randn(64 if family == "sdxl" else 32, 2)))}
    if family == "sd1":  # SD 1.x proj_in is a 1x1 conv
        lora = {k: v[:, :, None, None] for k, v in lora.items()}
    save_file(lora, str(folders.model_folder("loras") / "l.safetensors"))
    registry = NodeRegistry()
    load_packs(registry, Path(__file__).resolve().parent.parent / "nodes", builtin=True)
    prompt = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
        "10": {"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "clip": ["4", 1],
                                                       "lora_name": "l.safetensors",
                                                       "strength_model": 0.5, "strength_clip": 1.0}},
        "11": {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["10", 1], "stop_at_clip_layer": -2}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a (red:1.2) cat", "clip": ["11", 0]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["11", 0]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {"model": ["10", 0], "seed": 1, "steps": 2, "cfg": 5.0,
                                                   "sampler_name": "euler", "scheduler": "normal",
                                                   "positive": ["6", 0], "negative": ["7", 0],
                                                   "latent_image": ["5", 0], "denoise": 1.0}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    }
    manager = ModelManager(DevicePolicy.detect(force_cpu=True))
    executor = Executor(paths=folders, models=manager)
    result = executor.execute(validate_prompt(prompt, registry, RunContext(paths=folders)), "p1")
    assert result.error is None, result.error and result.error["exception_message"]
    assert result.outputs["9"]["images"]

"""Loading Stable Diffusion checkpoints (single files and diffusers folders) and VAE files.

Everything is built from local configs (shipped or read off the file) and never fetched: the
single-file layout is converted with diffusers' own converters (``single_file_utils``), modules
are created without random initialisation (:mod:`loom.runtime.sd.empty`, which is safe while
other threads build modules) and take the file's tensors directly. Diffusers folders are read
the same way, not through ``from_pretrained`` (which patches torch for the whole process). One
file is loaded by one thread at a time (two workers asking for the same checkpoint do not read
it twice at once). Loaders build on the CPU in the dtypes of the device policy and hand the modules over
in the :mod:`loom.runtime.sd.types` wrappers; the model manager moves them to the GPU when a node
uses them.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from loom.runtime.devices import DevicePolicy
from loom.runtime.sd import detect
from loom.runtime.sd.detect import CheckpointInfo, TextEncoderSpec
from loom.runtime.sd.empty import assert_materialised, empty_parameters
from loom.runtime.sd.reader import ModelFileError, human_size, load_state_dict, read_metadata
from loom.runtime.sd.shipped import base_config, clip_tokenizer
from loom.runtime.sd.types import DiffusionModel, TextEncoder, Vae

log = logging.getLogger("loom.models")

Progress = Callable[[int, int], None] | None


def _nbytes(sd: dict) -> int:
    return sum(t.numel() * t.element_size() for t in sd.values())


def preload() -> None:
    """Import what loading a model needs (diffusers and transformers import lazily, which two
    threads doing it for the first time at once can trip over)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: F401
    from diffusers.loaders import single_file_utils  # noqa: F401
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer  # noqa: F401


_file_locks: dict[str, threading.Lock] = {}
_file_locks_guard = threading.Lock()


@contextlib.contextmanager
def _one_load_at_a_time(path: Path):
    """Serialise loads of one file (others load in parallel)."""
    key = str(Path(path).resolve())
    with _file_locks_guard:
        lock = _file_locks.setdefault(key, threading.Lock())
    if not lock.acquire(blocking=False):
        log.info("Waiting for another load of %s to finish", Path(path).name)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _serialised(load):
    @functools.wraps(load)
    def wrapper(path, *args, **kwargs):
        with _one_load_at_a_time(Path(path)):
            return load(path, *args, **kwargs)
    return wrapper


def _materialise(module: torch.nn.Module, sd: dict, what: str, dtype: torch.dtype) -> torch.nn.Module:
    """Load ``sd`` into a module built under :func:`empty_parameters` (parameters on 'meta')."""
    expected = set(module.state_dict().keys())
    missing = sorted(expected - set(sd))
    unexpected = sorted(set(sd) - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} weights missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        raise ModelFileError(f"{what}: the file's weights do not fit the detected architecture: "
                             + "; ".join(parts))
    own = module.state_dict()
    for key, value in sd.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise ModelFileError(f"{what}: weight {key} has shape {tuple(value.shape)}, the detected "
                                 f"architecture expects {tuple(own[key].shape)}")
    module.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()},
                           strict=True, assign=True)
    for buf in module.buffers():  # (not module.to(): diffusers warns about it needlessly)
        if buf.is_floating_point():
            buf.data = buf.data.to(dtype)
    assert_materialised(module, what)
    return module.eval().requires_grad_(False)


def _empty(factory):
    with empty_parameters():
        return factory()


# -- components -------------------------------------------------------------------------------

def build_unet(unet_sd: dict, config: dict, dtype: torch.dtype, what: str = "UNet"):
    from diffusers import UNet2DConditionModel

    cfg = {k: v for k, v in config.items() if not k.startswith("_")}
    unet = _empty(lambda: UNet2DConditionModel(**cfg))
    return _materialise(unet, unet_sd, what, dtype)


def build_vae(vae_sd: dict, config: dict, dtype: torch.dtype, what: str = "VAE"):
    from diffusers import AutoencoderKL

    cfg = {k: v for k, v in config.items() if not k.startswith("_")}
    vae = _empty(lambda: AutoencoderKL(**cfg))
    return _materialise(vae, vae_sd, what, dtype)


def build_text_encoder(te_sd: dict, config: dict, with_projection: bool, dtype: torch.dtype,
                       what: str = "text encoder"):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    model = _empty(lambda: cls(CLIPTextConfig(**config)))
    # transformers 5: CLIPTextModel has no "text_model." level, CLIPTextModelWithProjection does.
    # Older saves kept the position ids, which are computed now.
    te_sd = {k: v for k, v in te_sd.items() if not k.endswith("embeddings.position_ids")}
    if hasattr(model, "text_model"):
        te_sd = {(k if k.startswith(("text_model.", "text_projection")) else "text_model." + k): v
                 for k, v in te_sd.items()}
    else:
        te_sd = {k.removeprefix("text_model."): v for k, v in te_sd.items()}
    return _materialise(model, te_sd, what, dtype)


def _convert_text(sd: dict, spec: TextEncoderSpec) -> dict:
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint, convert_open_clip_checkpoint

    sub = {k: v for k, v in sd.items() if k.startswith(spec.prefix)}
    if spec.layout == "clip":
        out = convert_ldm_clip_checkpoint(sub, remove_prefix=spec.prefix)
    else:
        class _Stub:  # the converter only reads the width from its config when the file has no projection
            class config:
                hidden_size = spec.config["hidden_size"]

        out = convert_open_clip_checkpoint(_Stub, sub, prefix=spec.prefix)
    n_layers = spec.config["num_hidden_layers"]
    kept = {}
    for key, value in out.items():
        bare = key.removeprefix("text_model.")
        if bare.startswith("encoder.layers."):
            if int(bare.split(".")[2]) >= n_layers:
                continue  # SD 2.x: the last OpenCLIP block, which SD 2.x does not use
        elif bare == "embeddings.position_ids":
            continue
        elif key.startswith("text_projection") and not spec.with_projection:
            continue
        kept[key] = value
    return kept


# -- single-file checkpoints ------------------------------------------------------------------

@_serialised
def load_checkpoint(path: str | Path, *, policy: DevicePolicy | None = None,
                    prediction_type: str | None = None, embeddings_dir: str | None = None,
                    progress: Progress = None, load_text: bool = True, load_vae: bool = True,
                    ) -> tuple[DiffusionModel, TextEncoder | None, Vae | None]:
    """MODEL, CLIP and VAE of an original-layout checkpoint (``.safetensors`` or ``.ckpt``).

    ``prediction_type`` ("epsilon"/"v_prediction") overrides detection. The VAE is None when the
    file has none.
    """
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    path = Path(path)
    policy = policy or DevicePolicy.detect()
    start = time.perf_counter()
    sd = load_state_dict(path, what="checkpoint", progress=progress)
    info = detect.detect_checkpoint(sd, name=path.name, metadata=read_metadata(path))
    if prediction_type:
        info.prediction_type, info.prediction_source = prediction_type, "override"
        info.scheduler_config["prediction_type"] = prediction_type
    log.info("%s: %s checkpoint, %s (%s)%s", path.name, info.family, info.prediction_type,
             info.prediction_source, ", inpainting" if info.inpaint else "")

    if info.family == "sdxl":
        detect.finish_sdxl_config(info.unet_config, info.text_encoders[1].config["projection_dim"])
    unet_sd = convert_ldm_unet_checkpoint({k: v for k, v in sd.items() if k.startswith(detect.UNET_PREFIX)},
                                          info.unet_config)
    log.info("  UNet: %s, %d tensors", human_size(_nbytes(unet_sd)), len(unet_sd))
    unet = build_unet(unet_sd, info.unet_config, policy.dtype, f"{path.name} (UNet)")
    # Drop the file's UNet tensors now (and EMA copies), so a converted copy and the file's
    # originals are not both held while the text encoders and VAE are built.
    del unet_sd
    for key in [k for k in sd if k.startswith((detect.UNET_PREFIX, "model_ema."))]:
        del sd[key]
    model = DiffusionModel(
        unet=unet, family=info.family, prediction_type=info.prediction_type,
        scheduler_config=info.scheduler_config, latent_scaling_factor=info.latent_scaling_factor,
        source=str(path), options=_model_options(info))

    clip = None
    if load_text:
        clip = _text_from_single_file(sd, info, policy, path, embeddings_dir)

    vae = None
    if load_vae and info.vae_config is not None:
        vae_sd = {"first_stage_model." + k.removeprefix(info.vae_prefix): v
                  for k, v in sd.items() if k.startswith(info.vae_prefix)}
        vae_sd = convert_ldm_vae_checkpoint(vae_sd, info.vae_config)
        log.info("  VAE: %s, %d tensors", human_size(_nbytes(vae_sd)), len(vae_sd))
        module = build_vae(vae_sd, info.vae_config, policy.vae_dtype, f"{path.name} (VAE)")
        vae = Vae(vae=module, family=detect.latent_space(info.family),
                  scaling_factor=info.latent_scaling_factor,
                  latent_channels=info.vae_config["latent_channels"], source=str(path))
    elif load_vae:
        log.warning("%s has no VAE weights; load one with VAELoader", path.name)
    del sd
    log.info("Loaded %s in %.1f s", path.name, time.perf_counter() - start)
    return model, clip, vae


def _model_options(info: CheckpointInfo) -> dict:
    return {"in_channels": info.unet_config["in_channels"], "inpaint": info.inpaint,
            "prediction_source": info.prediction_source}


def _text_from_single_file(sd, info: CheckpointInfo, policy, path: Path, embeddings_dir):
    encoders, tokenizers = [], []
    for i, spec in enumerate(info.text_encoders):
        te_sd = _convert_text(sd, spec)
        log.info("  text encoder %d (%s, %d layers): %s", i + 1, spec.layout,
                 spec.config["num_hidden_layers"], human_size(_nbytes(te_sd)))
        encoders.append(build_text_encoder(te_sd, spec.config, spec.with_projection, policy.dtype,
                                           f"{path.name} (text encoder {i + 1})"))
        tokenizers.append(clip_tokenizer(spec.tokenizer))
    return TextEncoder(tokenizers=tuple(tokenizers), encoders=tuple(encoders), family=info.family,
                       embeddings_dir=embeddings_dir, source=str(path))


# -- diffusers folders ------------------------------------------------------------------------

def _family_of_folder(folder: Path, unet_cfg: dict) -> str:
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    cls = index.get("_class_name", "")
    if "XL" in cls or unet_cfg.get("addition_embed_type") == "text_time":
        return "sdxl"
    ctx = unet_cfg.get("cross_attention_dim")
    if ctx == 1024:
        return "sd2"
    if ctx == 768:
        return "sd1"
    te_cfg_path = folder / "text_encoder" / "config.json"
    if te_cfg_path.is_file():
        te = json.loads(te_cfg_path.read_text(encoding="utf-8"))
        if te.get("hidden_act") == "gelu":  # OpenCLIP (SD 2.x); OpenAI CLIP uses quick_gelu
            return "sd2"
    return "sd1"


@_serialised
def load_diffusers(folder: str | Path, *, policy: DevicePolicy | None = None,
                   prediction_type: str | None = None, embeddings_dir: str | None = None,
                   ) -> tuple[DiffusionModel, TextEncoder, Vae]:
    """MODEL, CLIP and VAE of a diffusers folder (``model_index.json``, ``unet/``, ``vae/``, …)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTokenizer

    folder = Path(folder)
    if not (folder / "model_index.json").is_file():
        raise ModelFileError(f"{folder} is not a diffusers model folder (no model_index.json)")
    for sub in ("unet", "vae", "text_encoder"):
        if not (folder / sub).is_dir():
            raise ModelFileError(f"{folder.name}: the diffusers folder has no {sub}/ subfolder; Loom "
                                 "loads Stable Diffusion 1.x/2.x/SDXL pipelines")
    policy = policy or DevicePolicy.detect()
    start = time.perf_counter()
    unet = _folder_component(folder, "unet", UNet2DConditionModel, policy.dtype)
    family = _family_of_folder(folder, dict(unet.config))
    vae_module = _folder_component(folder, "vae", AutoencoderKL, policy.vae_dtype)
    sched_path = folder / "scheduler" / "scheduler_config.json"
    sched = (json.loads(sched_path.read_text(encoding="utf-8")) if sched_path.is_file()
             else base_config(f"{detect.REFERENCE[family]}_scheduler"))
    pred = prediction_type or sched.get("prediction_type", "epsilon")
    sched["prediction_type"] = pred

    encoders, tokenizers = [], []
    names = [("text_encoder", "tokenizer", False)]
    if family == "sdxl":
        names.append(("text_encoder_2", "tokenizer_2", True))
    for te_name, tok_name, with_projection in names:
        config = _read_json(folder / te_name / "config.json")
        te_sd = _folder_weights(folder / te_name, "model")
        encoders.append(build_text_encoder(te_sd, config, with_projection, policy.dtype,
                                           f"{folder.name} ({te_name})"))
        if (folder / tok_name / "vocab.json").is_file():
            tok = CLIPTokenizer.from_pretrained(folder / tok_name, local_files_only=True)
        else:
            tok = clip_tokenizer("open_clip" if (family == "sd2" or te_name.endswith("_2")) else "clip_l")
        tokenizers.append(tok)
    scaling = float(vae_module.config.get("scaling_factor", detect.LATENT_SCALE[family]))
    model = DiffusionModel(unet=unet, family=family, prediction_type=pred, scheduler_config=sched,
                           latent_scaling_factor=scaling, source=str(folder),
                           options={"in_channels": unet.config.in_channels,
                                    "inpaint": unet.config.in_channels == 9,
                                    "prediction_source": "override" if prediction_type
                                    else "scheduler config"})
    clip = TextEncoder(tokenizers=tuple(tokenizers), encoders=tuple(encoders), family=family,
                       embeddings_dir=embeddings_dir, source=str(folder))
    vae = Vae(vae=vae_module, family=detect.latent_space(family), scaling_factor=scaling,
              latent_channels=vae_module.config.latent_channels, source=str(folder))
    log.info("Loaded diffusers %s model %s in %.1f s", family, folder.name, time.perf_counter() - start)
    return model, clip, vae


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelFileError(f"{path.parent.parent.name}: cannot read {path.parent.name}/"
                             f"{path.name} ({e})") from e


def _folder_weights(sub: Path, stem: str) -> dict:
    """The tensors of one component folder: ``STEM.safetensors`` (or ``.bin``), or the shards
    an ``STEM.safetensors.index.json`` lists."""
    for ext in (".safetensors", ".bin"):
        single = sub / f"{stem}{ext}"
        if single.is_file():
            return load_state_dict(single, what=sub.name)
        index = sub / f"{stem}{ext}.index.json"
        if index.is_file():
            shards = sorted(set(_read_json(index).get("weight_map", {}).values()))
            sd: dict = {}
            for name in shards:
                if not isinstance(name, str) or Path(name).name != name:
                    raise ModelFileError(f"{index}: bad shard name {name!r}")
                sd.update(load_state_dict(sub / name, what=sub.name))
            return sd
    raise ModelFileError(f"{sub.parent.name}: {sub.name}/ has no {stem}.safetensors (or .bin) "
                         "weights")


def _folder_component(folder: Path, name: str, cls, dtype: torch.dtype):
    """A diffusers model (UNet, VAE) from ``folder/name``: its config and weights."""
    sub = folder / name
    config = _read_json(sub / "config.json")
    module = _empty(lambda: cls.from_config(config))
    sd = _folder_weights(sub, "diffusion_pytorch_model")
    fix = getattr(module, "_fix_state_dict_keys_on_load", None)  # old VAE attention names
    if callable(fix):
        fix(sd)
    return _materialise(module, sd, f"{folder.name} ({name})", dtype)


# -- VAE files --------------------------------------------------------------------------------

@_serialised
def load_vae_file(path: str | Path, *, policy: DevicePolicy | None = None, progress: Progress = None) -> Vae:
    """A ``VAE`` from models/vae/: original or diffusers layout, or the VAE of a full checkpoint."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    path = Path(path)
    policy = policy or DevicePolicy.detect()
    sd = load_state_dict(path, what="VAE", progress=progress)
    metadata = read_metadata(path)
    kind = detect.classify(sd)
    family, sure = detect.guess_vae_family(path.name, metadata)
    if kind == "checkpoint":
        info = detect.detect_checkpoint(sd, name=path.name, metadata=metadata)
        if info.vae_config is None:
            raise ModelFileError(f"{path.name} is a {info.family} checkpoint without VAE weights")
        family, sure = detect.latent_space(info.family), "checkpoint"
        prefix = info.vae_prefix
    elif kind == "vae":
        prefix = next((p for p in detect.VAE_PREFIXES if f"{p}decoder.conv_in.weight" in sd), "")
    else:
        raise detect.wrong_kind_error(path.name, sd, "a VAE")
    if "encoder.down_blocks.0.resnets.0.conv1.weight" in sd:  # diffusers layout
        config = detect.infer_diffusers_vae_config(sd, family)
        vae_sd = {k: v for k, v in sd.items() if k.startswith(("encoder.", "decoder.", "quant_conv",
                                                                "post_quant_conv"))}
    else:
        config = detect.infer_vae_config(sd, prefix, family)
        vae_sd = {"first_stage_model." + k.removeprefix(prefix): v for k, v in sd.items()
                  if k.startswith(prefix) and (prefix or k.startswith(("encoder.", "decoder.", "quant_conv",
                                                                       "post_quant_conv")))}
        vae_sd = convert_ldm_vae_checkpoint(vae_sd, config)
    module = build_vae(vae_sd, config, policy.vae_dtype, path.name)
    scaling = detect.LATENT_SCALE.get(family, float(config.get("scaling_factor", 0.18215)))
    log.info("Loaded VAE %s (%s latent space%s)", path.name, family or "unknown",
             f", from {sure}" if sure else "")
    return Vae(vae=module, family=family, scaling_factor=scaling,
               latent_channels=config["latent_channels"], source=str(path))

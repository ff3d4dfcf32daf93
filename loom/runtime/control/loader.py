"""Loading ControlNets and T2I-Adapters from ``models/controlnet/``, offline.

Single files (``.safetensors``; ``.pth``/``.bin`` through the safe reader) in the original or the
diffusers layout, and diffusers folders (``config.json`` + ``diffusion_pytorch_model.*``).
Original-layout ControlNets are converted with diffusers' own converter; configs come from the
folder's ``config.json`` or are read off the weights (:mod:`.detect`). Modules are built on the
CPU without random initialisation and handed over in a :class:`ControlModel`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from loom.runtime.control.detect import ControlInfo, detect_control, original_adapter_to_diffusers
from loom.runtime.control.types import ControlModel
from loom.runtime.devices import DevicePolicy
from loom.runtime.sd.loader import _empty, _folder_weights, _materialise, _read_json, _serialised
from loom.runtime.sd.reader import ModelFileError, load_state_dict

log = logging.getLogger("loom.models")


@_serialised
def load_control(path: str | Path, *, policy: DevicePolicy | None = None,
                 base_unet: torch.nn.Module | None = None, expect: str | None = None,
                 ) -> ControlModel:
    """A CONTROL_NET from a file or diffusers folder.

    ``base_unet``: for "diff" ControlNets (files with a ``difference`` marker, whose weights are
    differences to a base model), the UNet whose weights they are added to. ``expect``:
    "t2i_adapter" or "controlnet" to refuse the other kind with a clear message.
    """
    path = Path(path)
    policy = policy or DevicePolicy.detect()
    if path.is_dir():
        model = _load_folder(path, policy)
    else:
        sd = load_state_dict(path, what="ControlNet")
        info = detect_control(sd, name=path.name)
        if info.kind == "controlnet" and "shuffle" in path.name.lower():
            # Shuffle ControlNets pool their residuals to one value per channel (the
            # published config says so; the weights cannot): known by name, as elsewhere.
            info.config["global_pool_conditions"] = True
        if info.diff and base_unet is None:
            raise ModelFileError(f"{path.name} is a 'diff' ControlNet (differences to a base "
                                 "model): load it with DiffControlNetLoader and connect the model")
        module = _build(info, sd, policy.dtype, path.name, base_unet if info.diff else None)
        model = ControlModel(module=module, kind=info.kind, family=info.family, source=str(path))
    log.info("Loaded %s %s (%s)", model.family, model.kind, path.name)
    check_kind(model, expect)
    return model


def check_kind(model: ControlModel, expect: str | None) -> ControlModel:
    """``model``, or a clear error when it is not the ``expect``-ed kind."""
    if expect and model.kind != expect:
        names = {"controlnet": "a ControlNet", "t2i_adapter": "a T2I-Adapter"}
        loader = "ControlNetLoader" if model.kind == "controlnet" else "T2IAdapterLoader"
        raise ModelFileError(f"{model.name} is {names[model.kind]}, not {names[expect]}: use "
                             f"{loader}")
    return model


def weights_file(path: str | Path) -> Path:
    """The file whose changes mean a new load: the file itself, or a folder's weights."""
    path = Path(path)
    if path.is_dir():
        for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
                     "config.json"):
            if (path / name).is_file():
                return path / name
    return path


def _build(info: ControlInfo, sd: dict, dtype: torch.dtype, name: str,
           base_unet: torch.nn.Module | None) -> torch.nn.Module:
    from diffusers import ControlNetModel, T2IAdapter

    cfg = {k: v for k, v in info.config.items() if not k.startswith("_")}
    if info.kind == "t2i_adapter":
        weights = sd if info.layout == "diffusers" else original_adapter_to_diffusers(sd)
        weights = {k: v for k, v in weights.items() if k.startswith("adapter.")}
        module = _empty(lambda: T2IAdapter(**cfg))
        return _materialise(module, weights, name, dtype)
    if info.layout == "original":
        from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

        body = {k.removeprefix(info.prefix): v for k, v in sd.items() if k.startswith(info.prefix)}
        weights = convert_controlnet_checkpoint(body, cfg)
        # diffusers' converter leaves SDXL's size embedding (label_emb) out
        for i, j in (("1", "0"), ("2", "2")):
            for p in ("weight", "bias"):
                value = body.get(f"label_emb.0.{j}.{p}")
                if value is not None:
                    weights[f"add_embedding.linear_{i}.{p}"] = value
    else:
        weights = dict(sd)
    weights = {k: v for k, v in weights.items() if v is not None and k != "difference"}
    if base_unet is not None:
        weights = _add_base(weights, base_unet, name)
    module = _empty(lambda: ControlNetModel(**cfg))
    return _materialise(module, weights, name, dtype)


def _add_base(weights: dict, unet: torch.nn.Module, name: str) -> dict:
    """A diff ControlNet's weights plus the base UNet's under the same names (its copy of the
    encoder); the ControlNet's own layers (hint embedding, zero convs) are kept as they are."""
    base = unet.state_dict()
    out, added = {}, 0
    for key, value in weights.items():
        own = base.get(key)
        if own is not None and own.shape == value.shape:
            out[key] = value.float() + own.to("cpu", torch.float32)
            added += 1
        else:
            out[key] = value
    if not added:
        raise ModelFileError(f"{name}: no weight of this diff ControlNet matches the model's UNet")
    return out


def _load_folder(folder: Path, policy: DevicePolicy) -> ControlModel:
    from diffusers import ControlNetModel, T2IAdapter

    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelFileError(f"{folder.name} is a folder without config.json: not a diffusers "
                             "ControlNet or T2I-Adapter")
    config = _read_json(config_path)
    cls_name = config.get("_class_name", "")
    if cls_name == "ControlNetModel":
        cls, kind = ControlNetModel, "controlnet"
        if config.get("addition_embed_type") == "text_time":
            family = "sdxl"
        else:
            family = "sd2" if config.get("cross_attention_dim") == 1024 else "sd1"
    elif cls_name == "T2IAdapter":
        cls, kind = T2IAdapter, "t2i_adapter"
        if config.get("adapter_type", "full_adapter") not in ("full_adapter", "full_adapter_xl"):
            raise ModelFileError(f"{folder.name}: {config.get('adapter_type')} T2I-Adapters are "
                                 "not supported yet; full and SDXL ones are")
        family = "sdxl" if config.get("adapter_type") == "full_adapter_xl" else "sd1"
    else:
        raise ModelFileError(f"{folder.name}: config.json describes a {cls_name or 'model'} "
                             "(expected ControlNetModel or T2IAdapter)")
    clean = {k: v for k, v in config.items() if not k.startswith("_")}
    module = _empty(lambda: cls.from_config(clean))
    sd = _folder_weights(folder, "diffusion_pytorch_model")
    module = _materialise(module, sd, folder.name, policy.dtype)
    return ControlModel(module=module, kind=kind, family=family, source=str(folder))


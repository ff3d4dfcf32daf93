"""Random-weight annotator files under their usual names, for the preprocessor tests.

``write_random_annotator(folder, key, seed)`` writes ``models/annotators/<usual name>`` with
random tensors of the right shapes, in the layout the real file has (OpenPose's unprefixed layer
names, PiDiNet's ``state_dict`` / NormalBae's ``model`` wrappers with ``module.`` names), as
fp16 to keep the files small. The networks are built on the meta device to learn the shapes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from loom.runtime.annotators import models


def _network(key: str) -> torch.nn.Module:
    """An empty network of the annotator (meta tensors), the way models.py builds it."""
    import functools
    import types

    if key.startswith("openpose"):
        from controlnet_aux.open_pose.face import FaceNet
        from controlnet_aux.open_pose.model import bodypose_model, handpose_model

        return {"openpose_body": bodypose_model, "openpose_hand": handpose_model,
                "openpose_face": FaceNet}[key]()
    if key == "hed":
        from controlnet_aux.hed import ControlNetHED_Apache2

        return ControlNetHED_Apache2()
    if key == "pidinet":
        from controlnet_aux.pidi.model import pidinet

        return pidinet()
    if key in ("lineart", "lineart_coarse"):
        from controlnet_aux.lineart import Generator

        return Generator(3, 1, 3)
    if key == "lineart_anime":
        from controlnet_aux.lineart_anime import UnetGenerator

        norm = functools.partial(torch.nn.InstanceNorm2d, affine=False, track_running_stats=False)
        return UnetGenerator(3, 1, 8, 64, norm_layer=norm, use_dropout=False)
    if key == "mlsd":
        from controlnet_aux.mlsd.models.mbv2_mlsd_large import MobileV2_MLSD_Large

        return MobileV2_MLSD_Large()
    if key == "midas":
        from controlnet_aux.midas.midas.dpt_depth import DPTDepthModel

        return DPTDepthModel(path=None, backbone="vitb_rn50_384", non_negative=True)
    if key == "normal_bae":
        from controlnet_aux.normalbae.nets.NNET import NNET

        return NNET(types.SimpleNamespace(mode="client", architecture="BN", pretrained="scannet",
                                          sampling_ratio=0.4, importance_ratio=0.7))
    raise KeyError(key)


def random_state_dict(key: str, seed: int = 0) -> dict[str, torch.Tensor]:
    if key.startswith("depth_anything"):
        from transformers import DepthAnythingForDepthEstimation

        from loom.runtime.annotators.depth_anything import config_for

        with torch.device("meta"):
            net = DepthAnythingForDepthEstimation(config_for(key))
    else:
        with torch.device("meta"):
            net = _network(key)
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in net.state_dict().items():
        if not t.dtype.is_floating_point:
            out[name] = torch.zeros(t.shape, dtype=t.dtype)
        elif name.endswith("running_var"):
            out[name] = (torch.rand(t.shape, generator=gen) + 0.5).half()
        elif name.endswith("running_mean") or name.endswith(".bias"):
            out[name] = (torch.randn(t.shape, generator=gen) * 0.01).half()
        else:
            fan_in = max(1, t[0].numel()) if t.dim() > 1 else 1
            std = (1.0 / fan_in) ** 0.5 if t.dim() > 1 else 0.05
            out[name] = (torch.randn(t.shape, generator=gen) * std).half()
            if name.endswith("norm.weight") or ".bn" in name and name.endswith("weight"):
                out[name] = (1 + out[name].float() * 0.1).half()
    return out


def depth_anything_original(sd: dict) -> dict:
    """transformers' DepthAnything names -> the original checkpoint's (the inverse of
    loom.runtime.annotators.depth_anything.to_transformers, written out separately)."""
    import re

    from loom.runtime.annotators import depth_anything as da

    fixed = {v: k for k, v in da._FIXED.items()}
    block = {v: k for k, v in da._BLOCK.items()}
    unit = {v: k for k, v in da._UNIT.items()}
    out, qkv = {}, {}
    for key, value in sd.items():
        if key in fixed:
            out[fixed[key]] = value
        elif m := re.fullmatch(r"backbone\.encoder\.layer\.(\d+)\.attention\.([qkv])_proj\.(\w+)",
                               key):
            qkv.setdefault((m[1], m[3]), {})[m[2]] = value
        elif m := re.fullmatch(r"backbone\.encoder\.layer\.(\d+)\.(.+)", key):
            if m[2] not in block and m[2].split(".")[0] not in ("norm1", "norm2", "mlp"):
                raise KeyError(key)  # a name the original layout does not have
            out[f"pretrained.blocks.{m[1]}.{block.get(m[2], m[2])}"] = value
        elif m := re.fullmatch(r"neck\.reassemble_stage\.layers\.(\d)\.(projection|resize)\.(\w+)",
                               key):
            name = "projects" if m[2] == "projection" else "resize_layers"
            out[f"depth_head.{name}.{m[1]}.{m[3]}"] = value
        elif m := re.fullmatch(r"neck\.fusion_stage\.layers\.(\d)\.(.+)\.(weight|bias)", key):
            out[f"depth_head.scratch.refinenet{4 - int(m[1])}.{unit[m[2]]}.{m[3]}"] = value
        elif m := re.fullmatch(r"neck\.convs\.(\d)\.weight", key):
            out[f"depth_head.scratch.layer{int(m[1]) + 1}_rn.weight"] = value
        else:
            raise KeyError(key)
    for (i, kind), parts in qkv.items():
        out[f"pretrained.blocks.{i}.attn.qkv.{kind}"] = torch.cat(
            [parts["q"], parts["k"], parts["v"]])
    return out


def file_layout(key: str, sd: dict) -> dict:
    """The state dict as the real file stores it."""
    if key.startswith("depth_anything"):
        return depth_anything_original(sd)
    if key.startswith("openpose_") and key != "openpose_face":
        return {name.split(".", 1)[1]: t for name, t in sd.items()}
    if key == "pidinet":
        return {"state_dict": {f"module.{k}": v for k, v in sd.items()}}
    if key == "normal_bae":
        return {"model": {f"module.{k}": v for k, v in sd.items()}}
    return sd


def write_random_annotator(folder: Path, key: str, seed: int = 0) -> Path:
    path = Path(folder) / models.SPECS[key].filename
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(file_layout(key, random_state_dict(key, seed)), path)
    return path

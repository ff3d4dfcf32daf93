"""Latent nodes: empty latents, resizing, and batch slicing/repeating (ComfyUI's names).

A LATENT is ``{"samples": [B, 4, H/8, W/8], "noise_mask"?: …, "batch_index"?: [int]}`` (see
``loom.runtime.sd.types``). ``batch_index`` records which item of the original batch each
latent is, so the sampler gives it that item's noise (``loom.runtime.sampling.noise``).
"""

from __future__ import annotations

import torch

from loom.nodeapi import Combo, Float, Int, Link, Node, Output
from loom.runtime.sampling.resize import CROP_METHODS, LATENT_METHODS, fill_aspect, resize

MAX_RESOLUTION = 16384
LATENT_CHANNELS = 4


class EmptyLatentImage(Node):
    category = "latent"
    display_name = "Empty Latent Image"
    description = "A batch of empty (zero) latents to start txt2img from."
    inputs = {
        "width": Int(512, min=16, max=MAX_RESOLUTION, step=8, tooltip="Image width in pixels."),
        "height": Int(512, min=16, max=MAX_RESOLUTION, step=8, tooltip="Image height in pixels."),
        "batch_size": Int(1, min=1, max=4096, tooltip="Number of images."),
    }
    outputs = (Output("LATENT"),)

    def run(self, width, height, batch_size=1):
        samples = torch.zeros([batch_size, LATENT_CHANNELS, height // 8, width // 8],
                              dtype=torch.float32)
        return ({"samples": samples},)


def _upscaled(samples: dict, width: int, height: int, method: str, crop: str) -> dict:
    out = dict(samples)
    out["samples"] = resize(samples["samples"], width, height, method, crop)
    return out


class LatentUpscale(Node):
    category = "latent"
    display_name = "Upscale Latent"
    description = ("Resize latents to a pixel size (divided by 8); 0 for width or height keeps "
                   "the aspect ratio.")
    inputs = {
        "samples": Link("LATENT"),
        "upscale_method": Combo(LATENT_METHODS, default=LATENT_METHODS[0]),
        "width": Int(512, min=0, max=MAX_RESOLUTION, step=8),
        "height": Int(512, min=0, max=MAX_RESOLUTION, step=8),
        "crop": Combo(CROP_METHODS, default=CROP_METHODS[0]),
    }
    outputs = (Output("LATENT"),)

    def run(self, samples, upscale_method, width, height, crop="disabled"):
        if width == 0 and height == 0:
            return (dict(samples),)
        h, w = samples["samples"].shape[-2:]
        width, height = fill_aspect(width, height, w, h, minimum=64)
        return (_upscaled(samples, width // 8, height // 8, upscale_method, crop),)


class LatentUpscaleBy(Node):
    category = "latent"
    display_name = "Upscale Latent By"
    inputs = {
        "samples": Link("LATENT"),
        "upscale_method": Combo(LATENT_METHODS, default=LATENT_METHODS[0]),
        "scale_by": Float(1.5, min=0.01, max=8.0, step=0.01),
    }
    outputs = (Output("LATENT"),)

    def run(self, samples, upscale_method, scale_by):
        h, w = samples["samples"].shape[-2:]
        width, height = max(1, round(w * scale_by)), max(1, round(h * scale_by))
        return (_upscaled(samples, width, height, upscale_method, "disabled"),)


def _batch_index(samples: dict) -> list[int]:
    index = samples.get("batch_index")
    return list(index) if index is not None else list(range(samples["samples"].shape[0]))


class LatentFromBatch(Node):
    category = "latent/batch"
    display_name = "Latent From Batch"
    description = ("Take items out of a latent batch. They keep their batch position, so they "
                   "are sampled with the same noise as inside the batch.")
    inputs = {
        "samples": Link("LATENT"),
        "batch_index": Int(0, min=0, max=63),
        "length": Int(1, min=1, max=64),
    }
    outputs = (Output("LATENT"),)

    def run(self, samples, batch_index, length):
        s = samples["samples"]
        start = min(batch_index, s.shape[0] - 1)
        length = min(s.shape[0] - start, length)
        out = dict(samples)
        out["samples"] = s[start:start + length].clone()
        mask = samples.get("noise_mask")
        if mask is not None:
            if mask.shape[0] == 1:
                out["noise_mask"] = mask.clone()
            else:
                if mask.shape[0] < s.shape[0]:  # repeat to the batch, as the sampler would
                    reps = -(-s.shape[0] // mask.shape[0])
                    mask = mask.repeat(reps, *([1] * (mask.dim() - 1)))[:s.shape[0]]
                out["noise_mask"] = mask[start:start + length].clone()
        out["batch_index"] = _batch_index(samples)[start:start + length]
        return (out,)


class RepeatLatentBatch(Node):
    category = "latent/batch"
    display_name = "Repeat Latent Batch"
    description = "Repeat a latent batch; each copy gets its own noise (new batch positions)."
    inputs = {
        "samples": Link("LATENT"),
        "amount": Int(1, min=1, max=64),
    }
    outputs = (Output("LATENT"),)

    def run(self, samples, amount):
        s = samples["samples"]
        out = dict(samples)
        out["samples"] = s.repeat(amount, 1, 1, 1)
        mask = samples.get("noise_mask")
        if mask is not None and mask.shape[0] > 1:
            if mask.shape[0] < s.shape[0]:
                reps = -(-s.shape[0] // mask.shape[0])
                mask = mask.repeat(reps, *([1] * (mask.dim() - 1)))[:s.shape[0]]
            out["noise_mask"] = mask.repeat(amount, *([1] * (mask.dim() - 1)))
        if "batch_index" in samples:
            index = list(samples["batch_index"])
            offset = max(index) - min(index) + 1
            out["batch_index"] = index + [i + k * offset for k in range(1, amount) for i in index]
        return (out,)


NODES = [EmptyLatentImage, LatentUpscale, LatentUpscaleBy, LatentFromBatch, RepeatLatentBatch]

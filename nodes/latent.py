"""Latent nodes: empty latents, resizing, batch slicing/repeating, and saving/loading latents
as files (ComfyUI's names and ``.latent`` format).

A LATENT is ``{"samples": [B, 4, H/8, W/8], "noise_mask"?: …, "batch_index"?: [int]}`` (see
``loom.runtime.sd.types``). ``batch_index`` records which item of the original batch each
latent is, so the sampler gives it that item's noise (``loom.runtime.sampling.noise``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from loom import files
from loom.nodeapi import Allocation, Combo, Hidden, Int, Link, Node, NodeResult, Output, String, pixels
from loom.runtime.sampling.resize import CROP_METHODS, LATENT_METHODS, fill_aspect, resize, scaled_shape
from nodes.image_ops import scale_by_allocation, scale_by_inputs

LATENT_CHANNELS = 4


class EmptyLatentImage(Node, category="latent", display_name="Empty Latent Image"):
    """A batch of empty (zero) latents to start txt2img from."""
    inputs = {
        "width": pixels(512, min=16, step=8, tooltip="Image width in pixels."),
        "height": pixels(512, min=16, step=8, tooltip="Image height in pixels."),
        "batch_size": Int(1, min=1, max=4096, tooltip="Number of images."),
    }
    outputs = (Output("LATENT"),)

    @classmethod
    def allocation(cls, ctx, width=512, height=512, batch_size=1, **_):
        return Allocation(((batch_size, LATENT_CHANNELS, height // 8, width // 8),),
                          ("width", "height", "batch_size"))

    def run(self, width, height, batch_size=1):
        samples = torch.zeros([batch_size, LATENT_CHANNELS, height // 8, width // 8],
                              dtype=torch.float32)
        return ({"samples": samples},)


def _upscaled(samples: dict, width: int, height: int, method: str, crop: str) -> dict:
    out = dict(samples)
    out["samples"] = resize(samples["samples"], width, height, method, crop)
    return out


class LatentUpscale(Node, category="latent", display_name="Upscale Latent"):
    """Resize latents to a pixel size (divided by 8); 0 for width or height keeps the aspect
    ratio."""
    inputs = {
        "samples": Link("LATENT"),
        "upscale_method": Combo(LATENT_METHODS, default=LATENT_METHODS[0]),
        "width": pixels(512, step=8), "height": pixels(512, step=8),
        "crop": Combo(CROP_METHODS, default=CROP_METHODS[0]),
    }
    outputs = (Output("LATENT"),)

    @classmethod
    def allocation(cls, ctx, samples=None, width=0, height=0, **_):
        if samples is None:
            return None
        b, c, h, w = samples
        if width or height:
            width, height = fill_aspect(width, height, w, h, minimum=64)
            h, w = height // 8, width // 8
        return Allocation(((b, c, h, w),), ("width", "height"))

    def run(self, samples, upscale_method, width, height, crop="disabled"):
        if width == 0 and height == 0:
            return (dict(samples),)
        h, w = samples["samples"].shape[-2:]
        width, height = fill_aspect(width, height, w, h, minimum=64)
        return (_upscaled(samples, width // 8, height // 8, upscale_method, crop),)


class LatentUpscaleBy(Node, category="latent", display_name="Upscale Latent By"):
    inputs = {"samples": Link("LATENT"), **scale_by_inputs(LATENT_METHODS, default=1.5)}
    outputs = (Output("LATENT"),)
    allocation = scale_by_allocation("samples", channels_last=False)

    def run(self, samples, upscale_method, scale_by):
        height, width = scaled_shape(samples["samples"].shape, scale_by, channels_last=False)[-2:]
        return (_upscaled(samples, width, height, upscale_method, "disabled"),)


def _batch_index(samples: dict) -> list[int]:
    index = samples.get("batch_index")
    return list(index) if index is not None else list(range(samples["samples"].shape[0]))


class LatentFromBatch(Node, category="latent/batch", display_name="Latent From Batch"):
    """Take items out of a latent batch. They keep their batch position, so they are sampled with
    the same noise as inside the batch."""
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


class RepeatLatentBatch(Node, category="latent/batch", display_name="Repeat Latent Batch"):
    """Repeat a latent batch; each copy gets its own noise (new batch positions)."""
    inputs = {
        "samples": Link("LATENT"),
        "amount": Int(1, min=1, max=64),
    }
    outputs = (Output("LATENT"),)

    @classmethod
    def allocation(cls, ctx, samples=None, amount=1, **_):
        if samples is None:
            return None
        b, *rest = samples
        return Allocation(((b * amount, *rest),), ("amount",))

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


# -- .latent files ------------------------------------------------------------------------------
# ComfyUI's format: a safetensors file with the samples under "latent_tensor" and an empty
# "latent_format_version_0" tensor; files without that marker are from before the format kept
# latents unscaled, and hold them multiplied by SD's 0.18215.
LATENT_EXT = ".latent"
LATENT_KEY, VERSION_KEY = "latent_tensor", "latent_format_version_0"
LEGACY_SCALE = 0.18215


def list_input_latents(ctx: Any) -> list[str]:
    return files.list_input_files(ctx, (LATENT_EXT,))


class SaveLatent(Node, category="_for_testing", display_name="Save Latent"):
    """Saves latents to output/ as .latent files (ComfyUI's format, with the prompt and workflow as
    metadata); copy one to input/ to load it with Load Latent."""
    output_node = True
    inputs = {
        "samples": Link("LATENT"),
        "filename_prefix": String("latents/ComfyUI"),
        "prompt": Hidden("PROMPT"),
        "extra_pnginfo": Hidden("EXTRA_PNGINFO"),
    }
    outputs = ()

    def run(self, samples, filename_prefix="latents/ComfyUI", prompt=None, extra_pnginfo=None):
        paths = self.ctx.paths
        if paths is None:
            raise RuntimeError("no output folder: the node was run without ctx.paths")
        root = Path(paths.output_dir)
        root.mkdir(parents=True, exist_ok=True)
        folder, stem = files.split_prefix(root, filename_prefix)
        metadata = None
        if self.ctx.settings is None or not self.ctx.settings.disable_metadata:
            metadata = {"prompt": json.dumps(prompt)} if prompt is not None else {}
            if isinstance(extra_pnginfo, dict):
                metadata.update({str(k): json.dumps(v) for k, v in extra_pnginfo.items()})
        data = safetensors.torch.save({LATENT_KEY: samples["samples"].contiguous().cpu(),
                                       VERSION_KEY: torch.tensor([])}, metadata=metadata or None)
        counter = files.next_counter(folder, stem, LATENT_EXT)
        name, _ = files.write_atomic(folder, stem, counter, LATENT_EXT, lambda f: f.write(data),
                                     self.ctx.saved_file)
        subfolder = folder.resolve().relative_to(root.resolve()).as_posix()
        return NodeResult(outputs=(), ui={"latents": [
            {"filename": name, "subfolder": "" if subfolder == "." else subfolder, "type": "output"}]})


class LoadLatent(Node, category="_for_testing", display_name="Load Latent"):
    """Loads a .latent file (as Save Latent writes them) from the input folder."""
    inputs = {"latent": Combo(list_input_latents, tooltip="A .latent file in the input folder.")}
    outputs = (Output("LATENT"),)

    @classmethod
    def fingerprint(cls, ctx, latent=None, **_):
        return files.input_fingerprint(ctx, latent)

    @classmethod
    def validate_inputs(cls, ctx, latent=None, **_):
        return files.missing_input_message(ctx, latent, "latent file", "Latent file")

    def run(self, latent):
        path = files.input_path(self.ctx, latent)
        try:
            tensors = safetensors.torch.load_file(str(path), device="cpu")
        except Exception as e:  # not a safetensors file at all
            raise ValueError(f"{latent!r} is not a .latent file (safetensors): {e}") from None
        if LATENT_KEY not in tensors:
            raise ValueError(f"{latent!r} holds no '{LATENT_KEY}' tensor (keys: {sorted(tensors)[:5]})")
        scale = 1.0 if VERSION_KEY in tensors else 1.0 / LEGACY_SCALE
        return ({"samples": tensors[LATENT_KEY].float() * scale},)


NODES = [EmptyLatentImage, LatentUpscale, LatentUpscaleBy, LatentFromBatch, RepeatLatentBatch,
         SaveLatent, LoadLatent]

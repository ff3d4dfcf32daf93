"""Upscaling with models (ComfyUI's UpscaleModelLoader / ImageUpscaleWithModel, and two nodes
that resize the model's result to a factor or a size in the same step).

Models come from ``models/upscale_models/``: ESRGAN/RRDBNet, Real-ESRGAN Compact, SwinIR, HAT,
DAT and the rest that spandrel recognises. Set-up installs real Real-ESRGAN weights there.
Images are processed tile by tile (tile size from free memory, halved on out-of-memory),
with progress per tile and interrupt between tiles.
"""

from __future__ import annotations

from loom.nodeapi import Combo, Float, Link, ModelFile, ModelUse, Node, Output, pixels
from loom.runtime.sampling.resize import IMAGE_METHODS, fill_aspect, resize, scaled_shape
from loom.runtime.sd.common import manager_of
from loom.runtime.upscale.model import load_model_file, run_image_model

UPSCALE_PURPOSES = ("SR", "Restoration")


def _upscale(ctx, upscale_model, image):
    return run_image_model(upscale_model, image, manager_of(ctx),
                           progress=lambda done, total: ctx.progress(done, total))


def _resize(image, width: int, height: int, method: str):
    if image.shape[2] == width and image.shape[1] == height:
        return image
    out = resize(image.movedim(-1, 1), width, height, method, "disabled").movedim(1, -1)
    return out.clamp(0.0, 1.0).contiguous()  # bicubic and lanczos overshoot


class UpscaleModelLoader(Node, category="loaders", display_name="Load Upscale Model"):
    """Loads a super-resolution model (models/upscale_models/: ESRGAN, Real-ESRGAN, SwinIR, HAT,
    DAT, … .safetensors or .pth)."""
    inputs = {"model_name": ModelFile("upscale_models", tooltip="The upscale model file.")}
    outputs = (Output("UPSCALE_MODEL"),)

    def run(self, model_name):
        return (load_model_file(self.ctx, "upscale_models", model_name, purposes=UPSCALE_PURPOSES,
                                what="upscale model"),)


class ImageUpscaleWithModel(Node, category="image/upscaling", display_name="Upscale Image (using Model)"):
    """Upscales images by the model's factor (×2, ×4, …), tile by tile."""
    inputs = {"upscale_model": Link("UPSCALE_MODEL"), "image": Link("IMAGE")}
    outputs = (Output("IMAGE"),)

    def uses(self, upscale_model, **_):
        return ModelUse((upscale_model,))  # it tiles (and halves its tiles) on its own

    def run(self, upscale_model, image):
        return (_upscale(self.ctx, upscale_model, image),)


class ImageUpscaleWithModelBy(Node, category="image/upscaling",
                              display_name="Upscale Image By (using Model)"):
    """Upscales with the model, then resizes the result so the image ends up `scale_by` times its
    input size (e.g. a ×4 model for a ×2 result)."""
    inputs = {
        "upscale_model": Link("UPSCALE_MODEL"),
        "image": Link("IMAGE"),
        "scale_by": Float(2.0, min=0.01, max=8.0, step=0.01),
        "resize_method": Combo(IMAGE_METHODS, default="area"),
    }
    outputs = (Output("IMAGE"),)

    def run(self, upscale_model, image, scale_by, resize_method):
        _, height, width, _ = scaled_shape(image.shape, scale_by, channels_last=True)
        return (_resize(_upscale(self.ctx, upscale_model, image), width, height, resize_method),)


class ImageUpscaleWithModelToSize(Node, category="image/upscaling",
                                  display_name="Upscale Image To Size (using Model)"):
    """Upscales with the model, then resizes to width × height (0 for one of them keeps the aspect
    ratio)."""
    inputs = {
        "upscale_model": Link("UPSCALE_MODEL"),
        "image": Link("IMAGE"),
        "width": pixels(2048), "height": pixels(),
        "resize_method": Combo(IMAGE_METHODS, default="area"),
    }
    outputs = (Output("IMAGE"),)

    @classmethod
    def validate_inputs(cls, ctx, width=None, height=None, **_):
        if width == 0 and height == 0:
            return "width and height cannot both be 0: set at least one"
        return None

    def run(self, upscale_model, image, width, height, resize_method):
        h, w = image.shape[1:3]
        width, height = fill_aspect(width, height, w, h)
        return (_resize(_upscale(self.ctx, upscale_model, image), width, height, resize_method),)


NODES = [UpscaleModelLoader, ImageUpscaleWithModel, ImageUpscaleWithModelBy, ImageUpscaleWithModelToSize]

"""Image resizing nodes (ComfyUI's ImageScale / ImageScaleBy).

IMAGE is ``[B, H, W, C]`` float32 in 0..1; resizing happens channels-first.
"""

from __future__ import annotations

from loom.nodeapi import Combo, Float, Int, Link, Node, Output
from loom.runtime.sampling.resize import CROP_METHODS, IMAGE_METHODS, fill_aspect, resize

MAX_RESOLUTION = 16384


def scale_image(image, width: int, height: int, method: str, crop: str = "disabled"):
    x = image.movedim(-1, 1)
    out = resize(x, width, height, method, crop).movedim(1, -1)
    if method in ("bicubic", "lanczos"):  # these overshoot: keep the 0..1 contract
        out = out.clamp(0.0, 1.0)
    return out.contiguous()


class ImageScale(Node):
    category = "image/upscaling"
    display_name = "Upscale Image"
    description = "Resize images; 0 for width or height keeps the aspect ratio."
    inputs = {
        "image": Link("IMAGE"),
        "upscale_method": Combo(IMAGE_METHODS, default=IMAGE_METHODS[0]),
        "width": Int(512, min=0, max=MAX_RESOLUTION, step=1),
        "height": Int(512, min=0, max=MAX_RESOLUTION, step=1),
        "crop": Combo(CROP_METHODS, default=CROP_METHODS[0]),
    }
    outputs = (Output("IMAGE"),)

    def run(self, image, upscale_method, width, height, crop="disabled"):
        if width == 0 and height == 0:
            return (image,)
        h, w = image.shape[1:3]
        width, height = fill_aspect(width, height, w, h)
        return (scale_image(image, width, height, upscale_method, crop),)


class ImageScaleBy(Node):
    category = "image/upscaling"
    display_name = "Upscale Image By"
    inputs = {
        "image": Link("IMAGE"),
        "upscale_method": Combo(IMAGE_METHODS, default=IMAGE_METHODS[0]),
        "scale_by": Float(1.0, min=0.01, max=8.0, step=0.01),
    }
    outputs = (Output("IMAGE"),)

    def run(self, image, upscale_method, scale_by):
        h, w = image.shape[1:3]
        width, height = max(1, round(w * scale_by)), max(1, round(h * scale_by))
        return (scale_image(image, width, height, upscale_method),)


NODES = [ImageScale, ImageScaleBy]

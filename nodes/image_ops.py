"""Image geometry nodes with ComfyUI's names and inputs: resizing (ImageScale, ImageScaleBy,
ImageScaleToTotalPixels), cropping, flipping, rotating, padding for outpainting, batching and
reading the size.

IMAGE is ``[B, H, W, C]`` float32 in 0..1; resizing happens channels-first.
"""

from __future__ import annotations

import math

import torch

from loom.nodeapi import Allocation, Combo, Float, Int, Link, Node, Output, pixels
from loom.runtime.sampling.resize import CROP_METHODS, IMAGE_METHODS, fill_aspect, resize, scaled_shape


def scale_image(image, width: int, height: int, method: str, crop: str = "disabled"):
    x = image.movedim(-1, 1)
    out = resize(x, width, height, method, crop).movedim(1, -1)
    if method in ("bicubic", "lanczos"):  # these overshoot: keep the 0..1 contract
        out = out.clamp(0.0, 1.0)
    return out.contiguous()


class ImageScale(Node, category="image/upscaling", display_name="Upscale Image"):
    """Resize images; 0 for width or height keeps the aspect ratio."""
    inputs = {
        "image": Link("IMAGE"),
        "upscale_method": Combo(IMAGE_METHODS, default=IMAGE_METHODS[0]),
        "width": pixels(512), "height": pixels(512),
        "crop": Combo(CROP_METHODS, default=CROP_METHODS[0]),
    }
    outputs = (Output("IMAGE"),)

    @classmethod
    def allocation(cls, ctx, image=None, width=0, height=0, **_):
        b, h, w, c = image or (1, 0, 0, 3)  # unknown input: at least one image of that size
        if width and height:
            return Allocation(((b, height, width, c),), ("width", "height"))
        if image is None:
            return None
        if width or height:
            width, height = fill_aspect(width, height, w, h)
            h, w = height, width
        return Allocation(((b, h, w, c),), ("width", "height"))

    def run(self, image, upscale_method, width, height, crop="disabled"):
        if width == 0 and height == 0:
            return (image,)
        h, w = image.shape[1:3]
        width, height = fill_aspect(width, height, w, h)
        return (scale_image(image, width, height, upscale_method, crop),)


def scale_by_inputs(methods: list[str], default: float) -> dict:
    """The method and factor widgets of the "Upscale ... By" nodes (ComfyUI's names and ranges)."""
    return {"upscale_method": Combo(methods, default=methods[0]),
            "scale_by": Float(default, min=0.01, max=8.0, step=0.01)}


def scale_by_allocation(input_name: str, *, channels_last: bool) -> classmethod:
    """The ``allocation`` of an "Upscale ... By" node: its input's shape, scaled."""
    def allocation(cls, ctx, scale_by=1.0, **inputs):
        shape = inputs.get(input_name)
        if shape is None:
            return None
        return Allocation((scaled_shape(shape, scale_by, channels_last=channels_last),), ("scale_by",))
    return classmethod(allocation)


class ImageScaleBy(Node, category="image/upscaling", display_name="Upscale Image By"):
    inputs = {"image": Link("IMAGE"), **scale_by_inputs(IMAGE_METHODS, default=1.0)}
    outputs = (Output("IMAGE"),)
    allocation = scale_by_allocation("image", channels_last=True)

    def run(self, image, upscale_method, scale_by):
        _, height, width, _ = scaled_shape(image.shape, scale_by, channels_last=True)
        return (scale_image(image, width, height, upscale_method),)


class ImageScaleToTotalPixels(Node, category="image/upscaling", display_name="Scale Image to Total Pixels"):
    """Resize images to about the given number of megapixels (1 MP = 1024x1024), keeping the aspect
    ratio; sides are rounded to a multiple of resolution_steps."""
    inputs = {
        "image": Link("IMAGE"),
        "upscale_method": Combo(IMAGE_METHODS, default=IMAGE_METHODS[0]),
        "megapixels": Float(1.0, min=0.01, max=16.0, step=0.01),
        # Optional: ComfyUI added it later, and API prompts written before then lack it.
        "resolution_steps": Int(1, min=1, max=256, optional=True),
    }
    outputs = (Output("IMAGE"),)

    @classmethod
    def allocation(cls, ctx, image=None, megapixels=1.0, **_):
        b, _h, _w, c = image or (1, 0, 0, 3)
        return Allocation(((b, round(megapixels * 1024 * 1024), 1, c),), ("megapixels",))

    def run(self, image, upscale_method, megapixels, resolution_steps=1):
        h, w = image.shape[1:3]
        scale = math.sqrt(megapixels * 1024 * 1024 / (w * h))
        steps = max(1, int(resolution_steps))
        width = max(steps, round(w * scale / steps) * steps)
        height = max(steps, round(h * scale / steps) * steps)
        return (scale_image(image, width, height, upscale_method),)


class ImageCrop(Node, category="image/transform", display_name="Crop Image"):
    """A width x height rectangle from (x, y); it is cut short at the image's edge, and x, y beyond
    the image take its last column/row."""
    inputs = {
        "image": Link("IMAGE"),
        "width": pixels(512, min=1), "height": pixels(512, min=1),
        "x": pixels(), "y": pixels(),
    }
    outputs = (Output("IMAGE"),)

    def run(self, image, width, height, x, y):
        h, w = image.shape[1:3]
        x, y = min(x, w - 1), min(y, h - 1)
        return (image[:, y:y + height, x:x + width, :].clone(),)


FLIP_METHODS = ["x-axis: vertically", "y-axis: horizontally"]
ROTATIONS = ["none", "90 degrees", "180 degrees", "270 degrees"]


class ImageFlip(Node, category="image/transform", display_name="Flip Image"):
    """Mirror images upside down (about the x axis) or left to right (about the y axis)."""
    inputs = {"image": Link("IMAGE"), "flip_method": Combo(FLIP_METHODS, default=FLIP_METHODS[0])}
    outputs = (Output("IMAGE"),)

    def run(self, image, flip_method):
        upside_down = self.choice("flip_method", flip_method).startswith("x")
        return (torch.flip(image, dims=[1 if upside_down else 2]),)


class ImageRotate(Node, category="image/transform", display_name="Rotate Image"):
    """Rotate images clockwise by a multiple of 90 degrees."""
    inputs = {"image": Link("IMAGE"), "rotation": Combo(ROTATIONS, default=ROTATIONS[0])}
    outputs = (Output("IMAGE"),)

    def run(self, image, rotation):
        quarter_turns = ROTATIONS.index(self.choice("rotation", rotation))
        # rot90 turns from its first dim towards its second: width -> height is clockwise.
        return (torch.rot90(image, k=quarter_turns, dims=[2, 1]).contiguous(),)


def _with_alpha(image: torch.Tensor) -> torch.Tensor:
    return torch.cat([image, torch.ones_like(image[..., :1])], dim=-1)


class ImageBatch(Node, category="image", display_name="Batch Images"):
    """One batch of both inputs' images; image2 is resized (bilinear, centre-cropped) to image1's
    size when they differ."""
    inputs = {"image1": Link("IMAGE"), "image2": Link("IMAGE")}
    outputs = (Output("IMAGE"),)

    def run(self, image1, image2):
        if image1.shape[-1] != image2.shape[-1]:  # RGB with RGBA: opaque alpha for the RGB one
            if {image1.shape[-1], image2.shape[-1]} != {3, 4}:
                raise ValueError(f"cannot batch images with {image1.shape[-1]} and "
                                 f"{image2.shape[-1]} channels")
            image1 = _with_alpha(image1) if image1.shape[-1] == 3 else image1
            image2 = _with_alpha(image2) if image2.shape[-1] == 3 else image2
        h, w = image1.shape[1:3]
        if image2.shape[1:3] != (h, w):
            image2 = scale_image(image2, w, h, "bilinear", "center")
        return (torch.cat([image1, image2], dim=0),)


class GetImageSize(Node, category="image", display_name="Get Image Size"):
    """Returns the width, height, and batch size of the image."""
    inputs = {"image": Link("IMAGE")}
    outputs = (Output("INT", name="width"), Output("INT", name="height"), Output("INT", name="batch_size"))

    def run(self, image):
        batch, height, width = image.shape[:3]
        return (int(width), int(height), int(batch))


class ImagePadForOutpaint(Node, category="image", display_name="Pad Image for Outpainting"):
    """Grow the canvas on each side with grey (0.5) and give the MASK of what to paint: 1 in the new
    border, fading in over `feathering` pixels of the old image along the padded sides."""
    inputs = {
        "image": Link("IMAGE"),
        "left": pixels(step=8), "top": pixels(step=8),
        "right": pixels(step=8), "bottom": pixels(step=8),
        "feathering": pixels(40),
    }
    outputs = (Output("IMAGE"), Output("MASK"))

    @classmethod
    def allocation(cls, ctx, image=None, left=0, top=0, right=0, bottom=0, **_):
        b, h, w, c = image or (1, 0, 0, 3)
        h, w = h + top + bottom, w + left + right
        return Allocation(((b, h, w, c), (1, h, w)), ("left", "top", "right", "bottom"))

    def run(self, image, left, top, right, bottom, feathering=40):
        b, h, w, c = image.shape
        out = torch.full((b, h + top + bottom, w + left + right, c), 0.5, dtype=image.dtype)
        out[:, top:top + h, left:left + w, :] = image
        mask = torch.ones((h + top + bottom, w + left + right), dtype=torch.float32)
        mask[top:top + h, left:left + w] = _feather(h, w, left, top, right, bottom, feathering)
        return (out, mask.unsqueeze(0))


def _feather(h: int, w: int, left: int, top: int, right: int, bottom: int, feathering: int) -> torch.Tensor:
    """Mask over the original image: ((f - d) / f)^2 within ``f`` pixels of a padded side
    (d = distance to the nearest padded side), 0 elsewhere; none when the image is too small."""
    if feathering <= 0 or feathering * 2 >= h or feathering * 2 >= w:
        return torch.zeros((h, w))
    rows = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
    cols = torch.arange(w, dtype=torch.float32)[None, :].expand(h, w)
    far_h, far_w = torch.full((h, w), float(h)), torch.full((h, w), float(w))
    distance = torch.minimum(
        torch.minimum(rows if top else far_h, h - rows if bottom else far_h),
        torch.minimum(cols if left else far_w, w - cols if right else far_w))
    fade = ((feathering - distance) / feathering) ** 2
    return torch.where(distance < feathering, fade, torch.zeros(()))


NODES = [ImageScale, ImageScaleBy, ImageScaleToTotalPixels, ImageCrop, ImageFlip, ImageRotate,
         ImageBatch, GetImageSize, ImagePadForOutpaint]

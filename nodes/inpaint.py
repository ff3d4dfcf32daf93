"""Inpainting nodes: noise masks on latents, InpaintModelConditioning (ComfyUI's names and inputs),
pasting images through masks, and a crop -> inpaint -> stitch pair for small regions of big images.

The sampling loops do the rest: a LATENT's ``noise_mask`` keeps everything outside the mask at
the original (re-blended after every step, see loom.runtime.sampling.hooks.NoiseMaskHook), and a
9-channel inpainting UNet gets the mask and masked-image latents as extra input channels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from loom.nodeapi import Boolean, Combo, Float, Int, Link, Node, Output, pixels
from loom.runtime.sampling.resize import IMAGE_METHODS
from loom.runtime.sd import vae as vae_ops
from loom.runtime.sd.common import manager_of
from nodes.image_ops import scale_image
from nodes.masks import as_mask_batch
from nodes.sd_vae import _check_vae, _tagged, encode_use


class SetLatentNoiseMask(Node, category="latent/inpaint", display_name="Set Latent Noise Mask"):
    """Sample only where the mask is 1: the rest of the latent is kept (values in between blend).
    The mask may be at pixel or latent resolution."""
    inputs = {"samples": Link("LATENT"), "mask": Link("MASK")}
    outputs = (Output("LATENT"),)

    def run(self, samples, mask):
        if not isinstance(samples, dict) or "samples" not in samples:
            raise TypeError("samples must be a LATENT")
        m = as_mask_batch(mask)
        return ({**samples, "noise_mask": m[:, None]},)


def _mask_at(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A MASK as ``[B, 1, height, width]`` (bilinear when it is another size)."""
    m = as_mask_batch(mask)[:, None]
    if m.shape[-2:] != (height, width):
        m = F.interpolate(m, size=(height, width), mode="bilinear", align_corners=False)
    return m.clamp(0.0, 1.0)


def _with_inpaint(conditioning: list, concat: torch.Tensor, mask: torch.Tensor) -> list:
    """A copy of CONDITIONING whose entries carry the inpainting image latent and mask (the
    upstream list and dicts are never changed: they may be cached)."""
    return [[c[0], {**c[1], "concat_latent_image": concat, "concat_mask": mask}]
            for c in conditioning]


class InpaintModelConditioning(Node, category="conditioning/inpaint",
                               display_name="InpaintModelConditioning"):
    """For inpainting checkpoints (9 input channels): the model sees the mask and the image with the
    masked part greyed out; the LATENT is the image itself. With noise_mask, sampling also keeps
    everything outside the mask (works with ordinary checkpoints too)."""
    inputs = {
        "positive": Link("CONDITIONING"),
        "negative": Link("CONDITIONING"),
        "vae": Link("VAE"),
        "pixels": Link("IMAGE"),
        "mask": Link("MASK"),
        "noise_mask": Boolean(True, tooltip=(
            "Add a noise mask to the latent so sampling only changes the masked area. Might "
            "improve results or break them depending on the model.")),
    }
    outputs = (Output("CONDITIONING", name="positive"), Output("CONDITIONING", name="negative"),
               Output("LATENT", name="latent"))

    def uses(self, vae, pixels, **_):
        return encode_use(self.ctx, vae, pixels)  # two encodes, one after the other

    def run(self, positive, negative, vae, pixels, mask, noise_mask=True):
        _check_vae(vae)
        h, w = pixels.shape[1:3]
        m = _mask_at(mask, h, w)
        cropped = vae_ops.crop_to_multiple(pixels)
        nh, nw = cropped.shape[1:3]
        top, left = (h - nh) // 2, (w - nw) // 2
        m = m[:, :, top:top + nh, left:left + nw]
        keep = (1.0 - m.round())[:, 0, :, :, None]
        greyed = (cropped[..., :3] - 0.5) * keep + 0.5
        manager = manager_of(self.ctx)
        concat = vae_ops.encode(vae, greyed, manager=manager)
        original = vae_ops.encode(vae, cropped, manager=manager)
        latent = _tagged(vae, original)
        if noise_mask:
            latent["noise_mask"] = m
        return (_with_inpaint(positive, concat, m), _with_inpaint(negative, concat, m), latent)


def _match_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    if image.shape[-1] == channels:
        return image
    if image.shape[-1] > channels:
        return image[..., :channels]
    extra = torch.ones(*image.shape[:-1], channels - image.shape[-1], dtype=image.dtype)
    return torch.cat([image, extra], dim=-1)


def _repeat_to(x: torch.Tensor, batch: int) -> torch.Tensor:
    if x.shape[0] == batch:
        return x
    return x.repeat(math.ceil(batch / x.shape[0]), *([1] * (x.dim() - 1)))[:batch]


def composite(destination: torch.Tensor, source: torch.Tensor, x: int, y: int,
              mask: torch.Tensor | None = None) -> torch.Tensor:
    """``source`` pasted onto a copy of ``destination`` (IMAGEs) with its top-left corner at
    (x, y), through ``mask`` (resized to the source; 1 = source) where given. What falls
    outside the destination is dropped."""
    out = destination.clone()
    b, h, w, c = out.shape
    src = _repeat_to(_match_channels(source, c), b)
    if x >= w or y >= h:
        return out
    ph, pw = min(src.shape[1], h - y), min(src.shape[2], w - x)
    part = src[:, :ph, :pw]
    if mask is None:
        out[:, y:y + ph, x:x + pw] = part
        return out
    m = _repeat_to(_mask_at(mask, src.shape[1], src.shape[2])[:, 0, :ph, :pw, None], b)
    region = out[:, y:y + ph, x:x + pw]
    out[:, y:y + ph, x:x + pw] = region + (part - region) * m
    return out


class ImageCompositeMasked(Node, category="image", display_name="ImageCompositeMasked"):
    """Paste source onto destination at (x, y), through the mask when one is given (1 = source).
    resize_source first stretches the source to the destination's size."""
    inputs = {
        "destination": Link("IMAGE"),
        "source": Link("IMAGE"),
        "x": pixels(), "y": pixels(),
        "resize_source": Boolean(False),
        "mask": Link("MASK", optional=True),
    }
    outputs = (Output("IMAGE"),)

    def run(self, destination, source, x, y, resize_source=False, mask=None):
        if resize_source and source.shape[1:3] != destination.shape[1:3]:
            source = scale_image(source, destination.shape[2], destination.shape[1], "bilinear")
        return (composite(destination, source, x, y, mask),)


# -- crop around the mask, inpaint at full resolution, stitch back --------------------------------


@dataclass(frozen=True)
class Stitch:
    """What InpaintStitch needs to put an inpainted crop back (the STITCH type)."""

    original: torch.Tensor  # IMAGE [B, H, W, C] the crop came from
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 of the crop in the original, in pixels
    blend: torch.Tensor  # [B, y1 - y0, x1 - x0] how much of the inpainted crop to take


def mask_box(mask: torch.Tensor, threshold: float = 0.0) -> tuple[int, int, int, int] | None:
    """Smallest (x0, y0, x1, y1) holding every pixel of ``[B, H, W]`` above ``threshold`` (in
    any batch entry), or None when there is none."""
    on = (mask > threshold).any(dim=0)
    rows, cols = torch.nonzero(on.any(dim=1)), torch.nonzero(on.any(dim=0))
    if rows.numel() == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def context_box(box: tuple[int, int, int, int] | None, width: int, height: int,
                expand_pixels: int, expand_factor: float) -> tuple[int, int, int, int]:
    """The mask's box grown by ``expand_factor`` (about its centre) and ``expand_pixels`` on each
    side, clamped to the image; the whole image when there is no mask."""
    if box is None:
        return 0, 0, width, height
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half_w = (x1 - x0) * expand_factor / 2 + expand_pixels
    half_h = (y1 - y0) * expand_factor / 2 + expand_pixels
    return (max(0, math.floor(cx - half_w)), max(0, math.floor(cy - half_h)),
            min(width, math.ceil(cx + half_w)), min(height, math.ceil(cy + half_h)))


def crop_size(crop_w: int, crop_h: int, target: int, multiple: int = 8) -> tuple[int, int]:
    """The size the crop is inpainted at: its longer side ``target``, the aspect kept, both
    sides rounded to ``multiple`` (what the VAE needs)."""
    scale = target / max(crop_w, crop_h)
    return (max(multiple, round(crop_w * scale / multiple) * multiple),
            max(multiple, round(crop_h * scale / multiple) * multiple))


def blend_mask(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """How much of the inpainted crop to take: the mask, plus a linear fade from 1 at its edge to
    0 at ``pixels`` beyond it, so the inpainted region blends in without a seam."""
    if pixels <= 0:
        return mask.clamp(0, 1)
    from scipy.ndimage import distance_transform_edt

    outside = (mask <= 0).numpy()
    ramps = []
    for entry in outside:
        if entry.all():  # nothing masked in this entry
            ramps.append(np.zeros(entry.shape, np.float32))
            continue
        distance = distance_transform_edt(entry)
        ramps.append(np.clip(1.0 - distance / (pixels + 1), 0.0, 1.0).astype(np.float32))
    return torch.maximum(torch.from_numpy(np.stack(ramps)), mask).clamp(0, 1)


class InpaintCrop(Node, category="inpaint", display_name="Inpaint Crop (around the mask)"):
    """Cuts out the masked region of a big image with some context around it, scaled so its longer
    side is target_size: inpaint that crop at full resolution, then put it back with Inpaint Stitch.
    Pixels outside the crop are never touched."""
    inputs = {
        "image": Link("IMAGE"),
        "mask": Link("MASK"),
        "context_expand_pixels": pixels(32,
                                     tooltip="Context added around the mask on each side."),
        "context_expand_factor": Float(1.0, min=1.0, max=100.0, step=0.01,
                                       tooltip="Grow the mask's box by this factor first."),
        "blend_pixels": Int(16, min=0, max=256, step=1,
                            tooltip="How far beyond the mask the inpainted crop fades into "
                                    "the original when stitched."),
        "target_size": pixels(512, min=64, step=8,
                           tooltip="Longer side of the crop as it is inpainted."),
        "upscale_method": Combo(IMAGE_METHODS, default="bicubic"),
    }
    outputs = (Output("STITCH", name="stitch"), Output("IMAGE", name="cropped_image"),
               Output("MASK", name="cropped_mask"))

    def run(self, image, mask, context_expand_pixels=32, context_expand_factor=1.0,
            blend_pixels=16, target_size=512, upscale_method="bicubic"):
        b, h, w = image.shape[:3]
        m = _repeat_to(_mask_at(mask, h, w)[:, 0], b)
        x0, y0, x1, y1 = context_box(mask_box(m), w, h, context_expand_pixels, context_expand_factor)
        crop_img = image[:, y0:y1, x0:x1]
        crop_mask = m[:, y0:y1, x0:x1]
        tw, th = crop_size(x1 - x0, y1 - y0, target_size)
        scaled_img = scale_image(crop_img, tw, th, upscale_method)
        scaled_mask = F.interpolate(crop_mask[:, None], size=(th, tw), mode="bilinear",
                                    align_corners=False)[:, 0].clamp(0, 1)
        stitch = Stitch(original=image, box=(x0, y0, x1, y1),
                        blend=blend_mask(crop_mask, blend_pixels))
        return (stitch, scaled_img, scaled_mask)


class InpaintStitch(Node, category="inpaint", display_name="Inpaint Stitch (paste back)"):
    """Puts an inpainted crop from Inpaint Crop back into the original image, fading it in around
    the mask."""
    inputs = {
        "stitch": Link("STITCH"),
        "inpainted_image": Link("IMAGE"),
        "upscale_method": Combo(IMAGE_METHODS, default="bicubic"),
    }
    outputs = (Output("IMAGE"),)

    def run(self, stitch, inpainted_image, upscale_method="bicubic"):
        if not isinstance(stitch, Stitch):
            raise TypeError("stitch must come from an Inpaint Crop node")
        x0, y0, x1, y1 = stitch.box
        original = stitch.original
        back = scale_image(inpainted_image, x1 - x0, y1 - y0, upscale_method)
        back = _match_channels(_repeat_to(back, original.shape[0]), original.shape[-1])
        out = original.clone()
        region = out[:, y0:y1, x0:x1]
        weight = _repeat_to(stitch.blend, original.shape[0])[..., None]
        out[:, y0:y1, x0:x1] = region + (back.to(region.dtype) - region) * weight
        return (out,)


NODES = [SetLatentNoiseMask, InpaintModelConditioning, ImageCompositeMasked, InpaintCrop,
         InpaintStitch]

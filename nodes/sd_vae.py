"""VAE nodes: VAEDecode, VAEEncode and their tiled variants (ComfyUI's names and inputs).

LATENT holds raw latents (not multiplied by the scaling factor); IMAGE is ``[B, H, W, C]`` in 0..1.
A latent whose channels do not fit the VAE, or (where both are known) an SD 1.x/2.x VAE with an
SDXL model's latents and the other way round, is refused with an explanation.
"""

from __future__ import annotations

import math

import torch

from loom.nodeapi import Allocation, Int, Link, ModelUse, Node, Output
from loom.runtime.sd import vae as vae_ops
from loom.runtime.sd.common import manager_of
from loom.runtime.working_memory import vae_decode_bytes, vae_encode_bytes


def _check_vae(vae) -> None:
    if vae is None:
        raise ValueError("The vae input is empty: the checkpoint has no VAE. Load one with Load VAE "
                         "(VAELoader) and connect it.")


def _samples(vae, samples: dict):
    _check_vae(vae)
    if not isinstance(samples, dict) or "samples" not in samples:
        raise ValueError("expected a LATENT ({'samples': tensor})")
    z = samples["samples"]
    # Samplers may record which model family made a latent ("family"); a VAE from the other
    # latent space would decode garbage.
    vae_ops.check_latent(vae, z, samples.get("family"))
    return z


def _tagged(vae, z) -> dict:
    """A LATENT that records its VAE's family (when known), so a model or VAE of another latent
    space refuses it with a clear message."""
    return {"samples": z, "family": vae.family} if vae.family else {"samples": z}


def _decoded(latent_shape) -> Allocation | None:
    """The IMAGE a VAE decodes a LATENT of this shape to (8 pixels per latent cell)."""
    if latent_shape is None:
        return None
    b, _c, h, w = latent_shape
    return Allocation(((b, h * 8, w * 8, 3),))


def _encoded(image_shape) -> Allocation | None:
    if image_shape is None:
        return None
    b, h, w, _c = image_shape
    return Allocation(((b, 4, h // 8, w // 8),))


def _vae_element_size(ctx) -> int:
    """Bytes per element of the VAE's activations: the device policy's VAE dtype."""
    return manager_of(ctx).policy.vae_dtype.itemsize


def decode_use(ctx, vae, samples, tile: int | None = None) -> ModelUse:
    """The VAE and the working memory of decoding a LATENT, whole or ``tile`` pixels at a time."""
    z = samples.get("samples") if isinstance(samples, dict) else None
    shape = tuple(z.shape) if z is not None else ()
    if tile and len(shape) == 4:
        shape = (*shape[:2], min(shape[2], tile // 8), min(shape[3], tile // 8))
    return ModelUse((vae,), vae_decode_bytes(shape, element_size=_vae_element_size(ctx)))


def encode_use(ctx, vae, pixels, tile: int | None = None) -> ModelUse:
    """The VAE and the working memory of encoding an IMAGE, whole or ``tile`` pixels at a time."""
    shape = tuple(getattr(pixels, "shape", ()))
    if tile and len(shape) == 4:
        shape = (shape[0], min(shape[1], tile), min(shape[2], tile), shape[3])
    return ModelUse((vae,), vae_encode_bytes(shape, element_size=_vae_element_size(ctx)))


class VAEDecode(Node, category="latent", display_name="VAE Decode"):
    """Decodes latents into images."""
    inputs = {
        "samples": Link("LATENT", tooltip="The latent to decode."),
        "vae": Link("VAE", tooltip="The VAE of the model that made the latent."),
    }
    outputs = (Output("IMAGE"),)

    @classmethod
    def allocation(cls, ctx, samples=None, **_):
        return _decoded(samples)

    def uses(self, samples, vae):
        """A whole decode's working memory (the low-memory retry decodes in tiles: less)."""
        return decode_use(self.ctx, vae, samples)

    def run(self, samples, vae):
        z = _samples(vae, samples)
        if self.ctx.low_memory:  # the retry after running out of memory: in tiles
            return self.in_tiles(vae, z, tile_size=512, overlap=64)
        return (vae_ops.decode(vae, z, manager=manager_of(self.ctx)),)

    def in_tiles(self, vae, z, tile_size: int, overlap: int) -> tuple:
        return (vae_ops.decode_tiled(vae, z, tile_size=tile_size, overlap=min(overlap, tile_size // 4),
                                     manager=manager_of(self.ctx), progress=self.ctx.progress),)


class VAEEncode(Node, category="latent", display_name="VAE Encode"):
    """Encodes images into latents (cropped to multiples of 8 pixels)."""
    inputs = {"pixels": Link("IMAGE"), "vae": Link("VAE")}
    outputs = (Output("LATENT"),)

    @classmethod
    def allocation(cls, ctx, pixels=None, **_):
        return _encoded(pixels)

    def uses(self, pixels, vae, **_):
        return encode_use(self.ctx, vae, pixels)

    def run(self, pixels, vae):
        _check_vae(vae)
        if self.ctx.low_memory:  # the retry after running out of memory: in tiles
            return self.in_tiles(vae, pixels, tile_size=512, overlap=64)
        return (_tagged(vae, vae_ops.encode(vae, pixels, manager=manager_of(self.ctx))),)

    def in_tiles(self, vae, pixels, tile_size: int, overlap: int) -> tuple:
        z = vae_ops.encode_tiled(vae, pixels, tile_size=tile_size, overlap=min(overlap, tile_size // 4),
                                 manager=manager_of(self.ctx), progress=self.ctx.progress)
        return (_tagged(vae, z),)


def _tile_inputs(tile_step: int) -> dict:
    """The tiling inputs VAEDecodeTiled and VAEEncodeTiled share (ComfyUI's names and ranges)."""
    return {
        "tile_size": Int(512, min=64, max=4096, step=tile_step),
        "overlap": Int(64, min=0, max=4096, step=32),
        "temporal_size": Int(64, min=8, max=4096, step=4, tooltip="Video VAEs only; ignored."),
        "temporal_overlap": Int(8, min=4, max=4096, step=4, tooltip="Video VAEs only; ignored."),
    }


class VAEDecodeTiled(VAEDecode, category="_for_testing", display_name="VAE Decode (Tiled)"):
    """Decodes latents tile by tile (less memory for big images); tiles are blended."""
    inputs = {"samples": Link("LATENT"), "vae": Link("VAE"), **_tile_inputs(tile_step=32)}

    def uses(self, samples, vae, tile_size=512, **_):
        return decode_use(self.ctx, vae, samples, tile=tile_size)

    def run(self, samples, vae, tile_size=512, overlap=64, temporal_size=64, temporal_overlap=8):
        return self.in_tiles(vae, _samples(vae, samples), tile_size, overlap)


class VAEEncodeTiled(VAEEncode, category="_for_testing", display_name="VAE Encode (Tiled)"):
    """Encodes images tile by tile (less memory for big images); tiles are blended."""
    inputs = {"pixels": Link("IMAGE"), "vae": Link("VAE"), **_tile_inputs(tile_step=64)}

    def uses(self, pixels, vae, tile_size=512, **_):
        return encode_use(self.ctx, vae, pixels, tile=tile_size)

    def run(self, pixels, vae, tile_size=512, overlap=64, temporal_size=64, temporal_overlap=8):
        _check_vae(vae)
        return self.in_tiles(vae, pixels, tile_size, overlap)


class VAEEncodeForInpaint(VAEEncode, category="latent/inpaint", display_name="VAE Encode (for Inpainting)"):
    """Encodes an image for inpainting: the masked area is set to neutral grey before encoding and
    the (grown) mask becomes the latent's noise mask."""
    inputs = {
        "pixels": Link("IMAGE"),
        "vae": Link("VAE"),
        "mask": Link("MASK"),
        "grow_mask_by": Int(6, min=0, max=64, step=1),
    }

    def run(self, pixels, vae, mask, grow_mask_by=6):
        _check_vae(vae)
        h, w = pixels.shape[1], pixels.shape[2]
        m = mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).float()
        m = torch.nn.functional.interpolate(m, size=(h, w), mode="bilinear")
        pixels = vae_ops.crop_to_multiple(pixels).clone()
        nh, nw = pixels.shape[1], pixels.shape[2]
        top, left = (h - nh) // 2, (w - nw) // 2
        m = m[:, :, top:top + nh, left:left + nw]
        hard = m.round()
        if grow_mask_by > 0:
            kernel = torch.ones(1, 1, grow_mask_by, grow_mask_by)
            pad = math.ceil((grow_mask_by - 1) / 2)
            grown = torch.nn.functional.conv2d(hard, kernel, padding=pad).clamp(0, 1)[:, :, :nh, :nw]
        else:
            grown = m
        keep = (1.0 - hard).squeeze(1)[..., None]  # [B, H, W, 1]
        pixels = (pixels - 0.5) * keep + 0.5
        z = vae_ops.encode(vae, pixels, manager=manager_of(self.ctx))
        return ({**_tagged(vae, z), "noise_mask": grown.round()},)


NODES = [VAEDecode, VAEEncode, VAEDecodeTiled, VAEEncodeTiled, VAEEncodeForInpaint]

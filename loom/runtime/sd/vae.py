"""VAE decode/encode between LATENT (raw latents) and IMAGE ([B, H, W, C] in 0..1), whole or tiled.

Precision: the VAE runs in the dtype it was loaded in (``DevicePolicy.vae_dtype``: fp32 on the
CPU, bf16 or fp32 on GPUs, never fp16 by default, since the SDXL VAE overflows in fp16). If a
result still has NaNs/Infs in reduced precision, that batch is redone in fp32 and a warning is
logged.

Tiling: tiles overlap and are blended with weights that fall off linearly towards a tile's inner
edges (not at the image border), so seams disappear; the weights sum to one everywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from loom.runtime.sd.types import Vae

log = logging.getLogger("loom.models")

SCALE = 8  # pixels per latent cell of the SD VAEs


class VaeMismatchError(ValueError):
    """A LATENT or IMAGE that does not fit the VAE (channels, family)."""


def check_latent(vae: Vae, samples: torch.Tensor, latent_family: str | None = None) -> None:
    if samples.dim() != 4:
        raise VaeMismatchError(f"VAEDecode expects latents [batch, channels, height, width], got shape "
                               f"{tuple(samples.shape)}")
    if samples.shape[1] != vae.latent_channels:
        raise VaeMismatchError(
            f"The latent has {samples.shape[1]} channels but this VAE ({_name(vae)}) works with "
            f"{vae.latent_channels}: the VAE belongs to a different kind of model than the one that "
            f"made the latent.")
    check_family(vae, latent_family, "latent")


def check_family(vae: Vae, family: str | None, what: str = "model") -> None:
    """Refuse an SD 1.x/2.x VAE with SDXL latents and the other way round (when both are known)."""
    from loom.runtime.sd.detect import latent_space

    if not family or not vae.family:
        return
    if latent_space(family) != latent_space(vae.family):
        names = {"sd1": "SD 1.x/2.x", "sdxl": "SDXL"}
        raise VaeMismatchError(
            f"This VAE ({_name(vae)}) is an {names.get(latent_space(vae.family), vae.family)} VAE but the "
            f"{what} comes from an {names.get(latent_space(family), family)} model; their latent spaces "
            f"differ and the image would come out wrong. Use the checkpoint's own VAE or a VAE made "
            f"for {names.get(latent_space(family), family)}.")


def _name(vae: Vae) -> str:
    return vae.source.rsplit("/", 1)[-1] if vae.source else "VAE"


def _module_device_dtype(module) -> tuple[torch.device, torch.dtype]:
    p = next(module.parameters())
    return p.device, p.dtype


def _run_safely(module, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    device, dtype = _module_device_dtype(module)
    out = fn(x.to(device, dtype)).float()
    if dtype != torch.float32 and not torch.isfinite(out).all():
        log.warning("VAE produced NaN/Inf in %s; redoing this batch in float32", dtype)
        module.to(torch.float32)
        try:
            out = fn(x.to(device, torch.float32)).float()
        finally:
            module.to(dtype)
    return out


# -- whole-image ------------------------------------------------------------------------------

@torch.no_grad()
def decode(vae: Vae, samples: torch.Tensor, *, manager: Any = None, batch: int = 4) -> torch.Tensor:
    """Raw latents [B, C, h, w] -> IMAGE [B, 8h, 8w, 3] float32 in 0..1 on the CPU."""
    from loom.runtime.sd.common import default_manager

    check_latent(vae, samples)
    manager = manager or default_manager()
    out = []
    with manager.use(vae.vae):
        for i in range(0, samples.shape[0], batch):
            z = samples[i:i + batch].float()  # raw latents: the VAE's own space, no scaling
            img = _run_safely(vae.vae, lambda t: vae.vae.decode(t).sample, z)
            out.append(_to_image(img))
    return torch.cat(out)


@torch.no_grad()
def encode(vae: Vae, pixels: torch.Tensor, *, manager: Any = None, batch: int = 4) -> torch.Tensor:
    """IMAGE [B, H, W, C] in 0..1 -> raw latents [B, C, H/8, W/8] (the distribution's mean)."""
    from loom.runtime.sd.common import default_manager

    pixels = crop_to_multiple(pixels)
    manager = manager or default_manager()
    out = []
    with manager.use(vae.vae):
        for i in range(0, pixels.shape[0], batch):
            x = _from_image(pixels[i:i + batch])
            out.append(_run_safely(vae.vae, lambda t: vae.vae.encode(t).latent_dist.mode(), x).cpu())
    return torch.cat(out)


def crop_to_multiple(pixels: torch.Tensor, multiple: int = SCALE) -> torch.Tensor:
    """Centre-crop an IMAGE to multiples of 8 pixels and drop an alpha channel (as ComfyUI does)."""
    if pixels.dim() != 4:
        raise VaeMismatchError(f"expected an IMAGE [batch, height, width, channels], got shape "
                               f"{tuple(pixels.shape)}")
    h, w = pixels.shape[1], pixels.shape[2]
    nh, nw = h // multiple * multiple, w // multiple * multiple
    if nh == 0 or nw == 0:
        raise VaeMismatchError(f"image of {w}x{h} pixels is smaller than {multiple}x{multiple}")
    top, left = (h - nh) // 2, (w - nw) // 2
    pixels = pixels[:, top:top + nh, left:left + nw, :]
    if pixels.shape[-1] == 1:
        pixels = pixels.expand(-1, -1, -1, 3)
    return pixels[..., :3]


def _to_image(x: torch.Tensor) -> torch.Tensor:
    return ((x.float() + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 3, 1).cpu().contiguous()


def _from_image(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.float().permute(0, 3, 1, 2) * 2.0 - 1.0


# -- tiled ------------------------------------------------------------------------------------

def _starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    stride = max(1, tile - overlap)
    starts = list(range(0, size - tile, stride)) + [size - tile]
    return sorted(set(starts))


def _ramp(length: int, overlap: int, at_start: bool, at_end: bool) -> torch.Tensor:
    """1-D blend weights: linear ramps over ``overlap`` cells on inner edges, 1 elsewhere."""
    w = torch.ones(length)
    if overlap > 0:
        ramp = (torch.arange(overlap, dtype=torch.float32) + 0.5) / overlap
        if not at_start:
            w[:overlap] = torch.minimum(w[:overlap], ramp)
        if not at_end:
            w[-overlap:] = torch.minimum(w[-overlap:], ramp.flip(0))
    return w


def tiled(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int, overlap: int,
          scale: float, out_channels: int, progress: Callable[[int, int], None] | None = None,
          ) -> torch.Tensor:
    """Apply a spatially local ``fn`` ([B, C, h, w] -> [B, out_channels, h*scale, w*scale]) tile by
    tile over ``x`` (tile and overlap in ``x``'s cells) and blend the overlapping results."""
    b, _, h, w = x.shape
    overlap = max(0, min(overlap, tile // 2))
    ys, xs = _starts(h, tile, overlap), _starts(w, tile, overlap)
    oh, ow = round(h * scale), round(w * scale)
    out = torch.zeros(b, out_channels, oh, ow)
    weight = torch.zeros(1, 1, oh, ow)
    total, done = len(ys) * len(xs), 0
    for y in ys:
        for x0 in xs:
            th, tw = min(tile, h - y), min(tile, w - x0)
            piece = fn(x[:, :, y:y + th, x0:x0 + tw]).float().cpu()
            py, px = round(y * scale), round(x0 * scale)
            ph, pw = piece.shape[2], piece.shape[3]
            ov = round(overlap * scale)
            wy = _ramp(ph, ov, y == 0, y + th >= h)
            wx = _ramp(pw, ov, x0 == 0, x0 + tw >= w)
            m = (wy[:, None] * wx[None, :])[None, None]
            out[:, :, py:py + ph, px:px + pw] += piece * m
            weight[:, :, py:py + ph, px:px + pw] += m
            done += 1
            if progress is not None:
                progress(done, total)
    return out / weight.clamp(min=1e-8)


@torch.no_grad()
def decode_tiled(vae: Vae, samples: torch.Tensor, *, tile_size: int = 512, overlap: int = 64,
                 manager: Any = None, progress=None) -> torch.Tensor:
    """VAEDecodeTiled: tile_size/overlap in pixels."""
    from loom.runtime.sd.common import default_manager

    check_latent(vae, samples)
    manager = manager or default_manager()
    tile, ov = max(8, tile_size // SCALE), max(0, overlap // SCALE)
    with manager.use(vae.vae):
        def fn(z):
            return _run_safely(vae.vae, lambda t: vae.vae.decode(t).sample, z)
        img = tiled(fn, samples.float(), tile, ov, SCALE, 3, progress)
    return _to_image(img)


@torch.no_grad()
def encode_tiled(vae: Vae, pixels: torch.Tensor, *, tile_size: int = 512, overlap: int = 64,
                 manager: Any = None, progress=None) -> torch.Tensor:
    """VAEEncodeTiled: tile_size/overlap in pixels (tiles rounded to multiples of 8)."""
    from loom.runtime.sd.common import default_manager

    pixels = crop_to_multiple(pixels)
    manager = manager or default_manager()
    tile = max(SCALE, tile_size // SCALE * SCALE)
    ov = max(0, overlap // SCALE * SCALE)
    with manager.use(vae.vae):
        def fn(x):
            return _run_safely(vae.vae, lambda t: vae.vae.encode(t).latent_dist.mode(), x)
        return tiled(fn, _from_image(pixels), tile, ov, 1 / SCALE, vae.latent_channels, progress)

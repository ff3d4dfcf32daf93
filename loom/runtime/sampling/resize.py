"""Resizing of latents and images for the upscale nodes (LatentUpscale, ImageScale, …).

Everything works on ``[B, C, H, W]`` float tensors. Methods are ComfyUI's names:
``nearest-exact``, ``bilinear``, ``area``, ``bicubic`` (torch), ``lanczos`` (PIL, in float so
nothing is quantised to 8 bits) and ``bislerp`` (our spherical bilinear interpolation for
latents: it blends neighbouring latent vectors along the great circle and their lengths
linearly, which keeps the latents' norm where plain bilinear would shrink it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

LATENT_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"]
IMAGE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
CROP_METHODS = ["disabled", "center"]


def fill_aspect(width: int, height: int, w: int, h: int, minimum: int = 1) -> tuple[int, int]:
    """ComfyUI's upscale sizes: a 0 width or height follows the ``w``x``h`` aspect ratio; both
    sides are at least ``minimum``. (Both 0 means "unchanged" and is handled by the caller.)"""
    if width == 0:
        height = max(minimum, height)
        return max(minimum, round(w * height / h)), height
    if height == 0:
        width = max(minimum, width)
        return width, max(minimum, round(h * width / w))
    return max(minimum, width), max(minimum, height)


def scaled_size(width: int, height: int, factor: float) -> tuple[int, int]:
    """``(width, height)`` times ``factor``, rounded, at least 1 (the "Upscale ... By" nodes)."""
    return max(1, round(width * factor)), max(1, round(height * factor))


def scaled_shape(shape: Sequence[int], factor: float, *, channels_last: bool) -> tuple[int, ...]:
    """An IMAGE shape (b, h, w, c: ``channels_last``) or a LATENT one (b, c, h, w) with its height
    and width times ``factor``, rounded as :func:`scaled_size` does."""
    h_axis = len(shape) - (3 if channels_last else 2)
    out = list(shape)
    out[h_axis + 1], out[h_axis] = scaled_size(shape[h_axis + 1], shape[h_axis], factor)
    return tuple(out)


def center_crop_to_aspect(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Crop ``x`` around its centre to the aspect ratio ``width:height``."""
    old_h, old_w = x.shape[-2:]
    if old_w * height > old_h * width:  # too wide
        new_w = max(1, round(old_h * width / height))
        left = (old_w - new_w) // 2
        return x[..., :, left:left + new_w]
    if old_w * height < old_h * width:  # too tall
        new_h = max(1, round(old_w * height / width))
        top = (old_h - new_h) // 2
        return x[..., top:top + new_h, :]
    return x


def resize(x: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled") -> torch.Tensor:
    """``x`` ``[B, C, H, W]`` resized to ``height`` x ``width`` with ``method``."""
    if crop == "center":
        x = center_crop_to_aspect(x, width, height)
    elif crop != "disabled":
        raise ValueError(f"unknown crop {crop!r}; expected one of {CROP_METHODS}")
    if tuple(x.shape[-2:]) == (height, width):
        return x.clone()
    if method == "bislerp":
        return bislerp(x, width, height)
    if method == "lanczos":
        return lanczos(x, width, height)
    if method in ("bilinear", "bicubic"):
        return F.interpolate(x, size=(height, width), mode=method, align_corners=False)
    if method in ("nearest-exact", "area"):
        return F.interpolate(x, size=(height, width), mode=method)
    raise ValueError(f"unknown resize method {method!r}")


def lanczos(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Lanczos resampling through PIL, one float32 channel at a time."""
    from PIL import Image

    src = x.detach().to("cpu", torch.float32).numpy()
    out = np.empty((src.shape[0], src.shape[1], height, width), dtype=np.float32)
    for b in range(src.shape[0]):
        for c in range(src.shape[1]):
            img = Image.fromarray(np.ascontiguousarray(src[b, c]), mode="F")
            out[b, c] = np.asarray(img.resize((width, height), Image.Resampling.LANCZOS))
    return torch.from_numpy(out).to(device=x.device, dtype=x.dtype)


def _slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Per-vector spherical interpolation over dim 1 (channels), lengths interpolated linearly."""
    eps = 1e-6
    na = a.norm(dim=1, keepdim=True)
    nb = b.norm(dim=1, keepdim=True)
    ua = a / na.clamp_min(eps)
    ub = b / nb.clamp_min(eps)
    cos = (ua * ub).sum(dim=1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.acos(cos)
    sin = torch.sin(omega)
    safe = sin > 1e-4  # nearly parallel (or a zero vector): plain lerp is exact enough
    sin_safe = torch.where(safe, sin, torch.ones_like(sin))
    wa = torch.where(safe, torch.sin((1 - t) * omega) / sin_safe, 1 - t)
    wb = torch.where(safe, torch.sin(t * omega) / sin_safe, t)
    direction = wa * ua + wb * ub
    length = na + (nb - na) * t
    dn = direction.norm(dim=1, keepdim=True).clamp_min(eps)
    result = direction / dn * length
    # Where both inputs are zero vectors the result is zero.
    return torch.where((na < eps) & (nb < eps), a + (b - a) * t, result)


def _bislerp_axis(x: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    n = x.shape[dim]
    if n == size:
        return x
    # Source coordinate of each output pixel centre (align_corners=False convention).
    pos = (torch.arange(size, dtype=torch.float64) + 0.5) * (n / size) - 0.5
    pos = pos.clamp(0, n - 1)
    i0 = pos.floor().long()
    i1 = (i0 + 1).clamp(max=n - 1)
    t = (pos - i0).to(x.dtype).to(x.device)
    a = x.index_select(dim, i0.to(x.device))
    b = x.index_select(dim, i1.to(x.device))
    shape = [1] * x.dim()
    shape[dim] = size
    return _slerp(a, b, t.view(shape))


def bislerp(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Separable spherical-linear resize of ``[B, C, H, W]`` latents (see module docstring)."""
    dtype = x.dtype
    y = x.float()
    y = _bislerp_axis(y, width, 3)
    y = _bislerp_axis(y, height, 2)
    return y.to(dtype)

"""The control image (an IMAGE) as a model input at the latent's pixel size."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def prepare_hint(image: torch.Tensor, *, batch: int, height: int, width: int, channels: int,
                 device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``image`` ``[B, H, W, C]`` in 0..1 -> ``[batch, channels, height, width]``.

    A hint of another size is cropped to the target's aspect ratio around its centre, then
    resized with nearest-exact sampling (control images are edges, poses, depth: sharp lines
    stay sharp), as ComfyUI does. A hint batch smaller than the latent batch repeats.
    """
    if not isinstance(image, torch.Tensor) or image.dim() != 4:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"the control image must be an IMAGE [batch, height, width, channels], "
                         f"got {shape}")
    x = image.to(device=device, dtype=torch.float32).movedim(-1, 1)
    c = x.shape[1]
    if c > channels:
        x = x.mean(dim=1, keepdim=True) if channels == 1 else x[:, :channels]
    elif c < channels:
        if c != 1:
            raise ValueError(f"the control image has {c} channels; this model takes {channels}")
        x = x.repeat(1, channels, 1, 1)
    if x.shape[-2:] != (height, width):
        x = _center_crop(x, height / width)
        x = F.interpolate(x, size=(height, width), mode="nearest-exact")
    if x.shape[0] != batch:
        reps = -(-batch // x.shape[0])
        x = x.repeat(reps, 1, 1, 1)[:batch]
    return x.to(dtype)


def _center_crop(x: torch.Tensor, aspect: float) -> torch.Tensor:
    h, w = x.shape[-2:]
    if abs(h / w - aspect) < 1e-6:
        return x
    if h / w > aspect:  # too tall
        new_h = max(1, round(w * aspect))
        top = (h - new_h) // 2
        return x[:, :, top:top + new_h]
    new_w = max(1, round(h / aspect))
    left = (w - new_w) // 2
    return x[:, :, :, left:left + new_w]

"""IMAGE tensors <-> the uint8 RGB pictures annotators work on, at a detection resolution.

A preprocessor's ``resolution`` is the short side it detects at (the image is resized with its
aspect kept). The networks want sides that are multiples of 64, so the picture is padded with
its edge pixels to the next multiple and the pad is cut off the result again: no stretching.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import torch

MULTIPLE = 64


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """One IMAGE entry ``[H, W, C]`` as uint8 RGB ``[H, W, 3]`` (alpha dropped, grey repeated)."""
    arr = image.detach().to("cpu", torch.float32).clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return np.ascontiguousarray(arr[..., :3])


def to_image(pictures: list[np.ndarray]) -> torch.Tensor:
    """uint8 ``[H, W]`` or ``[H, W, 3]`` pictures (one size) as an IMAGE batch in 0..1."""
    out = []
    for p in pictures:
        if p.ndim == 2:
            p = p[..., None]
        if p.shape[-1] == 1:
            p = np.repeat(p, 3, axis=-1)
        out.append(torch.from_numpy(np.ascontiguousarray(p[..., :3])).float() / 255.0)
    return torch.stack(out)


def detection_size(height: int, width: int, resolution: int) -> tuple[int, int]:
    """(h, w) with the short side ``resolution`` and the aspect kept."""
    k = resolution / min(height, width)
    return max(1, round(height * k)), max(1, round(width * k))


def resize(picture: np.ndarray, height: int, width: int) -> np.ndarray:
    if picture.shape[:2] == (height, width):
        return picture
    shrinking = height * width < picture.shape[0] * picture.shape[1]
    return cv2.resize(picture, (width, height),
                      interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def padded(picture: np.ndarray, multiple: int = MULTIPLE) -> np.ndarray:
    """Pad bottom/right with edge pixels up to multiples of ``multiple``."""
    h, w = picture.shape[:2]
    ph, pw = -h % multiple, -w % multiple
    if ph == 0 and pw == 0:
        return picture
    return np.pad(picture, ((0, ph), (0, pw), (0, 0)), mode="edge")


def run_each(image: torch.Tensor, resolution: int, detect: Callable[[np.ndarray], np.ndarray], *,
             pad: bool = True, check: Callable[[], None] | None = None) -> torch.Tensor:
    """``detect`` on every entry of an IMAGE batch resized so its short side is ``resolution``
    (and padded to multiples of 64 when ``pad``); the results, cut back to that size, as an
    IMAGE. ``detect`` gets and returns uint8 pictures of the same height and width."""
    if image.dim() != 4:
        raise ValueError(f"expected an IMAGE [batch, height, width, channels], got shape "
                         f"{list(image.shape)}")
    h, w = detection_size(image.shape[1], image.shape[2], resolution)
    out = []
    for entry in image:
        if check is not None:
            check()
        picture = resize(to_uint8(entry), h, w)
        result = detect(padded(picture) if pad else picture)
        out.append(result[:h, :w])
    return to_image(out)

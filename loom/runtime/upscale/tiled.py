"""Run an image-to-image model over a big image in overlapping tiles, blended without seams.

Super-resolution networks need working memory proportional to the pixels they see, so a 2048²
image cannot go through in one piece on most GPUs (nor in a few GB of RAM). Tiles overlap; each
tile's output is weighted by a ramp that falls to (almost) zero across the overlap, so every
output pixel is a smooth blend of the tiles that cover it and no tile edge shows. On
out-of-memory the tile is halved and the image tried again.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

log = logging.getLogger("loom.upscale")

MIN_TILE = 64


class TileOOMError(RuntimeError):
    """Out of memory even at the smallest tile size."""


@dataclass(frozen=True)
class TilePlan:
    """Where the tiles of one axis start: they cover ``[0, size)`` with at least ``overlap``."""

    starts: tuple[int, ...]
    tile: int

    @classmethod
    def for_axis(cls, size: int, tile: int, overlap: int) -> TilePlan:
        if size <= tile:
            return cls((0,), size)
        stride = tile - overlap
        count = math.ceil((size - tile) / stride) + 1
        # Spread the tiles evenly so every overlap is at least `overlap` wide.
        starts = tuple(round(i * (size - tile) / (count - 1)) for i in range(count))
        return cls(starts, tile)


def _ramp(length: int, left: bool, right: bool, overlap: int) -> torch.Tensor:
    """Blend weights along one axis of an output tile: 1 in the middle, a linear ramp over the
    overlap at the sides that touch another tile (never exactly 0, so every pixel has weight)."""
    w = torch.ones(length)
    if overlap <= 0:
        return w
    ramp = (torch.arange(overlap, dtype=torch.float32) + 0.5) / overlap
    if left:
        w[:overlap] = ramp
    if right:
        w[length - overlap:] = torch.minimum(w[length - overlap:], ramp.flip(0))
    return w


def upscale_tiled(run: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, *, scale: int,
                  tile: int, overlap: int, pad_to: Callable[[int, int], tuple[int, int]] | None = None,
                  on_tile: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Upscale ``image`` ([B, C, H, W], on the model's device and dtype) tile by tile.

    ``run`` maps a [B, C, h, w] tile to [B, C', h·scale, w·scale]. ``pad_to(w, h)`` gives the
    padding (right, bottom) a tile needs to satisfy the model's size rules; the padded part of
    the output is cut off. ``on_tile(done, total)`` is called after each tile (progress and
    interrupt). The result is float32 on the CPU: a 4× result of a big image is too big to
    keep on the GPU next to the model.
    """
    b, _c, h, w = image.shape
    overlap = min(overlap, tile // 4)
    rows, cols = TilePlan.for_axis(h, tile, overlap), TilePlan.for_axis(w, tile, overlap)
    total = len(rows.starts) * len(cols.starts)
    out = None
    weight = torch.zeros(1, 1, h * scale, w * scale)
    done = 0
    for iy, y in enumerate(rows.starts):
        for ix, x in enumerate(cols.starts):
            piece = image[:, :, y:y + rows.tile, x:x + cols.tile]
            th, tw = piece.shape[2:]
            if pad_to is not None:
                pw, ph = pad_to(tw, th)
                if pw or ph:
                    mode = "reflect" if pw < tw and ph < th else "replicate"
                    piece = F.pad(piece, (0, pw, 0, ph), mode=mode)
            result = run(piece)[:, :, :th * scale, :tw * scale].float().cpu()
            if out is None:
                out = torch.zeros(b, result.shape[1], h * scale, w * scale)
            wy = _ramp(th * scale, iy > 0, iy < len(rows.starts) - 1, overlap * scale)
            wx = _ramp(tw * scale, ix > 0, ix < len(cols.starts) - 1, overlap * scale)
            wt = (wy[:, None] * wx[None, :])[None, None]
            ys, xs = slice(y * scale, (y + th) * scale), slice(x * scale, (x + tw) * scale)
            out[:, :, ys, xs] += result * wt
            weight[:, :, ys, xs] += wt
            done += 1
            if on_tile is not None:
                on_tile(done, total)
    assert out is not None
    return out / weight


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def upscale_with_retry(run, image: torch.Tensor, *, scale: int, tile: int, overlap: int,
                       pad_to=None, on_tile=None, on_oom: Callable[[], None] | None = None
                       ) -> torch.Tensor:
    """:func:`upscale_tiled`, halving the tile on out-of-memory down to :data:`MIN_TILE`."""
    while True:
        try:
            return upscale_tiled(run, image, scale=scale, tile=tile, overlap=overlap,
                                 pad_to=pad_to, on_tile=on_tile)
        except Exception as exc:  # only out-of-memory is retried; the rest is re-raised
            if not is_oom(exc):
                raise
            if on_oom is not None:
                on_oom()
            if tile <= MIN_TILE:
                raise TileOOMError(
                    f"out of memory even with {MIN_TILE}px tiles; free memory (close other "
                    "programs or unload models) or use a smaller image") from exc
            # Halve what was really used: a tile bigger than the image ran as the whole image.
            tile = max(MIN_TILE, min(tile, max(image.shape[2:])) // 2)
            log.warning("Out of memory while upscaling: retrying with %dpx tiles", tile)

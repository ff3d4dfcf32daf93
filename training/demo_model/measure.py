"""Read a picture of the demo world back: which colour, which shape, where.

Used by the acceptance test and the evaluation script on pictures the model drew. The picture's
background colours are known from the prompt; everything clearly different from them is
foreground. Colour: the named colour most foreground pixels are nearest to. Position: the 3x3 grid
cell of the largest foreground blob's centroid. Shape: nearest neighbour among the scene
generator's own masks (the ground truth), compared after cropping to the bounding box and
resizing, plus the box's aspect ratio — a "classifier trained on the generator's ground truth".
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from training.demo_model import scenes

CROP = 24  # side of the normalised shape crops
FG_DISTANCE = 70.0  # RGB distance from every background colour above which a pixel is foreground
MIN_AREA = 30  # pixels (at 128x128) below which there is no object
_NAMES = list(scenes.COLORS)
_PALETTE = np.array([scenes.COLORS[n] for n in _NAMES], dtype=np.float32)


@dataclass
class Reading:
    color: str | None  # dominant foreground colour
    color_share: float  # its share of the foreground pixels
    shape: str | None
    position: str | None
    mask: np.ndarray  # [H, W] bool, all foreground


def foreground(image: np.ndarray, background: tuple[str, ...]) -> np.ndarray:
    """Pixels far from every one of the named background colours (speckles removed)."""
    img = image.astype(np.float32)
    dist = np.min(
        [np.linalg.norm(img - np.array(scenes.BACKGROUNDS[b], np.float32), axis=-1) for b in background],
        axis=0,
    )
    return ndimage.binary_opening(dist > FG_DISTANCE, structure=np.ones((3, 3)))


def colour_mask(image: np.ndarray, colour: str) -> np.ndarray:
    """Pixels nearer to the named colour than to any other named colour or background, and
    close to it (speckles removed): where a picture of several objects shows that colour."""
    names = [*_NAMES, *scenes.BACKGROUNDS]
    refs = np.concatenate([_PALETTE, np.array(list(scenes.BACKGROUNDS.values()), np.float32)])
    dist = np.linalg.norm(image.astype(np.float32)[..., None, :] - refs, axis=-1)
    k = names.index(colour)
    mask = (dist.argmin(-1) == k) & (dist[..., k] < FG_DISTANCE)
    return ndimage.binary_opening(mask, structure=np.ones((3, 3)))


def dominant_color(image: np.ndarray, mask: np.ndarray) -> tuple[str | None, float]:
    pix = image[mask].astype(np.float32)
    if len(pix) == 0:
        return None, 0.0
    nearest = np.argmin(((pix[:, None, :] - _PALETTE[None]) ** 2).sum(-1), axis=1)
    counts = np.bincount(nearest, minlength=len(_NAMES))
    return _NAMES[int(counts.argmax())], float(counts.max() / counts.sum())


def _features(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    crop = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    h, w = crop.shape
    small = Image.fromarray(crop.astype(np.uint8) * 255).resize((CROP, CROP), Image.BILINEAR)
    vec = np.asarray(small, np.float32).ravel() / 255
    return np.concatenate([vec, [4.0 * np.log(w / h)]])  # aspect ratio, weighted like ~16 pixels


@functools.cache
def _references() -> tuple[np.ndarray, list[str]]:
    """Ground-truth masks of every shape at every size and a few sub-pixel offsets."""
    feats, labels = [], []
    for shape in scenes.SHAPES:
        for size in scenes.SIZES:
            for dx in (0.0, 0.3, 0.6):
                scene = scenes.scene_from_words("red", shape, "center", size)
                scene.objects[0].cx += dx
                scene.objects[0].cy += dx / 2
                feats.append(_features(scenes.render(scene).masks[0]))
                labels.append(shape)
    return np.stack(feats), labels


def classify_shape(mask: np.ndarray) -> str:
    refs, labels = _references()
    d = ((refs - _features(mask)[None]) ** 2).sum(1)
    return labels[int(d.argmin())]


def position_of(mask: np.ndarray) -> str:
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    row = min(2, int(ys.mean() / h * 3))
    col = min(2, int(xs.mean() / w * 3))
    return scenes.POSITIONS[row * 3 + col]


def largest_blob(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = ndimage.sum(mask, labels, range(1, n + 1))
    return labels == (int(np.argmax(sizes)) + 1)


def read(image: np.ndarray, background: tuple[str, ...]) -> Reading:
    """What a single-object picture shows, given its background colour names."""
    mask = foreground(image, background)
    scale = (image.shape[0] / scenes.SIZE) ** 2
    if mask.sum() < MIN_AREA * scale:
        return Reading(None, 0.0, None, None, mask)
    color, share = dominant_color(image, mask)
    blob = largest_blob(mask)
    return Reading(color, share, classify_shape(blob), position_of(blob), mask)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0

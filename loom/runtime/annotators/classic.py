"""The weights-free annotators: edges (Canny), content shuffle, standard lineart, tile blur.

They work on uint8 RGB pictures ``[H, W, 3]`` and return pictures of the same size.
"""

from __future__ import annotations

import cv2
import numpy as np

# ComfyUI's Canny node takes thresholds on the (unnormalised 3x3 Sobel) gradient of a 0..1 image;
# OpenCV computes the same gradient on 0..255 pictures, 255 times larger.
_NORMALISED_TO_CV = 255.0


def canny(picture: np.ndarray, low: float, high: float) -> np.ndarray:
    """OpenCV's Canny on the picture (thresholds on its 0..255 Sobel scale), as controlnet-aux's
    CannyDetector computes it."""
    return cv2.Canny(picture, low, high)


def canny_normalised(picture: np.ndarray, low: float, high: float) -> np.ndarray:
    """Canny with thresholds on the gradient of a 0..1 image (ComfyUI core's Canny inputs):
    grey, 5x5 Gaussian blur (sigma 1), L2 gradient magnitude, hysteresis."""
    grey = cv2.cvtColor(picture, cv2.COLOR_RGB2GRAY)
    blurred = cv2.GaussianBlur(grey, (5, 5), 1.0)
    return cv2.Canny(blurred, low * _NORMALISED_TO_CV, high * _NORMALISED_TO_CV, L2gradient=True)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """Uniform noise on a coarse grid (one value per ``cell`` pixels), cubically upsampled,
    stretched to 0..1: a smooth random field."""
    coarse = rng.uniform(0.0, 1.0, size=(height // cell + 2, width // cell + 2)).astype(np.float32)
    fine = cv2.resize(coarse, (width + 2 * cell, height + 2 * cell), interpolation=cv2.INTER_CUBIC)
    fine = fine[cell:cell + height, cell:cell + width]
    fine -= fine.min()
    return fine / max(float(fine.max()), 1e-6)


def content_shuffle(picture: np.ndarray, seed: int, cell: int = 256) -> np.ndarray:
    """Shuffle the picture's content with a smooth random warp (the content-shuffle ControlNet's
    input): every output pixel samples the input at a smoothly varying random place."""
    h, w = picture.shape[:2]
    rng = np.random.default_rng(seed)
    x = _smooth_noise(rng, h, w, cell) * float(w - 1)
    y = _smooth_noise(rng, h, w, cell) * float(h - 1)
    return cv2.remap(picture, x, y, cv2.INTER_LINEAR)


def tile_blur(picture: np.ndarray, iterations: int) -> np.ndarray:
    """Halve the picture ``iterations`` times with a Gaussian pyramid and grow it back: the blurry
    input the tile ControlNet expects."""
    h, w = picture.shape[:2]
    out = picture
    for _ in range(iterations):
        if min(out.shape[:2]) < 2:
            break
        out = cv2.pyrDown(out)
    for _ in range(iterations):
        out = cv2.pyrUp(out)
    return cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR) if out.shape[:2] != (h, w) else out


def lineart_standard(picture: np.ndarray, sigma: float, threshold: float) -> np.ndarray:
    """controlnet-aux's LineartStandardDetector (dark lines: how much darker a pixel is than its
    Gaussian-blurred surroundings, normalised by the median line intensity)."""
    from controlnet_aux.lineart_standard import LineartStandardDetector

    return LineartStandardDetector()(picture, guassian_sigma=sigma, intensity_threshold=threshold,
                                     detect_resolution=min(picture.shape[:2]), output_type="np")

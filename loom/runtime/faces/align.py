"""Align a face to the standard 512×512 template and paste a processed face back.

The template is the five-point FFHQ alignment that GFPGAN, CodeFormer and RestoreFormer were
trained on (eye centres, nose tip, mouth corners at fixed places of a 512 crop). A similarity
transform (rotation, uniform scale, shift) maps the detected landmarks onto it; its inverse
takes the restored face back, blended through a feathered mask so no edge shows and pixels
away from the face stay exactly as they were.
"""

from __future__ import annotations

import cv2
import numpy as np

TEMPLATE_512 = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                         [201.26117, 371.41043], [313.08905, 371.15118]], np.float32)


def align_matrix(landmarks: np.ndarray, size: int = 512) -> np.ndarray:
    """The 2×3 similarity transform from image pixels to the ``size``² template crop."""
    template = TEMPLATE_512 * (size / 512.0)
    matrix, _ = cv2.estimateAffinePartial2D(np.asarray(landmarks, np.float32), template,
                                            method=cv2.LMEDS)
    if matrix is None:
        raise ValueError("could not align the face: its landmarks are degenerate")
    return matrix


def warp_face(image: np.ndarray, matrix: np.ndarray, size: int = 512) -> np.ndarray:
    """The aligned ``size``² face crop of a float32 ``[H, W, 3]`` image."""
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT101)


def face_mask(matrix: np.ndarray, shape: tuple[int, int], size: int = 512) -> np.ndarray:
    """Where the aligned crop lands in the image, eroded and feathered: float32 ``[H, W]``,
    1 inside the face, falling smoothly to exactly 0 a little inside the crop's border."""
    h, w = shape
    inverse = cv2.invertAffineTransform(matrix)
    square = np.ones((size, size), np.float32)
    mask = cv2.warpAffine(square, inverse, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    scale = float(np.sqrt(abs(np.linalg.det(inverse[:, :2]))))  # image px per crop px
    face_px = max(4, int(size * scale))
    erode = max(1, face_px // 20)
    mask = cv2.erode(mask, np.ones((2 * erode + 1, 2 * erode + 1), np.uint8))
    blur = max(1, face_px // 20) * 2 + 1
    mask = cv2.GaussianBlur(mask, (blur, blur), 0)
    mask[mask < 1e-3] = 0.0  # exactly unchanged away from the face
    return mask


def paste_back(image: np.ndarray, face: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Blend the processed ``face`` crop back into float32 ``image`` ``[H, W, 3]``."""
    h, w = image.shape[:2]
    size = face.shape[0]
    inverse = cv2.invertAffineTransform(matrix)
    back = cv2.warpAffine(face, inverse, (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    mask = face_mask(matrix, (h, w), size)[..., None]
    out = image * (1.0 - mask) + back * mask
    out[mask[..., 0] == 0] = image[mask[..., 0] == 0]
    return out

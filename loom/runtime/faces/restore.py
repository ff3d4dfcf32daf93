"""Restore faces in an image: detect, align to the 512 template, run the model, paste back."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from loom.runtime.faces.align import align_matrix, paste_back, warp_face
from loom.runtime.faces.detect import Face, detect_faces
from loom.runtime.model_manager import ModelManager
from loom.runtime.upscale.model import ImageModel

FACE_SIZE = 512
FACE_PURPOSES = ("FaceSR",)


def restore_crop(model: ImageModel, crop: np.ndarray, manager: ModelManager,
                 fidelity: float = 0.5) -> np.ndarray:
    """Run a face model on one aligned float32 crop ``[512, 512, 3]`` in 0..1.

    These models were trained on images in -1..1 (whatever wrapper calls them), and CodeFormer
    takes the fidelity weight ``w`` (0: most restoration, 1: closest to the input)."""
    device = manager.device
    dtype = next(model.module.parameters()).dtype
    x = torch.from_numpy(crop).movedim(-1, 0)[None].to(device, dtype) * 2 - 1
    kwargs = {"weight": float(fidelity)} if model.architecture == "CodeFormer" else {}
    with torch.inference_mode():
        out = model.module(x, **kwargs)
    if isinstance(out, (tuple, list)):
        out = out[0]
    out = ((out.float() + 1) / 2).nan_to_num(0.5).clamp(0, 1)
    return out[0].movedim(0, -1).cpu().numpy()


def restore_faces(model: ImageModel, image: torch.Tensor, manager: ModelManager, *,
                  detector: str = "mtcnn", threshold: float = 0.9, largest_only: bool = False,
                  fidelity: float = 0.5, models_folder=None,
                  progress: Callable[[int, int], None] | None = None) -> tuple[torch.Tensor, int]:
    """Restore every detected face of IMAGE ``[B, H, W, C]``; returns the image and the number
    of faces restored. Images with no face come back unchanged."""
    results, count = [], 0
    batch = image.shape[0]
    with manager.use(model.module):
        for i in range(batch):
            rgb = image[i, :, :, :3].float().cpu().numpy()
            faces = detect_faces((rgb * 255).round().astype(np.uint8), detector, threshold,
                                 largest_only, models_folder)
            out = rgb.copy()
            for face in faces:
                out = _restore_one(model, out, face, manager, fidelity)
            count += len(faces)
            result = torch.from_numpy(out)
            if image.shape[-1] > 3:  # keep extra channels (alpha) as they were
                result = torch.cat([result, image[i, :, :, 3:].float().cpu()], -1)
            results.append(result)
            if progress is not None:
                progress(i + 1, batch)
    return torch.stack(results).to(image.dtype), count


def _restore_one(model, image: np.ndarray, face: Face, manager, fidelity) -> np.ndarray:
    matrix = align_matrix(face.landmarks, FACE_SIZE)
    crop = warp_face(image, matrix, FACE_SIZE)
    restored = restore_crop(model, crop, manager, fidelity)
    return paste_back(image, restored, matrix)

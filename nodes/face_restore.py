"""Face restoration (GFPGAN, CodeFormer, RestoreFormer) and face detection as nodes.

ComfyUI's core has none of this; the names follow the popular facerestore node pack so its
workflows load: FaceRestoreModelLoader, FaceRestoreWithModel. Detection uses weights that
registry packages ship (MTCNN from facenet-pytorch, MediaPipe's face detector), so it works on a
fresh install; restoration models go in ``models/facerestore_models/``.
"""

from __future__ import annotations

import numpy as np
import torch

from loom.nodeapi import Combo, Float, Int, Link, ModelFile, ModelUse, Node, Output, fraction
from loom.runtime.faces.detect import DETECTORS, detect_faces
from loom.runtime.faces.restore import FACE_PURPOSES, restore_faces
from loom.runtime.sd.common import manager_of
from loom.runtime.upscale.model import load_model_file

FOLDER = "facerestore_models"
USUAL_FILES = "GFPGANv1.4.pth, GFPGANv1.3.pth, codeformer.pth, RestoreFormer.pth"


def _detector_input() -> Combo:
    return Combo(list(DETECTORS), default="mtcnn",
                 tooltip="mtcnn (facenet-pytorch) and mediapipe ship their weights; the "
                         "retinaface ones need facexlib's files in models/facedetection/.")


def _detection_folder(ctx):
    paths = ctx.paths if ctx is not None else None
    return paths.model_folder("facedetection") if paths is not None else None


def _threshold() -> Float:
    return Float(0.9, min=0.05, max=1.0, step=0.01, tooltip="Minimum detection confidence.")


def _faces() -> Combo:
    return Combo(["all", "largest"], default="all", tooltip="Every face, or only the largest.")


class FaceRestoreModelLoader(Node, category="loaders", display_name="Load Face Restore Model"):
    description = (f"Loads a face restoration model from models/{FOLDER}/ "
                   f"(usual files: {USUAL_FILES}; .safetensors or .pth).")
    inputs = {"model_name": ModelFile(FOLDER, tooltip=f"e.g. {USUAL_FILES}")}
    outputs = (Output("FACE_RESTORE_MODEL"),)

    def run(self, model_name):
        return (load_model_file(self.ctx, FOLDER, model_name, purposes=FACE_PURPOSES,
                                what="face restoration model"),)


class FaceRestoreWithModel(Node, category="image/face restore", display_name="Restore Faces (using Model)"):
    """Finds faces, aligns each to the 512 template, restores it with the model and pastes it back
    through a feathered mask; the rest of the image is unchanged."""
    inputs = {
        "facerestore_model": Link("FACE_RESTORE_MODEL"),
        "image": Link("IMAGE"),
        "facedetection": _detector_input(),
        "codeformer_fidelity": fraction(0.5, step=0.05,
                                        tooltip="CodeFormer only: 0 restores most, 1 keeps closest "
                                                "to the input."),
        "threshold": _threshold(),
        "faces": _faces(),
    }
    outputs = (Output("IMAGE"),)

    def uses(self, facerestore_model, **_):
        return ModelUse((facerestore_model,))  # one 512² face at a time

    def run(self, facerestore_model, image, facedetection="mtcnn", codeformer_fidelity=0.5,
            threshold=0.9, faces="all"):
        out, _count = restore_faces(facerestore_model, image, manager_of(self.ctx),
                                    detector=facedetection, threshold=threshold,
                                    largest_only=faces == "largest", fidelity=codeformer_fidelity,
                                    models_folder=_detection_folder(self.ctx),
                                    progress=lambda d, t: self.ctx.progress(d, t))
        return (out,)


class FaceDetect(Node, category="image/face restore", display_name="Detect Faces"):
    """Finds faces and gives a mask over them (boxes grown by `padding`, feathered) and the crop of
    each face resized to crop_size: for inpainting faces (a detailer) instead of restoring them."""
    inputs = {
        "image": Link("IMAGE"),
        "facedetection": _detector_input(),
        "threshold": _threshold(),
        "faces": _faces(),
        "padding": Float(0.25, min=0.0, max=2.0, step=0.05,
                         tooltip="Grow each box by this fraction of its size on every side."),
        "feather": Int(8, min=0, max=256, step=1, tooltip="Soft edge of the mask, in pixels."),
        "crop_size": Int(512, min=64, max=2048, step=8),
    }
    outputs = (Output("MASK", name="mask"), Output("IMAGE", name="crops"),
               Output("INT", name="count"))

    def run(self, image, facedetection="mtcnn", threshold=0.9, faces="all", padding=0.25,
            feather=8, crop_size=512):
        b, h, w = image.shape[:3]
        masks, crops = torch.zeros(b, h, w), []
        for i in range(b):
            rgb = (image[i, :, :, :3].float().cpu().numpy() * 255).round().astype(np.uint8)
            for face in detect_faces(rgb, facedetection, threshold, faces == "largest",
                                     _detection_folder(self.ctx)):
                x0, y0, x1, y1 = _grow(face.box, padding, w, h)
                masks[i, y0:y1, x0:x1] = 1.0
                crop = image[i:i + 1, y0:y1, x0:x1, :3].movedim(-1, 1)
                crops.append(torch.nn.functional.interpolate(
                    crop, size=(crop_size, crop_size), mode="bicubic", antialias=True)
                    .clamp(0, 1).movedim(1, -1))
        if feather > 0:
            masks = _feather(masks, feather)
        count = len(crops)
        crops_out = torch.cat(crops) if crops else torch.zeros(1, crop_size, crop_size, 3)
        return (masks, crops_out, count)


def _grow(box, padding: float, w: int, h: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    px, py = (x1 - x0) * padding, (y1 - y0) * padding
    return (max(0, int(x0 - px)), max(0, int(y0 - py)), min(w, int(np.ceil(x1 + px))),
            min(h, int(np.ceil(y1 + py))))


def _feather(masks: torch.Tensor, radius: int) -> torch.Tensor:
    """Blur the mask edges by ``radius`` pixels (a box blur twice ≈ a soft ramp)."""
    k = 2 * radius + 1
    x = masks[:, None]
    for _ in range(2):
        x = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(x, (radius,) * 4, mode="replicate"),
                                           k, stride=1)
    return x[:, 0].clamp(0, 1)


NODES = [FaceRestoreModelLoader, FaceRestoreWithModel, FaceDetect]

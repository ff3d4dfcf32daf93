"""Face detection with real weights that PyPI packages ship, so it works on a fresh install.

* ``mtcnn``: facenet-pytorch's MTCNN (its weights are in the package): boxes, scores and the
  five landmarks alignment needs (eyes, nose, mouth corners).
* ``mediapipe``: MediaPipe's BlazeFace full-range detector (inside the ``mediapipe`` 0.10.21
  wheel): boxes, scores and six keypoints; the mouth corners are placed from the mouth centre
  and the eye line with the proportions of the alignment template.
* ``retinaface_resnet50`` / ``retinaface_mobile0.25``: facexlib's RetinaFace (the detector GFPGAN
  and CodeFormer were tuned with), when its weights are in ``models/facedetection/`` under their
  usual names; no registry ships them, and nothing is downloaded.

Landmarks are in image pixels, ordered as the template: eye on the image's left, eye on its
right, nose tip, mouth corner left, mouth corner right.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DETECTORS = ("mtcnn", "mediapipe", "retinaface_resnet50", "retinaface_mobile0.25")
# RetinaFace networks and their usual file names in models/facedetection/.
RETINAFACE_FILES = {"retinaface_resnet50": ("resnet50", "detection_Resnet50_Final.pth"),
                    "retinaface_mobile0.25": ("mobile0.25", "detection_mobilenet0.25_Final.pth")}

# Mouth width over eye distance in the 512 template (FFHQ alignment points).
_MOUTH_OVER_EYES = (313.08905 - 201.26117) / (318.90277 - 192.98138)


class FaceDetectorUnavailable(RuntimeError):
    """The detector's package is not installed."""


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels
    score: float
    landmarks: np.ndarray  # (5, 2) float32, pixels, template order

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)


_lock = threading.Lock()
_mtcnn = None


def _detect_mtcnn(rgb: np.ndarray, threshold: float) -> list[Face]:
    global _mtcnn
    try:
        from facenet_pytorch import MTCNN
    except ImportError as exc:
        raise FaceDetectorUnavailable("the mtcnn detector needs the facenet-pytorch package "
                                      "(installed by Loom's set-up)") from exc
    with _lock:  # one MTCNN per process; its forward is not meant for concurrent calls
        if _mtcnn is None:
            _mtcnn = MTCNN(keep_all=True, device="cpu")
        boxes, probs, points = _mtcnn.detect(rgb, landmarks=True)
    if boxes is None:
        return []
    return [Face(tuple(float(v) for v in box), float(p), np.asarray(lm, np.float32))
            for box, p, lm in zip(boxes, probs, points, strict=True) if p >= threshold]


def _detect_mediapipe(rgb: np.ndarray, threshold: float) -> list[Face]:
    try:
        from mediapipe.python.solutions import face_detection
    except ImportError as exc:
        raise FaceDetectorUnavailable("the mediapipe detector needs the mediapipe package "
                                      "(0.10.21, installed by Loom's set-up)") from exc
    h, w = rgb.shape[:2]
    with face_detection.FaceDetection(model_selection=1, min_detection_confidence=threshold) as fd:
        result = fd.process(np.ascontiguousarray(rgb))
    faces = []
    for det in result.detections or []:
        rel = det.location_data.relative_bounding_box
        kp = np.array([(k.x * w, k.y * h) for k in det.location_data.relative_keypoints], np.float32)
        eye_a, eye_b, nose, mouth = kp[0], kp[1], kp[2], kp[3]
        left, right = (eye_a, eye_b) if eye_a[0] <= eye_b[0] else (eye_b, eye_a)
        half = (right - left) * _MOUTH_OVER_EYES / 2
        landmarks = np.stack([left, right, nose, mouth - half, mouth + half]).astype(np.float32)
        box = (rel.xmin * w, rel.ymin * h, (rel.xmin + rel.width) * w, (rel.ymin + rel.height) * h)
        faces.append(Face(tuple(float(v) for v in box), float(det.score[0]), landmarks))
    return faces


_retinafaces: dict[tuple, object] = {}


def _retinaface(detector: str, folder: Path | None):
    """The RetinaFace network for ``detector``, loaded once per file version."""
    network, file_name = RETINAFACE_FILES[detector]
    path = Path(folder) / file_name if folder is not None else None
    if path is None or not path.is_file():
        where = f"{folder}" if folder is not None else "models/facedetection/"
        raise FileNotFoundError(f"The {detector} face detector needs {file_name} in {where} "
                                "(facexlib's RetinaFace weights; Loom downloads nothing). "
                                "Put the file there, or pick the mtcnn or mediapipe detector.")
    key = (str(path), path.stat().st_mtime_ns, path.stat().st_size)
    with _lock:
        model = _retinafaces.get(key)
        if model is not None:
            return model
        try:
            from facexlib.detection.retinaface import RetinaFace
        except ImportError as exc:
            raise FaceDetectorUnavailable("RetinaFace needs the facexlib package (installed by "
                                          "Loom's set-up)") from exc
        from loom.runtime.sd.reader import ModelFileError, load_state_dict

        state = {k.removeprefix("module."): v for k, v in
                 load_state_dict(path, what="face detector").items()}
        model = RetinaFace(network_name=network, half=False, device=torch.device("cpu"))
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelFileError(f"{file_name} is not a RetinaFace {network} detector: "
                                 f"{str(exc).splitlines()[0]}") from None
        model.eval().requires_grad_(False)
        _retinafaces.clear()  # one version of each file is enough
        _retinafaces[key] = model
        return model


def _detect_retinaface(rgb: np.ndarray, threshold: float, detector: str,
                       folder: Path | None) -> list[Face]:
    model = _retinaface(detector, folder)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    with _lock, torch.inference_mode():
        found = model.detect_faces(bgr, conf_threshold=threshold, nms_threshold=0.4,
                                   use_origin_size=True)
    h, w = rgb.shape[:2]
    faces = []
    for row in np.asarray(found, np.float32).reshape(-1, 15):
        box = (float(np.clip(row[0], 0, w)), float(np.clip(row[1], 0, h)),
               float(np.clip(row[2], 0, w)), float(np.clip(row[3], 0, h)))
        faces.append(Face(box, float(row[4]), row[5:15].reshape(5, 2).copy()))
    return faces


def detect_faces(rgb: np.ndarray, detector: str = "mtcnn", threshold: float = 0.9,
                 largest_only: bool = False, models_folder: Path | None = None) -> list[Face]:
    """Faces in an RGB uint8 image ``[H, W, 3]``, largest first. ``models_folder`` is
    ``models/facedetection/``, where the RetinaFace detectors find their weights."""
    if detector not in DETECTORS:
        raise ValueError(f"unknown face detector {detector!r}; choose one of {', '.join(DETECTORS)}")
    if detector in RETINAFACE_FILES:
        found = _detect_retinaface(rgb, threshold, detector, models_folder)
    else:
        found = (_detect_mtcnn if detector == "mtcnn" else _detect_mediapipe)(rgb, threshold)
    faces = sorted(found, key=lambda f: f.area, reverse=True)
    return faces[:1] if largest_only else faces

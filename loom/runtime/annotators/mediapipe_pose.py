"""Body, hand and face landmarks from MediaPipe (its models ship inside the ``mediapipe`` 0.10.21
wheel, so this works on a fresh install), in OpenPose's keypoint layout, drawn the way ControlNet's
OpenPose models were trained (controlnet-aux's drawing); and person / face masks.

Layouts (OpenPose's): body 18 points — nose, neck, right shoulder, elbow, wrist, left shoulder,
elbow, wrist, right hip, knee, ankle, left hip, knee, ankle, right eye, left eye, right ear, left
ear ("right" is the person's). MediaPipe's BlazePose has 33 points; the neck is the middle of the
shoulders. Hands: 21 points in the same order in both. Face: 70 points in the order of the
68-point layout plus two pupils, picked from MediaPipe's 478-point face mesh.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np

# BlazePose index for each OpenPose body point (None: the neck, computed).
BODY_FROM_BLAZEPOSE = [0, None, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7]
# Face-mesh index for each of the 70 face points: jaw (17), right brow (5), left brow (5), nose
# bridge (4), nose base (5), right eye (6), left eye (6), outer lips (12), inner lips (8), pupils.
FACE_FROM_MESH = [
    234, 93, 132, 58, 172, 136, 150, 176, 152, 400, 379, 365, 397, 288, 361, 323, 454,
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    168, 197, 5, 4, 98, 97, 2, 326, 327,
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91,
    78, 81, 13, 311, 308, 402, 14, 178,
    468, 473,
]

_lock = threading.Lock()  # MediaPipe graphs are not for concurrent use


@dataclass
class Pose:
    """One person's keypoints, normalised 0..1 (x, y) or None where not found."""

    body: list[tuple[float, float] | None]
    left_hand: list[tuple[float, float]] | None
    right_hand: list[tuple[float, float]] | None
    face: list[tuple[float, float]] | None


def _points(landmarks) -> list[tuple[float, float]]:
    return [(lm.x, lm.y) for lm in landmarks.landmark]


def _body(pose_landmarks, min_visibility: float) -> list[tuple[float, float] | None]:
    lms = pose_landmarks.landmark

    def seen(i: int):
        lm = lms[i]
        inside = 0.0 <= lm.x <= 1.0 and 0.0 <= lm.y <= 1.0
        return (lm.x, lm.y) if inside and lm.visibility >= min_visibility else None

    body = [seen(i) if i is not None else None for i in BODY_FROM_BLAZEPOSE]
    if body[2] is not None and body[5] is not None:
        body[1] = ((body[2][0] + body[5][0]) / 2, (body[2][1] + body[5][1]) / 2)
    return body


def detect_pose(picture: np.ndarray, *, hands: bool = True, face: bool = True,
                min_visibility: float = 0.5) -> list[Pose]:
    """The person in an RGB uint8 picture (MediaPipe Holistic finds one), or no one."""
    from mediapipe.python.solutions import holistic

    with _lock, holistic.Holistic(static_image_mode=True, model_complexity=1,
                                  refine_face_landmarks=True) as model:
        result = model.process(np.ascontiguousarray(picture))
    if result.pose_landmarks is None:
        return []
    face_points = None
    if face and result.face_landmarks is not None:
        mesh = _points(result.face_landmarks)
        face_points = [mesh[i] for i in FACE_FROM_MESH if i < len(mesh)]
    # Holistic's "left hand" is the person's left hand.
    left = _points(result.left_hand_landmarks) if hands and result.left_hand_landmarks else None
    right = _points(result.right_hand_landmarks) if hands and result.right_hand_landmarks else None
    return [Pose(_body(result.pose_landmarks, min_visibility), left, right, face_points)]


def draw_poses(poses: list[Pose], height: int, width: int, *, body: bool = True,
               hands: bool = True, face: bool = True) -> np.ndarray:
    """An OpenPose image: black canvas, coloured limbs and joints, hand bones, white face dots."""
    from controlnet_aux.open_pose import util
    from controlnet_aux.open_pose.body import Keypoint

    def keypoints(points):
        return None if points is None else [None if p is None else Keypoint(p[0], p[1]) for p in points]

    canvas = np.zeros((height, width, 3), np.uint8)
    for pose in poses:
        if body:
            canvas = util.draw_bodypose(canvas, keypoints(pose.body))
        if hands:
            canvas = util.draw_handpose(canvas, keypoints(pose.left_hand))
            canvas = util.draw_handpose(canvas, keypoints(pose.right_hand))
        if face:
            canvas = util.draw_facepose(canvas, keypoints(pose.face))
    return canvas


def openpose_json(poses: list[Pose], height: int, width: int) -> dict:
    """The OpenPose JSON of one picture (comfyui_controlnet_aux's POSE_KEYPOINT entries):
    flat ``[x, y, confidence]`` lists in pixels, 0s for missing points."""

    def flat(points, n):
        if points is None:
            return None
        out = []
        for p in list(points)[:n]:
            out += [0.0, 0.0, 0.0] if p is None else [p[0] * width, p[1] * height, 1.0]
        return out

    people = [{"pose_keypoints_2d": flat(p.body, 18), "face_keypoints_2d": flat(p.face, 70),
               "hand_left_keypoints_2d": flat(p.left_hand, 21),
               "hand_right_keypoints_2d": flat(p.right_hand, 21)} for p in poses]
    return {"people": people, "canvas_height": height, "canvas_width": width}


def person_mask(picture: np.ndarray, threshold: float) -> np.ndarray:
    """float32 ``[H, W]`` in 0..1: MediaPipe's selfie segmentation (general model), 1 = person,
    values under ``threshold`` set to 0."""
    from mediapipe.python.solutions import selfie_segmentation

    with _lock, selfie_segmentation.SelfieSegmentation(model_selection=0) as model:
        result = model.process(np.ascontiguousarray(picture))
    mask = np.asarray(result.segmentation_mask, np.float32)
    return np.where(mask >= threshold, mask, 0.0).astype(np.float32)


def face_mask(picture: np.ndarray, max_faces: int, min_confidence: float) -> np.ndarray:
    """float32 ``[H, W]``: 1 inside the outline of each face MediaPipe's face mesh finds."""
    from mediapipe.python.solutions import face_mesh
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_FACE_OVAL

    h, w = picture.shape[:2]
    with _lock, face_mesh.FaceMesh(static_image_mode=True, max_num_faces=max_faces,
                                   min_detection_confidence=min_confidence) as model:
        result = model.process(np.ascontiguousarray(picture))
    mask = np.zeros((h, w), np.uint8)
    oval = sorted({i for edge in FACEMESH_FACE_OVAL for i in edge})
    for landmarks in result.multi_face_landmarks or []:
        pts = np.array([(landmarks.landmark[i].x * w, landmarks.landmark[i].y * h) for i in oval],
                       np.float32)
        cv2.fillConvexPoly(mask, cv2.convexHull(pts).astype(np.int32), 1)
    return mask.astype(np.float32)

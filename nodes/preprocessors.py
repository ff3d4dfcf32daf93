"""ControlNet preprocessors: IMAGE (+ resolution) -> control IMAGE.

Names and inputs follow comfyui_controlnet_aux (CannyEdgePreprocessor, OpenposePreprocessor,
HEDPreprocessor, …) and ComfyUI core (Canny, ImageBlur), so their workflows load. ``resolution``
is the short side the annotator works at; the result has that short side and the input's aspect.

Three kinds (see loom.runtime.annotators):
* weights-free (Canny, content shuffle, standard lineart, tile, blur) — work on any install;
* MediaPipe (pose as an OpenPose skeleton, face mesh, person/face masks) — weights in the wheel;
* network annotators — weights from ``models/annotators/`` under their usual file names; a
  missing file is an error naming it and the folder, never a download.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from loom.nodeapi import SEED_MAX, Allocation, Combo, Float, Int, Link, Node, Output, fraction, pixels
from loom.runtime.annotators import classic, frames
from loom.runtime.sd.common import manager_of

LINES = "ControlNet Preprocessors/Line Extractors"
NORMAL_DEPTH = "ControlNet Preprocessors/Normal and Depth Estimators"
POSES = "ControlNet Preprocessors/Faces and Poses Estimators"
OTHERS = "ControlNet Preprocessors/others"
SWITCH = ["enable", "disable"]


def _resolution() -> Int:
    return pixels(512, min=64, step=64,
                  tooltip="Short side the annotator works at (the aspect ratio is kept).")


def _inputs(**options) -> dict:
    """A preprocessor's inputs: the image, its own options, the resolution (in this order, as
    comfyui_controlnet_aux declares them)."""
    return {"image": Link("IMAGE"), **options, "resolution": _resolution()}


def _switch(default: str = "enable") -> Combo:
    return Combo(SWITCH, default=default)


class _Preprocessor(Node):
    """Shared plumbing: run a picture -> picture function on every image of the batch."""

    outputs = (Output("IMAGE"),)

    @classmethod
    def allocation(cls, ctx, image=None, resolution=512, **_):
        """The control image: short side ``resolution`` (a square when the input is unknown)."""
        b, h, w = image[:3] if image else (1, 1, 1)
        size = frames.detection_size(h, w, int(resolution)) if h and w else (resolution, resolution)
        shapes = [(b, *size, 3)] + [None] * (len(cls.outputs) - 1)
        return Allocation(tuple(shapes), ("resolution",))

    def each(self, image, resolution, detect, pad=True) -> torch.Tensor:
        return frames.run_each(image, resolution, detect, pad=pad,
                               check=self.ctx.check_interrupted)

    def annotator(self, key: str):
        """(detector, its torch modules) from models/annotators/ (AnnotatorMissing names the
        file and folder when it is not there)."""
        from loom.runtime.annotators.models import load_annotator

        return load_annotator(self.ctx.paths, key)

    def on_device(self, modules):
        return manager_of(self.ctx).use(*modules)

    def aux_each(self, key: str, image, resolution, **kwargs) -> torch.Tensor:
        """The controlnet-aux annotator ``key`` on every picture of the batch, on the device."""
        detector, modules = self.annotator(key)
        with self.on_device(modules):
            return self.each(image, resolution, lambda p: _aux(detector, p, **kwargs))


def _aux(detector, picture, **kwargs) -> np.ndarray:
    """A controlnet-aux detector on a picture already at its working size (sides multiples of
    64, so its own resizing is the identity)."""
    side = min(picture.shape[:2])
    with torch.no_grad():
        return detector(picture, detect_resolution=side, image_resolution=side, output_type="np",
                        **kwargs)


# -- weights-free ---------------------------------------------------------------------------------


class Canny(Node, category="image/preprocessors", display_name="Canny"):
    """Edges (white on black) by Canny's method; thresholds on the gradient of the 0..1 image, as
    ComfyUI's core node takes them. The size is kept."""
    inputs = {
        "image": Link("IMAGE"),
        "low_threshold": Float(0.4, min=0.01, max=0.99, step=0.01),
        "high_threshold": Float(0.8, min=0.01, max=0.99, step=0.01),
    }
    outputs = (Output("IMAGE"),)

    def run(self, image, low_threshold, high_threshold):
        pictures = []
        for entry in image:
            self.ctx.check_interrupted()
            pictures.append(classic.canny_normalised(frames.to_uint8(entry), low_threshold,
                                                     high_threshold))
        return (frames.to_image(pictures),)


class CannyEdgePreprocessor(_Preprocessor, category=LINES, display_name="Canny Edge"):
    """Edges by OpenCV's Canny (thresholds on its 0..255 gradient scale)."""
    inputs = _inputs(
        low_threshold=Int(100, min=0, max=255, step=1),
        high_threshold=Int(200, min=0, max=255, step=1),
    )

    def run(self, image, low_threshold=100, high_threshold=200, resolution=512):
        return (self.each(image, resolution,
                          lambda p: classic.canny(p, low_threshold, high_threshold), pad=False),)


class ShufflePreprocessor(_Preprocessor, category="ControlNet Preprocessors/T2IAdapter-only",
                          display_name="Content Shuffle"):
    """The image's content shuffled by a smooth random warp (content-shuffle models)."""
    inputs = {
        "image": Link("IMAGE"),
        "resolution": _resolution(),
        "seed": Int(0, min=0, max=SEED_MAX, control_after_generate=True),
    }

    def run(self, image, resolution=512, seed=0):
        return (self.each(image, resolution, lambda p: classic.content_shuffle(p, seed), pad=False),)


class LineartStandardPreprocessor(_Preprocessor, category=LINES, display_name="Standard Lineart"):
    """Dark lines found by comparing each pixel with its blurred surroundings."""
    inputs = _inputs(
        guassian_sigma=Float(6.0, min=0.01, max=100.0, step=0.01),  # sic: the pack's name
        intensity_threshold=Int(8, min=0, max=16, step=1),
    )

    def run(self, image, guassian_sigma=6.0, intensity_threshold=8, resolution=512):
        return (self.each(image, resolution, lambda p: classic.lineart_standard(
            p, guassian_sigma, intensity_threshold)),)


class TilePreprocessor(_Preprocessor, category=OTHERS, display_name="Tile"):
    """A blurred image (down and up a Gaussian pyramid) for tile ControlNets."""
    inputs = _inputs(pyrUp_iters=Int(3, min=1, max=10, step=1))

    def run(self, image, pyrUp_iters=3, resolution=512):  # noqa: N803  (the pack's input name)
        return (self.each(image, resolution, lambda p: classic.tile_blur(p, pyrUp_iters), pad=False),)


class ImageBlur(Node, category="image/postprocessing", display_name="Image Blur"):
    """Gaussian blur with a (2 * blur_radius + 1)-pixel kernel; edges reflect."""
    inputs = {"image": Link("IMAGE"), "blur_radius": Int(1, min=1, max=31, step=1),
              "sigma": Float(1.0, min=0.1, max=10.0, step=0.1)}
    outputs = (Output("IMAGE"),)

    def run(self, image, blur_radius, sigma):
        return (gaussian_blur(image, blur_radius, sigma),)


def gaussian_blur(image: torch.Tensor, radius: int, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of an IMAGE ``[B, H, W, C]``, reflecting at the edges."""
    x = image.movedim(-1, 1).float()
    c = x.shape[1]
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(offsets ** 2) / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    pad_h, pad_w = min(radius, x.shape[2] - 1), min(radius, x.shape[3] - 1)
    mode = "reflect" if pad_h == radius and pad_w == radius else "replicate"
    x = F.pad(x, (radius, radius, radius, radius), mode=mode)
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.conv2d(x, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return x.movedim(1, -1).clamp(0, 1).to(image.dtype)


# -- MediaPipe (weights ship with the package) ----------------------------------------------------


class _PosePreprocessor(_Preprocessor, category=POSES):
    """Poses drawn as an OpenPose skeleton, with their OpenPose JSON (POSE_KEYPOINT); a subclass
    says how poses are found (``pose_finder``)."""

    inputs = _inputs(detect_hand=_switch(), detect_body=_switch(), detect_face=_switch())
    outputs = (Output("IMAGE"), Output("POSE_KEYPOINT"))

    def pose_finder(self, hands: bool, face: bool):
        """A context manager giving ``find(picture) -> list[Pose]``, its models ready."""
        raise NotImplementedError

    def run(self, image, detect_hand="enable", detect_body="enable", detect_face="enable",
            resolution=512):
        from loom.runtime.annotators import mediapipe_pose as mp

        hands, body, face = (v == "enable" for v in (detect_hand, detect_body, detect_face))
        keypoints = []
        with self.pose_finder(hands, face) as find:

            def detect(picture):
                h, w = picture.shape[:2]
                poses = find(picture)
                keypoints.append(mp.openpose_json(poses, h, w))
                return mp.draw_poses(poses, h, w, body=body, hands=hands, face=face)

            # Both take any size (OpenPose pads to its own stride): no padding here.
            out = self.each(image, resolution, detect, pad=False)
        return (out, keypoints)


class MediaPipeOpenPosePreprocessor(_PosePreprocessor,
                                    display_name="OpenPose Pose (MediaPipe, no downloads)"):
    """Body, hands and face of the person in the image, drawn as an OpenPose skeleton for OpenPose
    ControlNets, from MediaPipe's landmark models (they ship with Loom's set-up). POSE_KEYPOINT
    holds the OpenPose JSON."""

    def pose_finder(self, hands, face):
        from loom.runtime.annotators import mediapipe_pose as mp

        return contextlib.nullcontext(lambda picture: mp.detect_pose(picture, hands=hands, face=face))


class MediaPipeFaceMeshPreprocessor(_Preprocessor, category=POSES, display_name="MediaPipe Face Mesh"):
    """MediaPipe's face mesh drawn for the MediaPipe-face ControlNet: up to max_faces faces, each
    found with at least min_confidence."""
    class_type = "MediaPipe-FaceMeshPreprocessor"
    inputs = _inputs(
        max_faces=Int(10, min=1, max=50, step=1),
        min_confidence=Float(0.5, min=0.01, max=1.0, step=0.01),
    )

    def run(self, image, max_faces=10, min_confidence=0.5, resolution=512):
        from controlnet_aux.mediapipe_face import MediapipeFaceDetector

        detector = MediapipeFaceDetector()
        return (self.each(image, resolution, lambda p: _aux(
            detector, p, max_faces=max_faces, min_confidence=min_confidence)),)


class MediaPipeMask(Node, category="mask", display_name="Person / Face Mask (MediaPipe)"):
    """A mask of the person (MediaPipe's selfie segmentation) or of the faces (inside the face
    mesh's outline), at the image's size: for inpainting a person or a face. Works on a fresh
    install."""
    inputs = {
        "image": Link("IMAGE"),
        "target": Combo(["person", "face"], default="person"),
        "threshold": fraction(0.5, tooltip="person: segmentation confidence kept; face: detection "
                                           "confidence."),
        "max_faces": Int(10, min=1, max=50, step=1),
    }
    outputs = (Output("MASK"),)

    def run(self, image, target="person", threshold=0.5, max_faces=10):
        from loom.runtime.annotators import mediapipe_pose as mp

        masks = []
        for entry in image:
            self.ctx.check_interrupted()
            picture = frames.to_uint8(entry)
            if target == "person":
                masks.append(mp.person_mask(picture, threshold))
            else:
                masks.append(mp.face_mask(picture, max_faces, max(threshold, 0.01)))
        return (torch.from_numpy(np.stack(masks)),)


# -- network annotators (weights in models/annotators/) -------------------------------------------


class OpenposePreprocessor(_PosePreprocessor, display_name="OpenPose Pose"):
    """OpenPose's body, hand and face networks (models/annotators/: body_pose_model.pth,
    hand_pose_model.pth, facenet.pth). Without these files, use OpenPose Pose (MediaPipe)."""

    @contextlib.contextmanager
    def pose_finder(self, hands, face):
        from controlnet_aux.open_pose import OpenposeDetector

        body_net, modules = self.annotator("openpose_body")
        hand_net = face_net = None
        if hands:
            hand_net, more = self.annotator("openpose_hand")
            modules = modules + more
        if face:
            face_net, more = self.annotator("openpose_face")
            modules = modules + more
        detector = OpenposeDetector(body_net, hand_net, face_net)

        def find(picture):
            with torch.no_grad():
                found = detector.detect_poses(picture, include_hand=hands, include_face=face)
            return [_as_pose(p) for p in found]

        with self.on_device(modules):
            yield find


def _as_pose(result):
    from loom.runtime.annotators.mediapipe_pose import Pose

    def points(kps):
        if kps is None:
            return None
        return [None if k is None or k.x < 0 or k.y < 0 else (float(k.x), float(k.y)) for k in kps]

    return Pose(points(result.body.keypoints), points(result.left_hand), points(result.right_hand),
                points(result.face))


class _AuxNetwork(_Preprocessor):
    """A controlnet-aux network annotator (``aux_key``) with no options but the resolution."""

    aux_key = ""
    inputs = _inputs()

    def run(self, image, resolution=512):
        return (self.aux_each(self.aux_key, image, resolution),)


class _SafeAuxNetwork(_AuxNetwork):
    """A soft-edge annotator with the pack's ``safe`` switch (quantised, cleaner edges)."""

    inputs = _inputs(safe=_switch())
    options: dict = {}

    def run(self, image, safe="enable", resolution=512):
        return (self.aux_each(self.aux_key, image, resolution, safe=safe == "enable", **self.options),)


class HEDPreprocessor(_SafeAuxNetwork, category=LINES, display_name="HED Soft-Edge Lines"):
    """Soft edges by the HED network (models/annotators/ControlNetHED.pth)."""
    aux_key = "hed"


class FakeScribblePreprocessor(HEDPreprocessor, display_name="Fake Scribble Lines (aka scribble_hed)"):
    """HED edges thinned and thresholded into scribbles (ControlNetHED.pth)."""
    options = {"scribble": True}


class PiDiNetPreprocessor(_SafeAuxNetwork, category=LINES, display_name="PiDiNet Soft-Edge Lines"):
    """Soft edges by PiDiNet (models/annotators/table5_pidinet.pth)."""
    aux_key = "pidinet"


class LineArtPreprocessor(_Preprocessor, category=LINES, display_name="Realistic Lineart"):
    """Line art by the lineart network (models/annotators/sk_model.pth; coarse: sk_model2.pth)."""
    inputs = _inputs(coarse=_switch("disable"))

    def run(self, image, coarse="disable", resolution=512):
        from controlnet_aux.lineart import LineartDetector

        key = "lineart_coarse" if coarse == "enable" else "lineart"
        net, modules = self.annotator(key)
        detector = LineartDetector(net, net)  # fine and coarse: the one asked for
        with self.on_device(modules):
            return (self.each(image, resolution, lambda p: _aux(
                detector, p, coarse=coarse == "enable")),)


class AnimeLineArtPreprocessor(_AuxNetwork, category=LINES, display_name="Anime Lineart"):
    """Line art for anime pictures (models/annotators/netG.pth)."""
    aux_key = "lineart_anime"


class MLSDPreprocessor(_Preprocessor, category=LINES, display_name="M-LSD Lines"):
    """Straight lines by M-LSD (models/annotators/mlsd_large_512_fp32.pth)."""
    class_type = "M-LSDPreprocessor"
    inputs = _inputs(
        score_threshold=Float(0.1, min=0.01, max=2.0, step=0.01),
        dist_threshold=Float(0.1, min=0.01, max=20.0, step=0.01),
    )

    def run(self, image, score_threshold=0.1, dist_threshold=0.1, resolution=512):
        return (self.aux_each("mlsd", image, resolution, thr_v=score_threshold, thr_d=dist_threshold),)


class _MidasPreprocessor(_Preprocessor, category=NORMAL_DEPTH):
    inputs = _inputs(
        a=Float(np.pi * 2.0, min=0.0, max=np.pi * 5.0, step=0.05),
        bg_threshold=fraction(0.1, step=0.05),
    )
    want_normal = False

    def run(self, image, a=np.pi * 2.0, bg_threshold=0.1, resolution=512):
        detector, modules = self.annotator("midas")

        def detect(picture):
            depth, normal = _aux(detector, picture, a=a, bg_th=bg_threshold, depth_and_normal=True)
            return normal if self.want_normal else depth

        with self.on_device(modules):
            return (self.each(image, resolution, detect),)


class MiDaSDepthMapPreprocessor(_MidasPreprocessor, display_name="MiDaS Depth Map"):
    """Depth (near = bright) by MiDaS DPT-Hybrid
    (models/annotators/dpt_hybrid-midas-501f0c75.pt)."""
    class_type = "MiDaS-DepthMapPreprocessor"


class MiDaSNormalMapPreprocessor(_MidasPreprocessor, display_name="MiDaS Normal Map"):
    """Normals from MiDaS depth (models/annotators/dpt_hybrid-midas-501f0c75.pt)."""
    class_type = "MiDaS-NormalMapPreprocessor"
    want_normal = True


class BAENormalMapPreprocessor(_AuxNetwork, category=NORMAL_DEPTH, display_name="BAE Normal Map"):
    """Surface normals by NormalBae (models/annotators/scannet.pt)."""
    class_type = "BAE-NormalMapPreprocessor"
    aux_key = "normal_bae"


class DepthAnythingPreprocessor(_Preprocessor, category=NORMAL_DEPTH, display_name="Depth Anything"):
    """Relative depth (near = bright) by Depth Anything (models/annotators/<ckpt_name>)."""
    files = ("depth_anything_vitl14.pth", "depth_anything_vitb14.pth", "depth_anything_vits14.pth")
    inputs = _inputs(ckpt_name=Combo(list(files), default=files[0]))

    def run(self, image, ckpt_name, resolution=512):
        detector, modules = self.annotator(ckpt_name)
        with self.on_device(modules):
            return (self.each(image, resolution, detector, pad=False),)


class DepthAnythingV2Preprocessor(DepthAnythingPreprocessor, display_name="Depth Anything V2"):
    """Relative depth (near = bright) by Depth Anything V2 (models/annotators/<ckpt_name>)."""
    files = ("depth_anything_v2_vitl.pth", "depth_anything_v2_vitb.pth", "depth_anything_v2_vits.pth")
    inputs = _inputs(ckpt_name=Combo(list(files), default=files[0]))


NODES = [Canny, CannyEdgePreprocessor, ShufflePreprocessor, LineartStandardPreprocessor,
         TilePreprocessor, ImageBlur, MediaPipeOpenPosePreprocessor, MediaPipeFaceMeshPreprocessor,
         MediaPipeMask, OpenposePreprocessor, HEDPreprocessor, FakeScribblePreprocessor,
         PiDiNetPreprocessor, LineArtPreprocessor, AnimeLineArtPreprocessor, MLSDPreprocessor,
         MiDaSDepthMapPreprocessor, MiDaSNormalMapPreprocessor, BAENormalMapPreprocessor,
         DepthAnythingPreprocessor, DepthAnythingV2Preprocessor]

"""Face detection on a real photo with shipped weights, alignment, restoration and paste-back.

The photo is scikit-image's astronaut (512², one face). Restoration models are GFPGAN- and
CodeFormer-shaped with random weights (no real weights can be had here): the tests check that
the model is run on the aligned face and that only the face region of the image changes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from loom.nodeapi import RunContext
from loom.runtime.faces.align import TEMPLATE_512, align_matrix, face_mask, paste_back, warp_face
from loom.runtime.faces.detect import detect_faces
from loom.runtime.faces.restore import restore_faces
from loom.runtime.model_manager import ModelManager
from loom.runtime.sd.reader import ModelFileError
from loom.runtime.upscale.model import ImageModel, load_image_model
from nodes import face_restore as fr

skimage_data = pytest.importorskip("skimage.data")
pytest.importorskip("facenet_pytorch")
pytest.importorskip("mediapipe")

# Where the face is (pixels of the 512² photo), measured once with both detectors; the
# MediaPipe figures agree with the published measurement (x 0.339, y 0.132, w 0.203, h 0.203).
ASTRONAUT_FACE = {"mtcnn": (181, 62, 268, 172), "mediapipe": (174, 68, 278, 172)}


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage_data.astronaut()


def _box_close(got, want, tol=8):
    return all(abs(g - w) <= tol for g, w in zip(got, want, strict=True))


@pytest.mark.parametrize("detector", ["mtcnn", "mediapipe"])
def test_detector_finds_the_astronauts_face(astronaut, detector):
    faces = detect_faces(astronaut, detector, threshold=0.5)
    assert len(faces) == 1
    face = faces[0]
    assert _box_close(face.box, ASTRONAUT_FACE[detector]), face.box
    left_eye, right_eye, nose, mouth_l, mouth_r = face.landmarks
    x0, y0, x1, y1 = face.box
    assert left_eye[0] < nose[0] < right_eye[0]  # image left to right
    assert left_eye[1] < nose[1] < (mouth_l[1] + mouth_r[1]) / 2  # top to bottom
    assert all(x0 - 5 <= p[0] <= x1 + 5 and y0 - 5 <= p[1] <= y1 + 5 for p in face.landmarks)


def test_no_face_in_a_plain_picture():
    plain = np.full((256, 256, 3), 120, np.uint8)
    assert detect_faces(plain, "mtcnn") == []
    assert detect_faces(plain, "mediapipe") == []
    with pytest.raises(ValueError, match="unknown face detector"):
        detect_faces(plain, "yolo")


@pytest.mark.slow
def test_largest_only_picks_the_bigger_face(astronaut):
    import cv2

    small = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    canvas = np.full((512, 768, 3), 128, np.uint8)
    canvas[:, :512] = astronaut
    canvas[128:384, 512:] = small
    both = detect_faces(canvas, "mtcnn", threshold=0.8)
    assert len(both) == 2
    (largest,) = detect_faces(canvas, "mtcnn", threshold=0.8, largest_only=True)
    assert largest.box[0] < 512 and largest.area == max(f.area for f in both)


def test_alignment_puts_the_landmarks_on_the_template(astronaut):
    face = detect_faces(astronaut, "mtcnn")[0]
    m = align_matrix(face.landmarks)
    moved = face.landmarks @ m[:, :2].T + m[:, 2]
    # A similarity transform cannot fit five points exactly; eyes land within a few pixels.
    assert np.abs(moved[:2] - TEMPLATE_512[:2]).max() < 12
    assert np.abs(moved - TEMPLATE_512).mean() < 10
    crop = warp_face(astronaut.astype(np.float32) / 255, m)
    assert crop.shape == (512, 512, 3)


def test_paste_back_changes_only_the_face_region(astronaut):
    img = astronaut.astype(np.float32) / 255
    face = detect_faces(astronaut, "mtcnn")[0]
    m = align_matrix(face.landmarks)
    # Pasting the unchanged crop back gives the image back (up to two resamplings) ...
    same = paste_back(img, warp_face(img, m), m)
    mask = face_mask(m, img.shape[:2])
    inside = mask > 0.99
    assert np.abs(same - img)[inside].mean() < 0.03
    # ... and a white face changes pixels only where the mask is > 0, all of them near the face.
    white = paste_back(img, np.ones((512, 512, 3), np.float32), m)
    changed = np.abs(white - img).sum(-1) > 0
    assert changed.any() and not changed[mask == 0].any()
    ys, xs = np.nonzero(changed)
    x0, y0, x1, y1 = face.box
    w, h = x1 - x0, y1 - y0
    assert xs.min() > x0 - 1.5 * w and xs.max() < x1 + 1.5 * w
    assert ys.min() > y0 - 1.5 * h and ys.max() < y1 + 1.5 * h
    assert np.array_equal(white[:10], img[:10]) and np.array_equal(white[-60:], img[-60:])


# -- restoration models (random weights) ------------------------------------------------------------

def _descriptor(arch: str):
    import spandrel

    torch.manual_seed(0)
    if arch == "GFPGAN":
        from spandrel.architectures.GFPGAN import GFPGAN

        module = GFPGAN()
    else:
        import spandrel_extra_arches  # noqa: F401
        from spandrel_extra_arches.architectures.CodeFormer import CodeFormer

        module = CodeFormer()
    from loom.runtime.upscale.model import _loader

    _loader()  # registers the extra architectures
    return spandrel.ModelLoader().load_from_state_dict(module.state_dict())


@pytest.fixture(scope="module", params=["GFPGAN", "CodeFormer"])
def face_model(request) -> ImageModel:
    desc = _descriptor(request.param)
    desc.model.eval().requires_grad_(False)
    return ImageModel(desc, request.param)


@pytest.mark.slow
def test_restore_changes_the_face_and_nothing_far_from_it(astronaut, face_model):
    img = torch.from_numpy(astronaut).float().div(255)[None]
    calls = []
    module = face_model.module
    hook = module.register_forward_hook(lambda _m, inp, _o: calls.append(tuple(inp[0].shape)))
    try:
        out, count = restore_faces(face_model, img, ModelManager(), detector="mtcnn",
                                   fidelity=0.7)
    finally:
        hook.remove()
    assert count == 1 and calls == [(1, 3, 512, 512)]
    diff = (out - img).abs().sum(-1)[0]
    assert float(diff[62:172, 181:268].mean()) > 0.05  # the face was replaced
    x0, y0, x1, y1 = ASTRONAUT_FACE["mtcnn"]
    far = torch.ones_like(diff, dtype=torch.bool)
    far[max(0, y0 - 120):y1 + 120, max(0, x0 - 120):x1 + 120] = False
    assert float(diff[far].max()) == 0.0
    assert out.shape == img.shape and out.dtype == img.dtype


def test_no_face_means_the_image_is_unchanged(face_model):
    plain = torch.full((2, 128, 160, 3), 0.4)
    out, count = restore_faces(face_model, plain, ModelManager())
    assert count == 0 and torch.equal(out, plain)


# -- nodes and files --------------------------------------------------------------------------------

@pytest.mark.slow
def test_loader_reads_a_gfpgan_file_and_refuses_an_upscaler(folders):
    desc = _descriptor("GFPGAN")
    path = folders.model_folder("facerestore_models") / "GFPGANv1.4.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.half().contiguous() for k, v in desc.model.state_dict().items()}, str(path))
    ctx = RunContext(paths=folders, models=ModelManager())
    (model,) = fr.FaceRestoreModelLoader(ctx).run("GFPGANv1.4.safetensors")
    assert (model.architecture, model.purpose) == ("GFPGAN", "FaceSR")

    from tests.test_upscale import compact_sd

    save_file(compact_sd(), str(path.with_name("x4.safetensors")))
    with pytest.raises(ModelFileError, match="not a face restoration model"):
        fr.FaceRestoreModelLoader(ctx).run("x4.safetensors")
    with pytest.raises(FileNotFoundError, match="facerestore_models"):
        fr.FaceRestoreModelLoader(ctx).run("codeformer.pth")


def test_missing_model_message_names_files_and_folder(folders):
    inp = fr.FaceRestoreModelLoader.inputs["model_name"]
    inp.name = inp.name or "model_name"
    msg = inp.not_in_list_message("GFPGANv1.4.pth", [], RunContext(paths=folders))
    assert "facerestore_models" in msg and "GFPGANv1.4.pth" in msg
    assert "codeformer.pth" in fr.FaceRestoreModelLoader.description


@pytest.mark.slow
def test_face_detect_node_gives_mask_and_crops(astronaut):
    img = torch.from_numpy(np.concatenate([astronaut[None], astronaut[None, :, ::-1]])).float() / 255
    mask, crops, count = fr.FaceDetect(RunContext()).run(img, "mtcnn", 0.9, "all", 0.25, 0, 128)
    assert count == 2 and crops.shape == (2, 128, 128, 3)
    assert mask.shape == (2, 512, 512)
    x0, y0, x1, y1 = ASTRONAUT_FACE["mtcnn"]
    assert float(mask[0, (y0 + y1) // 2, (x0 + x1) // 2]) == 1.0
    assert float(mask[0, 500, 10]) == 0.0
    # The mirrored image has its face mirrored.
    assert float(mask[1, (y0 + y1) // 2, 511 - (x0 + x1) // 2]) == 1.0
    soft, _, _ = fr.FaceDetect(RunContext()).run(img[:1], "mtcnn", 0.9, "all", 0.25, 8, 128)
    edge = soft[0][(soft[0] > 0) & (soft[0] < 1)]
    assert edge.numel() > 0  # feathered
    empty_mask, empty_crops, none = fr.FaceDetect(RunContext()).run(
        torch.full((1, 64, 64, 3), 0.5), "mtcnn", 0.9, "all", 0.25, 8, 64)
    assert none == 0 and float(empty_mask.max()) == 0.0 and empty_crops.shape == (1, 64, 64, 3)


@pytest.fixture(scope="module")
def light_face_model() -> ImageModel:
    """A small random network (spandrel's Compact at ×1) in the face model's place: what the node
    does around the model (detect, align, paste back) costs the same, the model almost nothing.
    The real GFPGAN and CodeFormer architectures run in the tests above."""
    import spandrel

    from tests.test_upscale import compact_sd

    desc = spandrel.ModelLoader().load_from_state_dict(compact_sd(scale=1))
    desc.model.eval().requires_grad_(False)
    return ImageModel(desc, "light-face")


def test_restore_node_second_run_with_other_settings(astronaut, light_face_model):
    img = torch.from_numpy(astronaut).float().div(255)[None]
    node = fr.FaceRestoreWithModel(RunContext(models=ModelManager()))
    face_model = light_face_model
    (a,) = node.run(face_model, img, "mtcnn", 0.5, 0.9, "all")
    (b,) = node.run(face_model, img, "mediapipe", 0.5, 0.5, "largest")
    (c,) = node.run(face_model, img, "mtcnn", 0.5, 0.9, "all")
    assert torch.equal(a, c) and not torch.equal(a, b)


def test_load_image_model_rejects_non_image_models(tmp_path):
    path = tmp_path / "x.safetensors"
    save_file({"weird.weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(ModelFileError):
        load_image_model(path, purposes=("FaceSR",), what="face restoration model")


# -- RetinaFace (facexlib) with the user's weight files ---------------------------------------------

def _retinaface_state(network: str) -> dict:
    from facexlib.detection.retinaface import RetinaFace

    torch.manual_seed(0)
    net = RetinaFace(network_name=network, half=False, device=torch.device("cpu"))
    # The released files were saved from a DataParallel model: "module." before every key.
    return {"module." + k: v for k, v in net.state_dict().items()}


def test_retinaface_needs_its_file_and_names_it(tmp_path):
    pytest.importorskip("facexlib")
    plain = np.full((64, 64, 3), 100, np.uint8)
    with pytest.raises(FileNotFoundError, match=r"detection_mobilenet0\.25_Final\.pth.*facedetection"):
        detect_faces(plain, "retinaface_mobile0.25", models_folder=tmp_path / "facedetection")
    with pytest.raises(FileNotFoundError, match="Loom downloads nothing"):
        detect_faces(plain, "retinaface_resnet50")


def test_retinaface_loads_the_usual_files_and_gives_faces_in_loom_form(tmp_path):
    pytest.importorskip("facexlib")
    from loom.runtime.faces import detect as detect_mod

    folder = tmp_path / "facedetection"
    folder.mkdir()
    torch.save(_retinaface_state("mobile0.25"), folder / "detection_mobilenet0.25_Final.pth")
    # Random weights "find" faces anywhere (real detection needs the real file): a tiny image
    # keeps that quick; what is checked is the conversion to Loom's Face.
    img = (np.random.default_rng(0).random((80, 96, 3)) * 255).astype(np.uint8)
    faces = detect_faces(img, "retinaface_mobile0.25", threshold=0.0, models_folder=folder)
    assert faces, "random weights at threshold 0 report candidates"
    for face in faces:
        x0, y0, x1, y1 = face.box
        assert 0 <= x0 <= x1 <= 96 and 0 <= y0 <= y1 <= 80
        assert face.landmarks.shape == (5, 2) and 0.0 <= face.score <= 1.0
    assert [f.area for f in faces] == sorted((f.area for f in faces), reverse=True)
    model = detect_mod._retinaface("retinaface_mobile0.25", folder)
    assert detect_mod._retinaface("retinaface_mobile0.25", folder) is model  # loaded once
    # The other network's name on this file: a clear error, not a half-loaded model.
    torch.save(_retinaface_state("mobile0.25"), folder / "detection_Resnet50_Final.pth")
    with pytest.raises(ModelFileError, match="not a RetinaFace resnet50"):
        detect_faces(img, "retinaface_resnet50", models_folder=folder)

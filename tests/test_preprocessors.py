"""Preprocessor nodes: weights-free ones on real photos against controlnet-aux / scipy references,
the MediaPipe pose skeleton on scikit-image's astronaut (it lies on her), and every network
annotator on random-weight files written under their usual names (shape, range, the named error
for a missing file, and no network or download call on the way)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from annotator_fixtures import write_random_annotator
from scipy import ndimage
from skimage import data

from loom.nodeapi import RunContext
from loom.paths import Folders
from loom.runtime.annotators import models
from loom.runtime.annotators.files import AnnotatorMissing
from nodes import preprocessors as pp


def _image(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(arr.astype(np.float32) / 255.0)[None]


@pytest.fixture(scope="module")
def astronaut():
    return _image(data.astronaut())  # 512 x 512, a person and a face


def _u8(image: torch.Tensor) -> np.ndarray:
    return (image[0].numpy() * 255).round().astype(np.uint8)


# -- weights-free -----------------------------------------------------------------------------------


def test_canny_edge_preprocessor_matches_controlnet_aux(astronaut):
    from controlnet_aux import CannyDetector

    (out,) = pp.CannyEdgePreprocessor().run(astronaut, 80, 160, resolution=512)
    ref = CannyDetector()(data.astronaut(), 80, 160, detect_resolution=512, image_resolution=512,
                          output_type="np")
    assert out.shape == (1, 512, 512, 3) and np.array_equal(_u8(out), ref)
    # another resolution and a non-square image: short side = resolution, aspect kept
    (small,) = pp.CannyEdgePreprocessor().run(astronaut[:, :300, :200], 80, 160, resolution=128)
    assert small.shape == (1, 192, 128, 3) and set(small.unique().tolist()) <= {0.0, 1.0}


def test_canny_core_node_thresholds(astronaut):
    counts = [int(pp.Canny().run(astronaut, lo, hi)[0][..., 0].sum()) for lo, hi in
              [(0.1, 0.2), (0.4, 0.8), (0.7, 0.95)]]
    assert counts[0] > counts[1] > counts[2] > 0  # higher thresholds: fewer edges
    (out,) = pp.Canny().run(astronaut, 0.4, 0.8)
    assert out.shape == astronaut.shape and set(out.unique().tolist()) <= {0.0, 1.0}


def test_lineart_standard_matches_controlnet_aux(astronaut):
    from controlnet_aux.lineart_standard import LineartStandardDetector

    (out,) = pp.LineartStandardPreprocessor().run(astronaut, 6.0, 8, resolution=512)
    ref = LineartStandardDetector()(data.astronaut(), 6.0, 8, detect_resolution=512,
                                    output_type="np")
    assert np.array_equal(_u8(out), ref)
    (other,) = pp.LineartStandardPreprocessor().run(astronaut, 2.0, 8, resolution=256)
    assert other.shape == (1, 256, 256, 3) and 0.01 < other.mean() < 0.5


def test_shuffle_is_seeded_and_keeps_the_colours(astronaut):
    (a,) = pp.ShufflePreprocessor().run(astronaut, resolution=256, seed=1)
    (b,) = pp.ShufflePreprocessor().run(astronaut, resolution=256, seed=1)
    (c,) = pp.ShufflePreprocessor().run(astronaut, resolution=256, seed=2)
    assert a.shape == (1, 256, 256, 3) and torch.equal(a, b) and not torch.equal(a, c)
    small = torch.nn.functional.interpolate(astronaut.movedim(-1, 1), size=(256, 256),
                                            mode="area").movedim(1, -1)
    assert (a - small).abs().mean() > 0.1  # shuffled …
    colours = {tuple(v) for v in (_u8(small).reshape(-1, 3) // 32).tolist()}
    mine = [tuple(v) for v in (_u8(a).reshape(-1, 3) // 32).tolist()]
    assert np.mean([v in colours for v in mine]) > 0.9  # … from the image's own colours


def test_tile_blurs(astronaut):
    (out,) = pp.TilePreprocessor().run(astronaut, pyrUp_iters=3, resolution=512)
    assert out.shape == astronaut.shape

    def detail(x):
        return (x[:, 1:] - x[:, :-1]).abs().mean()

    assert detail(out) < 0.5 * detail(astronaut)
    assert (out.mean() - astronaut.mean()).abs() < 0.02


def test_image_blur_matches_scipy(astronaut):
    (out,) = pp.ImageBlur().run(astronaut, blur_radius=4, sigma=2.0)
    ref = ndimage.gaussian_filter(astronaut[0].numpy(), sigma=(2.0, 2.0, 0), radius=(4, 4, 0),
                                  mode="mirror")
    assert np.allclose(out[0].numpy(), ref, atol=1e-5)


# -- MediaPipe ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def face_box():
    """The astronaut's face found by another model (MTCNN, facenet-pytorch's weights)."""
    from loom.runtime.faces.detect import detect_faces

    (face,) = detect_faces(data.astronaut(), "mtcnn", 0.9)
    return face.box


def test_mediapipe_pose_skeleton_lies_on_the_astronaut(astronaut, face_box):
    image, keypoints = pp.MediaPipeOpenPosePreprocessor().run(astronaut, resolution=512)
    assert image.shape == (1, 512, 512, 3)
    (person,) = keypoints[0]["people"]
    body = np.array(person["pose_keypoints_2d"]).reshape(18, 3)
    x0, y0, x1, y1 = face_box
    nose, neck, r_shoulder, l_shoulder = body[0], body[1], body[2], body[5]
    assert x0 <= nose[0] <= x1 and y0 <= nose[1] <= y1 and nose[2] == 1.0
    for eye in (body[14], body[15]):
        assert x0 <= eye[0] <= x1 and y0 <= eye[1] <= y1
    # shoulders below the face, on either side of it, inside her silhouette
    (silhouette,) = pp.MediaPipeMask().run(astronaut, target="person", threshold=0.5)
    for shoulder in (r_shoulder, l_shoulder, neck):
        assert shoulder[1] > y1 and silhouette[0, int(shoulder[1]), int(shoulder[0])] > 0.5
    assert r_shoulder[0] < nose[0] < l_shoulder[0]  # her right shoulder is on the image's left
    # the drawing: OpenPose colours at the joints, most drawn pixels on her
    pixels = _u8(image)
    drawn = pixels.max(axis=-1) > 0
    grown = ndimage.binary_dilation(silhouette[0].numpy() > 0.5, iterations=8)
    assert drawn.sum() > 500 and (drawn & grown).sum() / drawn.sum() > 0.9
    face = np.array(person["face_keypoints_2d"]).reshape(70, 3)
    inside = (face[:, 0] >= x0 - 10) & (face[:, 0] <= x1 + 10) & (face[:, 1] >= y0 - 10) & (
        face[:, 1] <= y1 + 10)
    assert inside.mean() > 0.9
    # second run: no face, smaller resolution
    image2, kp2 = pp.MediaPipeOpenPosePreprocessor().run(astronaut, detect_face="disable",
                                                          resolution=256)
    assert image2.shape == (1, 256, 256, 3) and kp2[0]["people"][0]["face_keypoints_2d"] is None
    assert tuple(_u8(image2)[int(nose[1] / 2), int(nose[0] / 2)]) == (255, 0, 0)  # nose: red
    white = (_u8(image2) == 255).all(axis=-1).sum()
    white_with_face = (_u8(image) == 255).all(axis=-1).sum()
    assert white < white_with_face


def test_mediapipe_pose_without_a_person_draws_nothing():
    image, keypoints = pp.MediaPipeOpenPosePreprocessor().run(_image(data.coffee()), resolution=256)
    assert image.max() == 0 and keypoints[0]["people"] == []


def test_mediapipe_masks_and_face_mesh(astronaut, face_box):
    x0, y0, x1, y1 = (int(v) for v in face_box)
    (face,) = pp.MediaPipeMask().run(astronaut, target="face", threshold=0.5)
    assert face.shape == (1, 512, 512)
    inside = face[0, y0:y1, x0:x1].sum() / face[0].sum()
    assert face[0].sum() > 0.3 * (x1 - x0) * (y1 - y0) and inside > 0.8
    (person,) = pp.MediaPipeMask().run(astronaut, target="person", threshold=0.5)
    assert person[0, (y0 + y1) // 2, (x0 + x1) // 2] > 0.5 and 0.2 < person.mean() < 0.9
    (mesh,) = pp.MediaPipeFaceMeshPreprocessor().run(astronaut, max_faces=1, min_confidence=0.5,
                                                     resolution=512)
    drawn = _u8(mesh).max(axis=-1) > 0
    near = drawn[y0 - 20:y1 + 20, x0 - 20:x1 + 20].sum()  # MTCNN's box is tight: some margin
    assert drawn.sum() > 200 and near / drawn.sum() > 0.95


# -- network annotators on random weights -----------------------------------------------------------

CASES = [  # node, inputs, the annotator files it reads
    (pp.OpenposePreprocessor, {}, ["openpose_body", "openpose_hand", "openpose_face"]),
    (pp.HEDPreprocessor, {"safe": "enable"}, ["hed"]),
    (pp.FakeScribblePreprocessor, {"safe": "disable"}, ["hed"]),
    (pp.PiDiNetPreprocessor, {"safe": "disable"}, ["pidinet"]),
    (pp.LineArtPreprocessor, {"coarse": "disable"}, ["lineart"]),
    (pp.LineArtPreprocessor, {"coarse": "enable"}, ["lineart_coarse"]),
    (pp.AnimeLineArtPreprocessor, {}, ["lineart_anime"]),
    (pp.MLSDPreprocessor, {"score_threshold": 0.1, "dist_threshold": 0.1}, ["mlsd"]),
    (pp.MiDaSDepthMapPreprocessor, {}, ["midas"]),
    (pp.MiDaSNormalMapPreprocessor, {}, ["midas"]),
    (pp.BAENormalMapPreprocessor, {}, ["normal_bae"]),
    (pp.DepthAnythingPreprocessor, {"ckpt_name": "depth_anything_vits14.pth"},
     ["depth_anything_vits14.pth"]),
    (pp.DepthAnythingV2Preprocessor, {"ckpt_name": "depth_anything_v2_vits.pth"},
     ["depth_anything_v2_vits.pth"]),
]


@pytest.fixture
def no_downloads(monkeypatch):
    """Every way the annotator code could fetch weights fails loudly and is recorded."""
    import urllib.request

    import huggingface_hub

    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError(f"download attempted: {args!r}")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    import importlib

    for name in ("hed", "pidi", "lineart", "lineart_anime", "mlsd", "midas", "normalbae",
                 "open_pose"):  # the names controlnet-aux's from_pretrained calls
        module = importlib.import_module(f"controlnet_aux.{name}")
        monkeypatch.setattr(module, "hf_hub_download", refuse, raising=False)
    models.clear_cache()
    yield calls
    models.clear_cache()


@pytest.fixture(scope="module")
def annotator_folders(tmp_path_factory):
    folders = Folders.under(tmp_path_factory.mktemp("annotators"))
    folders.create()
    for key in sorted({k for _, _, keys in CASES for k in keys}):
        write_random_annotator(folders.model_folder("annotators"), key, seed=1)
    return folders


@pytest.mark.parametrize(("node", "kwargs", "keys"), CASES,
                         ids=[f"{c[0].__name__}-{'-'.join(map(str, c[1].values()))}" for c in CASES])
def test_network_annotator_on_random_weights(node, kwargs, keys, annotator_folders, no_downloads):
    torch.manual_seed(0)
    image = _image(data.astronaut()[:320:2, :256:2])  # 160 x 128: short side 128 -> 160 x 128
    outputs = node(RunContext(paths=annotator_folders)).run(image=image, resolution=128, **kwargs)
    out = outputs[0]
    assert out.shape == (1, 160, 128, 3) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
    if node is pp.OpenposePreprocessor:
        assert outputs[1][0]["canvas_height"] == 160 and outputs[1][0]["canvas_width"] == 128
    # second run, another resolution (the cached network is reused)
    again = node(RunContext(paths=annotator_folders)).run(image=image, resolution=64, **kwargs)[0]
    assert again.shape == (1, 80, 64, 3)
    assert no_downloads == []
    if node is pp.DepthAnythingPreprocessor:  # a depth map: one grey channel, full 0..1 range
        assert torch.equal(out[..., 0], out[..., 2]) and out.min() == 0 and out.max() == 1


def test_depth_anything_key_names_round_trip():
    from annotator_fixtures import depth_anything_original, random_state_dict

    from loom.runtime.annotators.depth_anything import to_transformers

    sd = random_state_dict("depth_anything_v2_vitb.pth")
    original = depth_anything_original(sd)
    assert {k.split(".")[0] for k in original} == {"pretrained", "depth_head"}
    assert "pretrained.blocks.11.attn.qkv.weight" in original
    back = to_transformers(original)
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)


@pytest.mark.parametrize(("node", "kwargs", "keys"), CASES[:1] + CASES[4:5] + CASES[8:9] + CASES[-1:])
def test_missing_annotator_file_is_named_and_nothing_is_fetched(node, kwargs, keys, tmp_path,
                                                                no_downloads):
    folders = Folders.under(tmp_path)
    folders.create()
    filename = models.SPECS[keys[0]].filename
    with pytest.raises(AnnotatorMissing) as err:
        node(RunContext(paths=folders)).run(image=torch.rand(1, 64, 64, 3), resolution=64, **kwargs)
    message = str(err.value)
    assert filename in message and "models/annotators/" in message
    assert str(folders.model_folder("annotators")) in message
    assert no_downloads == []


def test_annotator_found_in_a_subfolder_and_wrong_weights_explained(tmp_path, no_downloads):
    folders = Folders.under(tmp_path)
    folders.create()
    sub = folders.model_folder("annotators") / "lllyasviel" / "Annotators"
    write_random_annotator(sub, "mlsd")
    (out,) = pp.MLSDPreprocessor(RunContext(paths=folders)).run(torch.rand(1, 64, 64, 3),
                                                                 resolution=64)
    assert out.shape == (1, 64, 64, 3)
    torch.save({"not": torch.zeros(3)}, folders.model_folder("annotators") / "ControlNetHED.pth")
    with pytest.raises(ValueError, match="ControlNetHED.pth does not hold the weights"):
        pp.HEDPreprocessor(RunContext(paths=folders)).run(torch.rand(1, 64, 64, 3), resolution=64)


def test_the_memory_estimate_follows_the_resolution():
    est = pp.CannyEdgePreprocessor.allocation(None, image=(2, 300, 200, 3), resolution=128)
    assert est.shapes == ((2, 192, 128, 3),) and est.inputs == ("resolution",)
    est = pp.OpenposePreprocessor.allocation(None, image=None, resolution=1024)
    assert est.shapes == ((1, 1024, 1024, 3), None)


# -- over HTTP ----------------------------------------------------------------------------------------


def test_preprocessors_over_http(loom_server_factory):
    """A graph from LoadImage through the MediaPipe skeleton and a mask node to SaveImage runs;
    a preprocessor whose annotator file is missing fails its prompt with the named error (not a
    server error), and a bad choice is a validation error."""
    from PIL import Image

    server = loom_server_factory(builtin=True)
    Image.fromarray(data.astronaut()[::2, ::2]).save(server.settings.folders.input_dir / "a.png")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
        "2": {"class_type": "MediaPipeOpenPosePreprocessor",
              "inputs": {"image": ["1", 0], "detect_hand": "enable", "detect_body": "enable",
                         "detect_face": "disable", "resolution": 256}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "pose"}},
        "4": {"class_type": "MediaPipeMask", "inputs": {"image": ["1", 0], "target": "person",
                                                        "threshold": 0.5, "max_faces": 1}},
        "5": {"class_type": "MaskToImage", "inputs": {"mask": ["4", 0]}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "mask"}},
    }
    entry = server.wait_history(server.queue_prompt(prompt), timeout=120)
    assert entry["status"]["status_str"] == "success", entry["status"]
    [pose] = entry["outputs"]["3"]["images"]
    with Image.open(server.settings.folders.output_dir / pose["filename"]) as png:
        assert png.size == (256, 256) and max(png.getextrema()[0]) == 255  # something drawn
    missing = {
        "1": prompt["1"],
        "2": {"class_type": "HEDPreprocessor", "inputs": {"image": ["1", 0], "safe": "enable",
                                                           "resolution": 128}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "hed"}},
    }
    entry = server.wait_history(server.queue_prompt(missing), timeout=60)
    assert entry["status"]["status_str"] == "error"
    kind, error = entry["status"]["messages"][-1]
    assert kind == "execution_error" and error["node_type"] == "HEDPreprocessor"
    assert "ControlNetHED.pth" in error["exception_message"]
    assert "models/annotators/" in error["exception_message"]
    bad = {**missing, "2": {**missing["2"], "inputs": {**missing["2"]["inputs"], "safe": "maybe"}}}
    r = server.post("/prompt", json={"prompt": bad})
    assert r.status == 400 and "2" in r.json()["node_errors"]

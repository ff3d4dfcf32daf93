"""Workflow templates: Loom's own (``workflow_templates/``, served at ``/templates/``) and the
ones node packs ship (``/workflow_templates``). Every template converts, validates and runs on
the tiny SD 1.x checkpoint (and a tiny LoRA) under the file names the templates use."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import pytest
import torch
from control_fixtures import save_controlnet, tiny_controlnet
from PIL import Image
from safetensors.torch import save_file
from sd_fixtures import sd_cpu_only, sd_files, tiny_pipeline  # noqa: F401  (fixtures)
from test_sd_lora import make_lora

from loom.config import REPO_ROOT
from tests.server_fixture import LoomTestServer
from tests.test_upscale import compact_sd

TEMPLATES = REPO_ROOT / "workflow_templates"
CKPT = "v1-5-pruned-emaonly.safetensors"
DEMO = "loom-demo-shapes.safetensors"
LORA = "example_lora.safetensors"


def _index() -> list[dict]:
    return json.loads((TEMPLATES / "index.json").read_text())


def _names() -> list[str]:
    return [t["name"] for category in _index() for t in category["templates"]]


def test_index_lists_every_template_file_in_the_front_end_shape(loom_server_shared):
    index = loom_server_shared.get("/templates/index.json").json()
    assert index == _index()
    for category in index:
        assert category["moduleName"] == "default" and category["title"]
        for t in category["templates"]:
            assert {"name", "title", "description", "mediaType", "mediaSubtype"} <= set(t)
            assert t["mediaType"] == "image"
    files = {p.stem for p in TEMPLATES.glob("*.json")} - {"index"}
    assert sorted(files) == sorted(_names())
    assert {"txt2img", "img2img", "hires_fix", "inpaint", "lora"} <= files
    # Other languages get the same (English) index; no provider logos.
    assert loom_server_shared.get("/templates/index.fr.json").json() == index
    assert loom_server_shared.get("/api/templates/index.zh-TW.json").json() == index
    assert loom_server_shared.get("/templates/index_logo.json").json() == {}


def test_template_workflows_and_thumbnails_are_served(loom_server_shared):
    for name in _names():
        r = loom_server_shared.get(f"/templates/{name}.json")
        assert r.status == 200 and r.headers["Content-Type"].startswith("application/json")
        assert r.json() == json.loads((TEMPLATES / f"{name}.json").read_text())
        assert r.json()["version"] == 0.4
        thumb = loom_server_shared.get(f"/templates/{name}-1.svg")
        assert thumb.status == 200 and thumb.headers["Content-Type"].startswith("image/svg+xml")
        assert thumb.text.startswith("<svg")
        nodes = r.json()["nodes"]
        if len(nodes) <= 8:
            assert "KSampler" in thumb.text
        else:  # the first 8 nodes in execution order, then how many more
            assert f"+{len(nodes) - 8} more" in thumb.text
    title = next(t["title"] for c in _index() for t in c["templates"] if t["name"] == "hires_fix")
    assert title in loom_server_shared.get("/templates/hires_fix-1.svg").text


@pytest.mark.parametrize("path", [
    "/templates/nope.json", "/templates/nope-1.svg", "/templates/..%2Fmain.py",
    "/templates/%2E%2E%2Fconfig.py", "/templates/.hidden.json", "/templates/README.md",
    "/templates/input%2Fexample.png", "/templates/index.xx-toolongvalue.json",
])
def test_unknown_or_unsafe_template_files_are_404(loom_server_shared, path):
    r = loom_server_shared.get(path)
    assert r.status == 404, path
    assert r.json()["error"]["type"] == "not_found"


def test_thumbnail_escapes_titles(tmp_path, loom_server_factory):
    folder = tmp_path / "tpl"
    folder.mkdir()
    (folder / "index.json").write_text(json.dumps([{"moduleName": "default", "title": "T",
        "templates": [{"name": "x", "title": "<script>alert(1)</script>", "description": "",
                       "mediaType": "image", "mediaSubtype": "svg"}]}]))
    (folder / "x.json").write_text(json.dumps({"nodes": [{"id": 1, "type": "A&B", "order": 0}]}))
    server = loom_server_factory(templates_dir=folder)
    svg = server.get("/templates/x-1.svg").text
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "A&amp;B" in svg


def test_serving_a_template_copies_its_sample_inputs_once(loom_server: LoomTestServer):
    input_dir = loom_server.settings.folders.input_dir
    samples = sorted(p.name for p in (TEMPLATES / "input").iterdir())
    assert {"shapes_example.png", "inpaint_example.png"} <= set(samples)
    assert not (input_dir / "shapes_example.png").exists()  # nothing is copied at start-up
    loom_server.get("/templates/txt2img.json")
    assert not (input_dir / "shapes_example.png").exists()  # txt2img loads no image
    loom_server.get("/templates/img2img.json")
    assert ((input_dir / "shapes_example.png").read_bytes()
            == (TEMPLATES / "input/shapes_example.png").read_bytes())
    assert not (input_dir / "inpaint_example.png").exists()
    loom_server.get("/api/templates/inpaint.json")
    with Image.open(input_dir / "inpaint_example.png") as im:
        assert im.mode == "RGBA" and im.getchannel("A").getextrema() == (0, 255)
    # The user's own file of that name is never overwritten.
    mine = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(mine, format="PNG")
    (input_dir / "shapes_example.png").write_bytes(mine.getvalue())
    loom_server.get("/templates/img2img.json")
    assert (input_dir / "shapes_example.png").read_bytes() == mine.getvalue()


def _pack(root: Path, folder: str = "example_workflows") -> Path:
    pack = root / "mypack"
    (pack / folder).mkdir(parents=True)
    (pack / "__init__.py").write_text(
        "from loom.nodeapi import Node\n\n"
        "class PackNode(Node):\n    outputs = ()\n    output_node = True\n\n"
        "    def run(self):\n        return ()\n\nNODES = [PackNode]\n")
    return pack / folder


def test_node_pack_templates(tmp_path, loom_server_factory):
    custom = tmp_path / "custom"
    workflows = _pack(custom)
    (workflows / "My flow.json").write_text('{"nodes": [], "links": []}')
    (workflows / "b.json").write_text('{"nodes": []}')
    (workflows / "My flow.jpg").write_bytes(b"\xff\xd8\xff")
    (workflows / "notes.py").write_text("x = 1")
    (custom / "secret.json").write_text("{}")
    server = loom_server_factory(custom_nodes_dir=custom)
    assert server.get("/api/workflow_templates").json() == {"mypack": ["My flow", "b"]}
    r = server.get("/api/workflow_templates/mypack/My%20flow.json")
    assert r.status == 200 and r.json() == {"nodes": [], "links": []}
    assert server.get("/api/workflow_templates/mypack/My%20flow.jpg").headers[
        "Content-Type"] == "image/jpeg"
    for path in ("mypack/notes.py", "mypack/..%2Fsecret.json", "mypack/%2E%2E%2F__init__.py",
                 "nope/b.json", "mypack/missing.json"):
        r = server.get(f"/api/workflow_templates/{path}")
        assert r.status == 404, path
        assert r.json()["error"]["type"] == "not_found"


def test_without_packs_the_pack_list_is_empty(loom_server_shared):
    assert loom_server_shared.get("/workflow_templates").json() == {}


@pytest.fixture
def sd_server(loom_server_factory, sd_files, tmp_path) -> LoomTestServer:  # noqa: F811
    server = loom_server_factory(builtin=True)
    folders = server.settings.folders
    for name in (CKPT, DEMO):  # the templates set up for the demo model run on the tiny one too
        (folders.model_folder("checkpoints") / name).write_bytes(sd_files("sd1").read_bytes())
    save_file(make_lora(tiny_pipeline("sd1"), "sd1", "kohya"), folders.model_folder("loras") / LORA)
    # The upscale templates: a small random Compact ×4 under the bundled model's name, and a
    # random GFPGAN under the usual face model name (the tiny model draws no face: restoring
    # then leaves the picture as it is, but the model is loaded and detection runs).
    save_file(compact_sd(), folders.model_folder("upscale_models") / "RealESRGAN_x4plus.safetensors")
    face_dir = folders.model_folder("facerestore_models")
    face_dir.mkdir(parents=True, exist_ok=True)
    torch.save(_random_gfpgan_state(), face_dir / "GFPGANv1.4.pth")
    # The ControlNet templates: tiny random ControlNets (they fit the tiny UNet) under the usual
    # Canny and OpenPose file names, in the original single-file layout.
    for i, name in enumerate(("control_v11p_sd15_canny_fp16.safetensors",
                              "control_v11p_sd15_openpose_fp16.safetensors",
                              "loom-demo-shapes-edges.safetensors")):
        save_controlnet(tiny_controlnet("sd1", seed=i + 1), folders.model_folder("controlnet") / name,
                        "original")
    for sample in ("example.png", "inpaint_example.png", "pose_example.jpg", "shapes_example.png"):
        with Image.open(TEMPLATES / "input" / sample) as im:
            im.resize((64, 64)).save(folders.input_dir / sample)
    return server


def _random_gfpgan_state() -> dict:
    from spandrel.architectures.GFPGAN import GFPGAN

    torch.manual_seed(0)
    return {k: v.half() for k, v in GFPGAN().state_dict().items()}


def _small(workflow: dict) -> dict:
    """The template at 64x64 px and 2 steps, so all of them run in seconds."""
    workflow = copy.deepcopy(workflow)
    for node in workflow["nodes"]:
        values = node["widgets_values"]
        if node["type"] == "EmptyLatentImage":
            values[0:2] = [64, 64]
        elif node["type"] == "KSampler":
            values[2] = 2
        elif node["type"] == "InpaintCrop":
            values[3] = 64  # target_size
        elif node["type"] == "ImagePadForOutpaint":
            values[2] = 64  # right
    return workflow


def test_every_template_converts_validates_and_runs(sd_server: LoomTestServer):
    for name in _names():
        workflow = sd_server.get(f"/templates/{name}.json").json()
        r = sd_server.post("/workflow/convert?validate=true", json=workflow)
        assert r.status == 200, (name, r.text)
        prompt = r.json()
        assert {n["class_type"] for n in prompt.values()} >= {"CheckpointLoaderSimple", "KSampler",
                                                              "SaveImage"}
        r = sd_server.post("/prompt", json={"workflow": _small(workflow)})
        assert r.status == 200, (name, r.text)
        entry = sd_server.wait_history(r.json()["prompt_id"], timeout=120)
        assert entry["status"]["status_str"] == "success", (name, entry["status"])
        [image] = [i for out in entry["outputs"].values() for i in out.get("images", [])]
        with Image.open(sd_server.settings.folders.output_dir / image["subfolder"]
                        / image["filename"]) as png:
            assert png.size[0] >= 64

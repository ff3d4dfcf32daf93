"""ComfyUI's own workflows, converted and run by the server: the default workflow of several
front-end versions, the classic image2image, inpaint and outpaint templates, and the SDXL
template (see ``tests/data/workflows/comfyui/README.md`` for where each file comes from).

Each UI workflow goes to ``POST /workflow/queue`` as the file has it, except for sizes and step
counts made small for the tiny checkpoints of ``sd_fixtures`` (written under the file names the
workflows ask for). The default workflow's image must equal the one of the API prompt written
by hand from the values the file holds, so the widget values landed where they belong.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sd_fixtures import sd_cpu_only, sd_files  # noqa: F401  (fixtures)
from server_fixture import LoomTestServer, make_settings

DATA = Path(__file__).parent / "data" / "workflows" / "comfyui"
SD1_NAMES = ("v1-5-pruned-emaonly-fp16.safetensors", "512-inpainting-ema.safetensors")
STEPS = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory, sd_files):  # noqa: F811
    base = tmp_path_factory.mktemp("comfy_workflows")
    srv = LoomTestServer(make_settings(base, builtin=True))
    folders = srv.settings.folders
    ckpts = folders.model_folder("checkpoints")
    ckpts.mkdir(parents=True, exist_ok=True)
    for name in SD1_NAMES:
        (ckpts / name).write_bytes(sd_files("sd1").read_bytes())
    (ckpts / "sd_xl_base_1.0.safetensors").write_bytes(sd_files("sdxl").read_bytes())
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folders.input_dir / "image2image_input_image.jpg")
    Image.fromarray(pixels).save(folders.input_dir / "example.png")
    Image.fromarray(pixels).save(folders.input_dir / "inpaint_model_outpainting_input_image.png")
    rgba = np.dstack([pixels, np.full((80, 96), 255, np.uint8)])
    rgba[20:50, 30:70, 3] = 0  # the hole to inpaint: the mask LoadImage gives
    Image.fromarray(rgba).save(folders.input_dir / "inpaint_example_input_image.png")
    yield srv
    srv.stop()


def load(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def shrink(workflow: dict) -> dict:
    """Small sizes and few steps; every other value as the file has it."""
    wf = copy.deepcopy(workflow)
    for node in wf["nodes"]:
        values = node.get("widgets_values")
        if node["type"] == "EmptyLatentImage":
            values[:2] = [128, 128]
        elif node["type"] == "KSampler":
            assert values[1] in (True, "randomize", "fixed")  # the control value stays
            values[2] = STEPS
        elif node["type"] == "ImageScaleToTotalPixels":
            values[1] = 0.015625  # 128x128 worth of pixels
    return wf


@pytest.mark.parametrize(
    "name",
    ["default.frontend-1.12.8.json", "default.frontend-1.35.9.json", "default.media_image-0.3.52.json"],
)
def test_default_workflow_runs_and_equals_the_api_prompt(server, name):
    workflow = shrink(load(name))
    got = server.saved_image(server.run_workflow(workflow), "9")
    assert got.shape == (128, 128, 3) and got.std() > 0

    by_id = {n["id"]: n for n in workflow["nodes"]}
    seed = by_id[3]["widgets_values"][0]
    prompt = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SD1_NAMES[0]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 1}},
        "6": {
            "class_type": "CLIPTextEncode",
            "inputs": {"text": by_id[6]["widgets_values"][0], "clip": ["4", 1]},
        },
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["4", 1]}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["4", 0],
                "seed": seed,
                "steps": STEPS,
                "cfg": 8.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
                "denoise": 1.0,
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "api"}},
    }
    want = server.saved_image(server.run_prompt(prompt, timeout=240), "9")
    assert np.array_equal(got, want)


def test_image2image_templates_run_and_a_second_run_follows_the_change(server):
    for name in ("image2image.media_image-0.3.1.json", "image2image.templates-0.1.3.json"):
        workflow = shrink(load(name))
        first = server.saved_image(server.run_workflow(workflow), "9")
        assert first.ndim == 3 and first.std() > 0
    # the newer template scales the input to ~128x128 pixels first (ImageScaleToTotalPixels)
    workflow = shrink(load("image2image.media_image-0.3.1.json"))
    first = server.saved_image(server.run_workflow(workflow), "9")
    assert first.shape == (112, 136, 3)  # 140x117 scaled, cut to whole latents by VAEEncode
    ks = next(n for n in workflow["nodes"] if n["type"] == "KSampler")
    ks["widgets_values"][6] = 0.5  # denoise
    second = server.saved_image(server.run_workflow(workflow), "9")
    assert second.shape == first.shape and not np.array_equal(first, second)


def test_inpaint_and_outpaint_templates_run(server):
    inpaint = server.saved_image(server.run_workflow(shrink(load("inpaint_example.media_image-0.3.1.json"))),
                                 "9")
    assert inpaint.shape == (112, 136, 3) and inpaint.std() > 0
    outpaint = shrink(load("inpaint_model_outpainting.media_image-0.3.1.json"))
    out = server.saved_image(server.run_workflow(outpaint), "9")
    # 140x117 pixels padded by 40 left/right, 40 top and 128 bottom, cut to whole latents
    assert out.shape == (280, 216, 3) and out.std() > 0


def test_sdxl_template_runs(server):
    image = server.saved_image(server.run_workflow(shrink(load("image_sdxl_simple.json-0.1.123.json"))), "7")
    assert image.shape == (128, 128, 3) and image.std() > 0

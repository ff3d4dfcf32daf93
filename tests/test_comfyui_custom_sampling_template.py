"""ComfyUI's SDXL-Turbo template (SamplerCustom, KSamplerSelect, SDTurboScheduler) converted and
run by the server on the tiny SDXL checkpoint, under the file name the template asks for. Its
image equals the API prompt written by hand from the file's values, and a second run with
another step count follows the change. (Source of the file: tests/data/workflows/comfyui/README.md.)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sd_fixtures import sd_cpu_only, sd_files  # noqa: F401  (fixtures)

TEMPLATE = (Path(__file__).parent / "data" / "workflows" / "comfyui"
            / "sdxlturbo_example.media_image-0.3.52.json")
CKPT = "sd_xl_turbo_1.0_fp16.safetensors"


def test_sdxl_turbo_template_runs_and_equals_the_api_prompt(loom_server_factory, sd_files):  # noqa: F811
    server = loom_server_factory(builtin=True)
    server.put_model("checkpoints", CKPT, sd_files("sdxl"))

    workflow = json.loads(TEMPLATE.read_text())
    by_type = {n["type"]: n for n in workflow["nodes"]}
    by_type["EmptyLatentImage"]["widgets_values"][:2] = [128, 128]  # small for the tiny model
    assert by_type["SamplerCustom"]["widgets_values"] == [True, 0, "fixed", 1]
    got = server.saved_image(server.run_workflow(workflow), "27")
    assert got.shape == (128, 128, 3) and got.std() > 0

    positive = next(n for n in workflow["nodes"] if n["id"] == 6)["widgets_values"][0]
    prompt = {
        "20": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        "5": {"class_type": "EmptyLatentImage",
              "inputs": {"width": 128, "height": 128, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": positive, "clip": ["20", 1]}},
        "7": {"class_type": "CLIPTextEncode",
              "inputs": {"text": "text, watermark", "clip": ["20", 1]}},
        "14": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler_ancestral"}},
        "22": {"class_type": "SDTurboScheduler",
               "inputs": {"model": ["20", 0], "steps": 1, "denoise": 1.0}},
        "13": {"class_type": "SamplerCustom", "inputs": {
            "model": ["20", 0], "add_noise": True, "noise_seed": 0, "cfg": 1.0,
            "positive": ["6", 0], "negative": ["7", 0], "sampler": ["14", 0],
            "sigmas": ["22", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["13", 0], "vae": ["20", 2]}},
        "27": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "api"}},
    }
    want = server.saved_image(server.run_prompt(prompt, timeout=240), "27")
    assert np.array_equal(got, want)

    # second run: two turbo steps instead of one
    by_type["SDTurboScheduler"]["widgets_values"][0] = 2
    second = server.saved_image(server.run_workflow(workflow), "27")
    assert second.shape == got.shape and not np.array_equal(second, got)

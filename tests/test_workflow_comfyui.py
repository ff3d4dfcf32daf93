"""The converter on real workflows from ComfyUI's packages, and on every widget-value form its
front ends have saved ("control after generate", combo filter lists, upload buttons, forceInput
values, ``widgets_values_named``).

Fixtures: ``tests/data/workflows/comfyui/`` (see its README for sources and licenses). Node
definitions are Loom's own ``/object_info``, so a workflow that converts here also validates.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from loom.config import REPO_ROOT
from loom.engine.validate import validate_prompt
from loom.graph.errors import PromptError
from loom.graph.workflow import convert_workflow
from loom.nodeapi import NodeRegistry, RunContext
from loom.nodeapi.loader import load_packs

DATA = Path(__file__).parent / "data" / "workflows" / "comfyui"


@pytest.fixture(scope="module")
def registry() -> NodeRegistry:
    reg = NodeRegistry()
    load_packs(reg, REPO_ROOT / "nodes", builtin=True)
    return reg


@pytest.fixture(scope="module")
def defs(registry) -> dict:
    return registry.object_info()


def load(name: str) -> dict:
    return copy.deepcopy(json.loads((DATA / name).read_text()))


def sampler_values(prompt: dict, node_id: str) -> tuple:
    i = prompt[node_id]["inputs"]
    return i["seed"], i["steps"], i["cfg"], i["sampler_name"], i["scheduler"], i["denoise"]


# (fixture, KSampler node id, (seed, steps, cfg, sampler, scheduler, denoise)) read off the files
# (the e2e test runs them; here, only what the converter reads)
SD_FIXTURES = [
    ("default.frontend-1.12.8.json", "3", (156680208700286, 20, 8, "euler", "normal", 1)),
    ("default.frontend-1.35.9.json", "3", (156680208700286, 20, 8, "euler", "normal", 1)),
    ("default.media_image-0.3.52.json", "3", (685468484323813, 20, 8, "euler", "normal", 1)),
    ("image2image.media_image-0.3.1.json", "3", (266967097991208, 15, 8, "dpmpp_2m", "normal", 0.87)),
    (
        "image2image.templates-0.1.3.json",
        "3",
        (280823642470253, 20, 8, "dpmpp_2m", "normal", 0.8700000000000001),
    ),
    ("inpaint_example.media_image-0.3.1.json", "3", (808369199502636, 20, 8, "uni_pc_bh2", "normal", 1)),
    (
        "inpaint_model_outpainting.media_image-0.3.1.json",
        "3",
        (476514576444494, 20, 7, "dpmpp_2m", "karras", 1),
    ),
    ("image_sdxl_simple.json-0.1.123.json", "12", (812045847300606, 25, 7, "dpmpp_2m", "karras", 1)),
]


@pytest.mark.parametrize(("name", "node_id", "expected"), SD_FIXTURES)
def test_real_workflows_convert_with_every_widget_in_its_place(name, node_id, expected, defs):
    prompt = convert_workflow(load(name), defs)
    assert sampler_values(prompt, node_id) == expected
    assert not any(n["class_type"] == "MarkdownNote" for n in prompt.values())


def test_classic_templates_nodes_and_values(defs):
    i2i = convert_workflow(load("image2image.media_image-0.3.1.json"), defs)
    assert i2i["18"]["class_type"] == "ImageScaleToTotalPixels"
    assert i2i["18"]["inputs"] == {
        "image": ["10", 0],
        "upscale_method": "nearest-exact",
        "megapixels": 0.5,
        "resolution_steps": 1,
    }
    assert i2i["10"]["inputs"] == {"image": "image2image_input_image.jpg"}  # upload value skipped
    assert i2i["12"]["inputs"] == {"pixels": ["18", 0], "vae": ["14", 2]}
    inpaint = convert_workflow(load("inpaint_example.media_image-0.3.1.json"), defs)
    assert inpaint["26"]["inputs"] == {
        "pixels": ["33", 0],
        "vae": ["29", 2],
        "mask": ["20", 1],
        "grow_mask_by": 6,
    }
    out = convert_workflow(load("inpaint_model_outpainting.media_image-0.3.1.json"), defs)
    assert out["30"]["inputs"] == {
        "image": ["38", 0],
        "left": 40,
        "top": 40,
        "right": 40,
        "bottom": 128,
        "feathering": 10,
    }


# The node types of front end 1.58.1's default (Z-Image Turbo) that Loom does not have, with the
# inputs ComfyUI declares for them: enough to check how that front end's values are read.
ZIMAGE_DEFS = {
    "UNETLoader": {
        "input": {
            "required": {
                "unet_name": [["z_image_turbo_bf16.safetensors"]],
                "weight_dtype": [["default", "fp8_e4m3fn", "fp8_e5m2"]],
            }
        },
        "output": ["MODEL"],
        "name": "UNETLoader",
    },
    "CLIPLoader": {
        "input": {
            "required": {"clip_name": [["qwen_3_4b.safetensors"]], "type": [["stable_diffusion", "lumina2"]]},
            "optional": {"device": [["default", "cpu"]]},
        },
        "input_order": {"required": ["clip_name", "type"], "optional": ["device"]},
        "output": ["CLIP"],
        "name": "CLIPLoader",
    },
    "EmptySD3LatentImage": {
        "input": {
            "required": {
                "width": ["INT", {"default": 1024}],
                "height": ["INT", {"default": 1024}],
                "batch_size": ["INT", {"default": 1}],
            }
        },
        "input_order": {"required": ["width", "height", "batch_size"]},
        "output": ["LATENT"],
        "name": "EmptySD3LatentImage",
    },
    "ModelSamplingAuraFlow": {
        "input": {"required": {"model": ["MODEL"], "shift": ["FLOAT", {"default": 1.73}]}},
        "input_order": {"required": ["model", "shift"]},
        "output": ["MODEL"],
        "name": "ModelSamplingAuraFlow",
    },
}


def test_front_end_1_58_default_converts(defs):
    prompt = convert_workflow(load("default.frontend-1.58.1.json"), {**defs, **ZIMAGE_DEFS})
    assert sampler_values(prompt, "70") == (42, 8, 1, "res_multistep", "simple", 1)
    assert prompt["62"]["inputs"] == {
        "clip_name": "qwen_3_4b.safetensors",
        "type": "lumina2",
        "device": "default",
    }
    assert prompt["68"]["inputs"] == {"width": 1024, "height": 1024, "batch_size": 1}
    assert prompt["69"]["inputs"] == {"model": ["66", 0], "shift": 3}


def test_front_end_1_58_default_names_what_loom_lacks(defs):
    with pytest.raises(PromptError) as e:
        convert_workflow(load("default.frontend-1.58.1.json"), defs)
    missing = {err["class_type"] for err in e.value.node_errors.values()}
    assert missing == {"CLIPLoader", "UNETLoader", "EmptySD3LatentImage", "ModelSamplingAuraFlow"}


# -- every form of the extra widget values ------------------------------------------------------

KS = ["seed", "steps", "cfg", "sampler_name", "scheduler", "denoise"]


def _ksampler(defs, values, named=None):
    wf = load("default.frontend-1.35.9.json")
    node = next(n for n in wf["nodes"] if n["id"] == 3)
    node["widgets_values"] = values
    if named is not None:
        node["widgets_values_named"] = named
    inputs = convert_workflow(wf, defs)["3"]["inputs"]
    return [inputs[k] for k in KS]


@pytest.mark.parametrize(
    "control", ["fixed", "increment", "decrement", "randomize", True, False, None, "absent"]
)
def test_every_seed_control_form(defs, control):
    values = [7] + ([] if control == "absent" else [control]) + [30, 6.5, "euler", "karras", 0.75]
    assert _ksampler(defs, values) == [7, 30, 6.5, "euler", "karras", 0.75]


def test_truncated_and_extended_lists(defs):
    assert _ksampler(defs, [7, True, 30]) == [7, 30, 8.0, "euler", "normal", 1.0]
    assert _ksampler(defs, [7, "randomize", 30, 6.5, "euler", "karras", 0.75, "new widget"]) == [
        7,
        30,
        6.5,
        "euler",
        "karras",
        0.75,
    ]


def test_named_values_fill_what_the_list_lacks_and_the_list_wins(defs):
    named = {
        "seed": 1,
        "control_after_generate": "fixed",
        "steps": 9,
        "cfg": 2.0,
        "sampler_name": "euler",
        "scheduler": "karras",
        "denoise": 0.5,
    }
    assert _ksampler(defs, [], named) == [1, 9, 2.0, "euler", "karras", 0.5]
    assert _ksampler(defs, [7, "fixed", 30], named) == [7, 30, 2.0, "euler", "karras", 0.5]


PICK = {
    "Pick": {
        "input": {
            "required": {
                "choice": [["a", "b", "c"], {"control_after_generate": True}],
                "n": ["INT", {"default": 1}],
                "flag": ["BOOLEAN", {"default": False}],
            }
        },
        "input_order": {"required": ["choice", "n", "flag"]},
        "output": ["STRING"],
        "name": "Pick",
    }
}


@pytest.mark.parametrize(
    "values",
    [
        ["b", "increment-wrap", "", 4, True],  # front ends 1.x: control, then control_filter_list
        ["b", "randomize", "/^[ab]$/", 4, True],  # a filter the user typed
        ["b", "fixed", 4, True],  # no filter list
        ["b", 4, True],  # no control at all
    ],
)
def test_combo_control_and_filter_list(values):
    wf = {"nodes": [{"id": 1, "type": "Pick", "mode": 0, "widgets_values": values}]}
    assert convert_workflow(wf, PICK)["1"]["inputs"] == {"choice": "b", "n": 4, "flag": True}


def test_explicit_control_settings_override_the_seed_convention():
    defs = {
        "N": {
            "input": {
                "required": {
                    "seed": ["INT", {"default": 0, "control_after_generate": False}],
                    "strength": ["FLOAT", {"default": 1.0, "control_after_generate": "fixed"}],
                    "flag": ["BOOLEAN", {"default": False}],
                }
            },
            "input_order": {"required": ["seed", "strength", "flag"]},
            "output": ["X"],
            "name": "N",
        }
    }
    wf = {"nodes": [{"id": 1, "type": "N", "mode": 0, "widgets_values": [5, 0.5, "fixed", True]}]}
    assert convert_workflow(wf, defs)["1"]["inputs"] == {"seed": 5, "strength": 0.5, "flag": True}


def test_force_input_values_of_older_front_ends_are_skipped():
    defs = {
        "T": {
            "input": {
                "required": {
                    "text": ["STRING", {"forceInput": True}],
                    "count": ["INT", {"default": 1}],
                    "mode": [["fast", "slow"]],
                }
            },
            "input_order": {"required": ["text", "count", "mode"]},
            "output": ["X"],
            "name": "T",
        }
    }
    for values in (["stale text", 3, "slow"], [3, "slow"]):
        wf = {"nodes": [{"id": 1, "type": "T", "mode": 0, "widgets_values": values}]}
        assert convert_workflow(wf, defs)["1"]["inputs"] == {"count": 3, "mode": "slow"}


@pytest.mark.parametrize("junk", [{"a": 1}, [1, 2], [[]], 3.5, True, None])
def test_odd_values_in_any_slot_never_crash(defs, junk):
    """Damaged files: lists, objects and numbers where texts go (a crash here would be a 500)."""
    wf = load("image2image.media_image-0.3.1.json")
    for node in wf["nodes"]:
        if isinstance(node.get("widgets_values"), list):
            for i in range(len(node["widgets_values"])):
                damaged = copy.deepcopy(wf)
                next(n for n in damaged["nodes"] if n["id"] == node["id"])["widgets_values"][i] = junk
                try:
                    convert_workflow(damaged, defs)
                except PromptError:
                    pass


def test_newer_scale_to_total_pixels_with_resolution_steps(defs, registry):
    """Front ends after ComfyUI added resolution_steps save three values; API prompts written
    before then have two inputs: both run."""
    wf = load("image2image.media_image-0.3.1.json")
    next(n for n in wf["nodes"] if n["id"] == 18)["widgets_values"] = ["lanczos", 1, 16]
    prompt = convert_workflow(wf, defs)
    assert prompt["18"]["inputs"] == {
        "image": ["10", 0],
        "upscale_method": "lanczos",
        "megapixels": 1,
        "resolution_steps": 16,
    }
    old = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "2": {
            "class_type": "ImageScaleToTotalPixels",
            "inputs": {"image": ["1", 0], "upscale_method": "area", "megapixels": 0.5},
        },
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }
    assert validate_prompt(old, registry, RunContext()).nodes["2"].consts == {
        "upscale_method": "area",
        "megapixels": 0.5,
    }

"""Node declarations and helpers shared by the workflow tests.

The nodes mirror the inputs (names, order, kinds) of ComfyUI's core nodes of the same names, declared
with the real ``loom.nodeapi`` classes, so ``NODE_DEFS`` has the genuine ``/object_info`` shape.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from loom.nodeapi import Combo, Float, Hidden, Int, Link, Node, NodeRegistry, Output, String

DATA = Path(__file__).parent / "data" / "workflows"

SAMPLERS = ["euler", "euler_ancestral", "dpmpp_2m"]
SCHEDULERS = ["normal", "karras", "simple"]


class _Runs(Node):
    def run(self, **inputs):  # pragma: no cover - conversion never runs nodes
        return ()


class CheckpointLoaderSimple(_Runs):
    display_name = "Load Checkpoint"
    inputs = {"ckpt_name": Combo(["v1-5-pruned-emaonly.safetensors", "sdxl.safetensors"])}
    outputs = (Output("MODEL"), Output("CLIP"), Output("VAE"))


class CLIPTextEncode(_Runs):
    display_name = "CLIP Text Encode (Prompt)"
    inputs = {"text": String(multiline=True, dynamic_prompts=True), "clip": Link("CLIP")}
    outputs = (Output("CONDITIONING"),)


class EmptyLatentImage(_Runs):
    display_name = "Empty Latent Image"
    inputs = {"width": Int(512, min=16, max=16384, step=8),
              "height": Int(512, min=16, max=16384, step=8),
              "batch_size": Int(1, min=1, max=4096)}
    outputs = (Output("LATENT"),)


class KSampler(_Runs):
    inputs = {"model": Link("MODEL"),
              "seed": Int(0, min=0, control_after_generate=True),
              "steps": Int(20, min=1, max=10000),
              "cfg": Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01),
              "sampler_name": Combo(SAMPLERS),
              "scheduler": Combo(SCHEDULERS),
              "positive": Link("CONDITIONING"),
              "negative": Link("CONDITIONING"),
              "latent_image": Link("LATENT"),
              "denoise": Float(1.0, min=0.0, max=1.0, step=0.01)}
    outputs = (Output("LATENT"),)


class VAEDecode(_Runs):
    display_name = "VAE Decode"
    inputs = {"samples": Link("LATENT"), "vae": Link("VAE")}
    outputs = (Output("IMAGE"),)


class VAEEncode(_Runs):
    display_name = "VAE Encode"
    inputs = {"pixels": Link("IMAGE"), "vae": Link("VAE")}
    outputs = (Output("LATENT"),)


class SaveImage(_Runs):
    display_name = "Save Image"
    output_node = True
    inputs = {"images": Link("IMAGE"), "filename_prefix": String("ComfyUI"),
              "prompt": Hidden("PROMPT"), "extra_pnginfo": Hidden("EXTRA_PNGINFO")}


class PreviewImage(_Runs):
    display_name = "Preview Image"
    output_node = True
    inputs = {"images": Link("IMAGE"), "prompt": Hidden("PROMPT"),
              "extra_pnginfo": Hidden("EXTRA_PNGINFO")}


class LoadImage(_Runs):
    display_name = "Load Image"
    inputs = {"image": Combo(["example.png", "cat.png"], image_upload=True)}
    outputs = (Output("IMAGE"), Output("MASK"))


class LoadImageMask(_Runs):
    display_name = "Load Image (as Mask)"
    inputs = {"image": Combo(["example.png", "cat.png"], image_upload=True),
              "channel": Combo(["alpha", "red", "green", "blue"])}
    outputs = (Output("MASK"),)


class LoraLoader(_Runs):
    display_name = "Load LoRA"
    inputs = {"model": Link("MODEL"), "clip": Link("CLIP"),
              "lora_name": Combo(["detail.safetensors", "style.safetensors"]),
              "strength_model": Float(1.0, min=-100.0, max=100.0),
              "strength_clip": Float(1.0, min=-100.0, max=100.0)}
    outputs = (Output("MODEL"), Output("CLIP"))


class ImageScaleBy(_Runs):
    display_name = "Upscale Image By"
    inputs = {"image": Link("IMAGE"),
              "upscale_method": Combo(["nearest-exact", "bilinear", "bicubic"]),
              "scale_by": Float(1.0, min=0.01, max=8.0)}
    outputs = (Output("IMAGE"),)


class PrimitiveInt(_Runs):
    display_name = "Int"
    inputs = {"value": Int(0, control_after_generate=True)}
    outputs = (Output("INT"),)


class ImageBatch(_Runs):
    """Two IMAGE inputs and one IMAGE output: which input does a bypass pass through?"""

    display_name = "Batch Images"
    inputs = {"image1": Link("IMAGE"), "image2": Link("IMAGE")}
    outputs = (Output("IMAGE"),)


class TextWithOptions(_Runs):
    """Optional widgets after the required ones, for the widget-order tests."""

    inputs = {"text": String("hello"), "count": Int(3),
              "suffix": String("!", optional=True), "repeat": Int(1, optional=True)}
    outputs = (Output("STRING"),)


NODE_CLASSES = {cls.__name__: cls for cls in (
    CheckpointLoaderSimple, CLIPTextEncode, EmptyLatentImage, KSampler, VAEDecode, VAEEncode,
    SaveImage, PreviewImage, LoadImage, LoadImageMask, LoraLoader, ImageScaleBy, PrimitiveInt,
    ImageBatch, TextWithOptions)}


def make_registry() -> NodeRegistry:
    registry = NodeRegistry()
    for name, cls in NODE_CLASSES.items():
        registry.register(name, cls, module="tests.workflow")
    return registry


NODE_DEFS = make_registry().object_info()


def load(name: str) -> dict:
    """A fixture workflow (a fresh copy each time, so a test may change it)."""
    return copy.deepcopy(json.loads((DATA / name).read_text()))


def test_node_defs_have_the_object_info_shape():
    ks = NODE_DEFS["KSampler"]
    assert ks["input_order"]["required"][:3] == ["model", "seed", "steps"]
    assert ks["input"]["required"]["seed"][1]["control_after_generate"] is True
    assert NODE_DEFS["LoadImage"]["input"]["required"]["image"][1]["image_upload"] is True
    assert "prompt" in NODE_DEFS["SaveImage"]["input"]["hidden"]
    assert NODE_DEFS["TextWithOptions"]["input_order"]["optional"] == ["suffix", "repeat"]

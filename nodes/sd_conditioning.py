"""Prompt encoding nodes: CLIPTextEncode, CLIPSetLastLayer, CLIPTextEncodeSDXL (ComfyUI's names).

CONDITIONING is ``[[hidden [1, 77*k, D], {"pooled_output": …, …}]]`` (see
:mod:`loom.runtime.sd.types`). CLIPTextEncode stores no SDXL size fields: like ComfyUI, the
sampler then uses the latent's size for width/height/target and 0 for the crop.
CLIPTextEncodeSDXL stores the sizes it is given.
"""

from __future__ import annotations

from loom.nodeapi import Int, Link, ModelUse, Node, Output, String, pixels
from loom.runtime.sd.common import manager_of
from loom.runtime.sd.text import encode_text
from loom.runtime.working_memory import text_encoder_bytes


def _check_clip(clip) -> None:
    if clip is None:
        raise ValueError("The clip input is empty: the checkpoint loader gave no text encoder (the "
                         "file has none). Use a full checkpoint or connect a CLIP.")


class CLIPTextEncode(Node, category="conditioning", display_name="CLIP Text Encode (Prompt)"):
    """Encodes a prompt with the text encoder. (word:1.2) weights, (word) is 1.1, [word] is 1/1.1,
    embedding:name uses a textual-inversion embedding."""
    inputs = {
        "text": String("", multiline=True, dynamic_prompts=True, tooltip="The prompt."),
        "clip": Link("CLIP", tooltip="The text encoder."),
    }
    outputs = (Output("CONDITIONING"),)

    def uses(self, clip, **_):
        return ModelUse((clip,), text_encoder_bytes())

    def run(self, text, clip):
        _check_clip(clip)
        return (encode_text(clip, text, paths=self.ctx.paths, manager=manager_of(self.ctx)),)


class CLIPSetLastLayer(Node, category="conditioning", display_name="CLIP Set Last Layer"):
    """Uses an earlier layer of the text encoder (-1 = last, -2 = penultimate, …)."""
    inputs = {
        "clip": Link("CLIP"),
        "stop_at_clip_layer": Int(-1, min=-24, max=-1, step=1),
    }
    outputs = (Output("CLIP"),)

    def run(self, clip, stop_at_clip_layer):
        _check_clip(clip)
        return (clip.replace(layer_idx=stop_at_clip_layer),)


class CLIPTextEncodeSDXL(Node, category="advanced/conditioning", display_name="CLIPTextEncodeSDXL"):
    """SDXL prompt encoding with separate prompts for its two text encoders and explicit size/crop
    conditioning."""
    inputs = {
        "clip": Link("CLIP"),
        "width": pixels(1024), "height": pixels(1024),
        "crop_w": pixels(), "crop_h": pixels(),
        "target_width": pixels(1024), "target_height": pixels(1024),
        "text_g": String("", multiline=True, dynamic_prompts=True, tooltip="Prompt for OpenCLIP bigG."),
        "text_l": String("", multiline=True, dynamic_prompts=True, tooltip="Prompt for CLIP-L."),
    }
    outputs = (Output("CONDITIONING"),)

    def uses(self, clip, **_):
        return ModelUse((clip,), text_encoder_bytes())

    def run(self, clip, width, height, crop_w, crop_h, target_width, target_height, text_g, text_l):
        _check_clip(clip)
        if clip.family != "sdxl" or len(clip.encoders) != 2:
            raise ValueError(f"CLIPTextEncodeSDXL needs an SDXL text encoder; this CLIP is {clip.family}. "
                             "Use CLIPTextEncode.")
        cond = encode_text(clip, (text_l, text_g), paths=self.ctx.paths, manager=manager_of(self.ctx))
        cond[0][1].update(width=width, height=height, crop_w=crop_w, crop_h=crop_h,
                          target_width=target_width, target_height=target_height)
        return (cond,)


NODES = [CLIPTextEncode, CLIPSetLastLayer, CLIPTextEncodeSDXL]

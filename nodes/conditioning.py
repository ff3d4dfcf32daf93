"""Conditioning combinators (ComfyUI's ConditioningCombine and ConditioningSetArea).

How the sampler uses several entries and areas: ``loom.runtime.sampling.conditioning``.
"""

from __future__ import annotations

from loom.nodeapi import Float, Int, Link, Node, Output

MAX_RESOLUTION = 16384


class ConditioningCombine(Node):
    category = "conditioning"
    display_name = "Conditioning (Combine)"
    description = ("Both conditionings guide the image: the sampler averages their predictions "
                   "(weighted by strength, per area).")
    inputs = {"conditioning_1": Link("CONDITIONING"), "conditioning_2": Link("CONDITIONING")}
    outputs = (Output("CONDITIONING"),)

    def run(self, conditioning_1, conditioning_2):
        return (list(conditioning_1) + list(conditioning_2),)


class ConditioningSetArea(Node):
    category = "conditioning"
    display_name = "Conditioning (Set Area)"
    description = ("Limit a conditioning to a rectangle of the image (in pixels); combine it with "
                   "a whole-image conditioning.")
    inputs = {
        "conditioning": Link("CONDITIONING"),
        "width": Int(64, min=64, max=MAX_RESOLUTION, step=8),
        "height": Int(64, min=64, max=MAX_RESOLUTION, step=8),
        "x": Int(0, min=0, max=MAX_RESOLUTION, step=8),
        "y": Int(0, min=0, max=MAX_RESOLUTION, step=8),
        "strength": Float(1.0, min=0.0, max=10.0, step=0.01),
    }
    outputs = (Output("CONDITIONING"),)

    def run(self, conditioning, width, height, x, y, strength):
        out = []
        for tensor, d in conditioning:
            d = dict(d)
            # (height, width, y, x) in latent pixels: ComfyUI's layout, read by the sampler.
            d["area"] = (height // 8, width // 8, y // 8, x // 8)
            d["strength"] = strength
            d["set_area_to_bounds"] = False
            out.append([tensor, d])
        return (out,)


NODES = [ConditioningCombine, ConditioningSetArea]

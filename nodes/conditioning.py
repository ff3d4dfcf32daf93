"""Conditioning combinators with ComfyUI's names: Combine, SetArea, ZeroOut, Concat, Average.

CONDITIONING is a list of ``[hidden [1, tokens, D], {"pooled_output": …, …}]`` entries. How the
sampler uses several entries and areas: ``loom.runtime.sampling.conditioning``.
"""

from __future__ import annotations

import logging

import torch

from loom.nodeapi import Float, Link, Node, Output, fraction, pixels

log = logging.getLogger("loom.nodes")



class ConditioningCombine(Node, category="conditioning", display_name="Conditioning (Combine)"):
    """Both conditionings guide the image: the sampler averages their predictions (weighted by
    strength, per area)."""
    inputs = {"conditioning_1": Link("CONDITIONING"), "conditioning_2": Link("CONDITIONING")}
    outputs = (Output("CONDITIONING"),)

    def run(self, conditioning_1, conditioning_2):
        return (list(conditioning_1) + list(conditioning_2),)


class ConditioningSetArea(Node, category="conditioning", display_name="Conditioning (Set Area)"):
    """Limit a conditioning to a rectangle of the image (in pixels); combine it with a whole-image
    conditioning."""
    inputs = {
        "conditioning": Link("CONDITIONING"),
        "width": pixels(64, min=64, step=8), "height": pixels(64, min=64, step=8),
        "x": pixels(step=8), "y": pixels(step=8),
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


class ConditioningZeroOut(Node, category="advanced/conditioning", display_name="Conditioning Zero Out"):
    """The same conditioning with every number zero (hidden states and pooled output)."""
    inputs = {"conditioning": Link("CONDITIONING")}
    outputs = (Output("CONDITIONING"),)

    def run(self, conditioning):
        out = []
        for tensor, d in conditioning:
            d = dict(d)
            if d.get("pooled_output") is not None:
                d["pooled_output"] = torch.zeros_like(d["pooled_output"])
            out.append([torch.zeros_like(tensor), d])
        return (out,)


def _first_of(conditioning_from, node: str) -> list:
    if not conditioning_from:
        raise ValueError(f"{node}: conditioning_from is empty")
    if len(conditioning_from) > 1:
        log.warning("%s: conditioning_from has %d entries; only the first is used", node,
                    len(conditioning_from))
    return conditioning_from[0]


class ConditioningConcat(Node, category="advanced/conditioning", display_name="Conditioning (Concat)"):
    """Appends conditioning_from's tokens after each entry of conditioning_to (as if the prompts
    were one long prompt encoded in two parts)."""
    inputs = {"conditioning_to": Link("CONDITIONING"), "conditioning_from": Link("CONDITIONING")}
    outputs = (Output("CONDITIONING"),)

    def run(self, conditioning_to, conditioning_from):
        tokens = _first_of(conditioning_from, "ConditioningConcat")[0]
        out = []
        for tensor, d in conditioning_to:
            if tensor.shape[-1] != tokens.shape[-1]:
                raise ValueError(f"ConditioningConcat: widths differ ({tensor.shape[-1]} vs "
                                 f"{tokens.shape[-1]}): both must come from the same text encoder")
            out.append([torch.cat([tensor, tokens.to(tensor)], dim=1), dict(d)])
        return (out,)


class ConditioningAverage(Node, category="conditioning", display_name="Conditioning (Average)"):
    """A weighted average: conditioning_to x strength + conditioning_from x (1 - strength), token by
    token (the shorter is padded with zeros or the longer 'from' cut to 'to''s length); pooled
    outputs likewise."""
    inputs = {
        "conditioning_to": Link("CONDITIONING"),
        "conditioning_from": Link("CONDITIONING"),
        "conditioning_to_strength": fraction(1.0),
    }
    outputs = (Output("CONDITIONING"),)

    def run(self, conditioning_to, conditioning_from, conditioning_to_strength):
        first = _first_of(conditioning_from, "ConditioningAverage")
        source, pooled_from = first[0], first[1].get("pooled_output")
        w = float(conditioning_to_strength)
        out = []
        for tensor, d in conditioning_to:
            if tensor.shape[-1] != source.shape[-1]:
                raise ValueError(f"ConditioningAverage: widths differ ({tensor.shape[-1]} vs "
                                 f"{source.shape[-1]}): both must come from the same text encoder")
            other = source[:, :tensor.shape[1]].to(tensor)
            if other.shape[1] < tensor.shape[1]:
                pad = tensor.new_zeros((other.shape[0], tensor.shape[1] - other.shape[1], tensor.shape[2]))
                other = torch.cat([other, pad], dim=1)
            d = dict(d)
            pooled_to = d.get("pooled_output")
            if pooled_from is not None:
                d["pooled_output"] = (pooled_from if pooled_to is None
                                      else pooled_to * w + pooled_from.to(pooled_to) * (1.0 - w))
            out.append([tensor * w + other * (1.0 - w), d])
        return (out,)


class ConditioningSetTimestepRange(Node, category="advanced/conditioning",
                                   display_name="ConditioningSetTimestepRange"):
    """Use this conditioning only for part of the schedule: from start to end, as fractions of the
    model's noise range (0 = pure noise, 1 = clean). Combine several to switch prompts mid-run."""
    inputs = {"conditioning": Link("CONDITIONING"),
              "start": fraction(0.0, step=0.001), "end": fraction(1.0, step=0.001)}
    outputs = (Output("CONDITIONING"),)

    def run(self, conditioning, start, end):
        # ComfyUI's keys, read by the sampler (loom.runtime.sampling.prediction).
        return ([[tensor, {**d, "start_percent": start, "end_percent": end}]
                 for tensor, d in conditioning],)


NODES = [ConditioningCombine, ConditioningSetArea, ConditioningZeroOut, ConditioningConcat,
         ConditioningAverage, ConditioningSetTimestepRange]

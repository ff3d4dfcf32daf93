"""Primitive value nodes (Int, Float, String, Boolean) and PreviewAny, which shows any value.

The editor's own "PrimitiveNode" is a front-end widget holder that the workflow converter
folds away; these are real backend nodes whose value can be wired anywhere.
"""

import json

import torch

from loom.nodeapi import SEED_MAX, Boolean, Float, Int, Link, Node, NodeResult, Output, String


class PrimitiveInt(Node, category="utils/primitive", display_name="Int"):
    inputs = {"value": Int(0, min=-(2**63), max=SEED_MAX, control_after_generate=True)}
    outputs = (Output("INT"),)

    def run(self, value):
        return (value,)


class PrimitiveFloat(Node, category="utils/primitive", display_name="Float"):
    inputs = {"value": Float(0.0, min=-1e18, max=1e18, step=0.01)}
    outputs = (Output("FLOAT"),)

    def run(self, value):
        return (value,)


class PrimitiveString(Node, category="utils/primitive", display_name="String"):
    inputs = {"value": String("")}
    outputs = (Output("STRING"),)

    def run(self, value):
        return (value,)


class PrimitiveStringMultiline(Node, category="utils/primitive", display_name="String (Multiline)"):
    inputs = {"value": String("", multiline=True)}
    outputs = (Output("STRING"),)

    def run(self, value):
        return (value,)


class PrimitiveBoolean(Node, category="utils/primitive", display_name="Boolean"):
    inputs = {"value": Boolean(False)}
    outputs = (Output("BOOLEAN"),)

    def run(self, value):
        return (value,)


def preview_text(value) -> str:
    """What PreviewAny shows: text as it is, numbers and booleans as Python prints them, JSON for
    other data, a short description of tensors (their values would flood the page)."""
    if isinstance(value, str):
        return value
    if value is None:
        return "None"
    if isinstance(value, bool | int | float):
        return str(value)
    if isinstance(value, torch.Tensor):
        return f"tensor of shape {list(value.shape)}, {str(value.dtype).removeprefix('torch.')}"
    try:
        return json.dumps(value, indent=4)
    except (TypeError, ValueError):
        return repr(value)[:10_000]


class PreviewAny(Node, category="utils", display_name="Preview as Text"):
    """Preview any input value as text."""
    output_node = True
    inputs = {"source": Link("*", tooltip="Any value.")}
    outputs = ()

    def run(self, source):
        return NodeResult(outputs=(), ui={"text": [preview_text(source)]})


NODES = [PrimitiveInt, PrimitiveFloat, PrimitiveString, PrimitiveStringMultiline, PrimitiveBoolean,
         PreviewAny]

"""Adapter for node classes declared in ComfyUI's style, so simple existing plugins load.

ComfyUI's public plugin protocol (facts, not code): a class with ``INPUT_TYPES()`` returning
``{"required": {name: (TYPE, {options})}, "optional": {...}, "hidden": {name: KIND}}`` where TYPE
is a type name or a list of choices, ``RETURN_TYPES`` / ``RETURN_NAMES`` / ``OUTPUT_TOOLTIPS``,
``FUNCTION`` (the method to call), ``CATEGORY``, ``OUTPUT_NODE``, ``DESCRIPTION``, and optional
classmethods ``IS_CHANGED`` and ``VALIDATE_INPUTS``. The method returns a tuple of outputs or
``{"ui": {...}, "result": (...)}``. We turn such a class into a :class:`Node` subclass.
Plugins that import ComfyUI's own modules (``comfy.*``, ``folder_paths``) still need those.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

from loom.nodeapi.inputs import SEED_MAX, Boolean, Combo, Float, Hidden, Input, Int, Link, String
from loom.nodeapi.node import ALWAYS_RUN, Node, NodeResult, Output


def is_comfy_style(cls: Any) -> bool:
    return (isinstance(cls, type) and not issubclass(cls, Node) and hasattr(cls, "INPUT_TYPES")
            and hasattr(cls, "RETURN_TYPES") and hasattr(cls, "FUNCTION"))


def adapt(class_type: str, cls: type) -> type[Node]:
    """A Node subclass that declares and runs like the ComfyUI-style ``cls``."""
    spec = cls.INPUT_TYPES()
    inputs: dict[str, Input] = {}
    for section in ("required", "optional"):
        for name, decl in (spec.get(section) or {}).items():
            inputs[name] = _input(decl, optional=section == "optional")
    for name, kind in (spec.get("hidden") or {}).items():
        inputs[name] = Hidden(str(kind))
    names = tuple(getattr(cls, "RETURN_NAMES", ()) or ())
    tips = tuple(getattr(cls, "OUTPUT_TOOLTIPS", ()) or ())
    is_list = tuple(getattr(cls, "OUTPUT_IS_LIST", ()) or ())
    outputs = tuple(
        Output(str(t), names[i] if i < len(names) else None, tips[i] if i < len(tips) else None,
               bool(is_list[i]) if i < len(is_list) else False)
        for i, t in enumerate(cls.RETURN_TYPES))
    function = cls.FUNCTION

    def run(self, **kwargs):
        result = getattr(self._impl, function)(**kwargs)
        if isinstance(result, dict):
            return NodeResult(tuple(result.get("result", ()) or ()), result.get("ui"))
        return tuple(result) if result is not None else ()

    def init(self, ctx=None):
        Node.__init__(self, ctx)
        self._impl = cls()

    attrs: dict[str, Any] = {
        "inputs": inputs, "outputs": outputs, "run": run, "__init__": init,
        "category": getattr(cls, "CATEGORY", "custom"),
        "description": str(getattr(cls, "DESCRIPTION", "") or ""),  # else its docstring (summary())
        "output_node": bool(getattr(cls, "OUTPUT_NODE", False)),
        "deprecated": bool(getattr(cls, "DEPRECATED", False)),
        "experimental": bool(getattr(cls, "EXPERIMENTAL", False)),
        "__module__": cls.__module__, "__doc__": cls.__doc__, "comfy_class": cls,
    }
    if hasattr(cls, "IS_CHANGED"):
        attrs["fingerprint"] = classmethod(_fingerprint_via(cls))
    if hasattr(cls, "VALIDATE_INPUTS"):
        attrs["validate_inputs"] = classmethod(_validate_via(cls))
    return type(class_type, (Node,), attrs)


def _input(decl: Any, optional: bool) -> Input:
    if not isinstance(decl, (tuple, list)) or not decl:
        raise TypeError(f"input declaration {decl!r} is not (TYPE, options)")
    kind, opts = decl[0], (decl[1] if len(decl) > 1 and isinstance(decl[1], dict) else {})
    tooltip = opts.get("tooltip")
    if isinstance(kind, (list, tuple)):
        return Combo([str(c) for c in kind], default=opts.get("default"), tooltip=tooltip,
                     image_upload=bool(opts.get("image_upload")), optional=optional,
                     control_after_generate=bool(opts.get("control_after_generate")))
    if kind == "COMBO" and isinstance(opts.get("options"), list):
        return Combo([str(c) for c in opts["options"]], default=opts.get("default"), tooltip=tooltip,
                     optional=optional)
    if kind == "INT":
        return Int(int(opts.get("default", 0)), min=int(opts.get("min", -(2**63))),
                   max=int(opts.get("max", SEED_MAX)), step=int(opts.get("step", 1)),
                   control_after_generate=bool(opts.get("control_after_generate")),
                   display=opts.get("display"), tooltip=tooltip, optional=optional)
    if kind == "FLOAT":
        return Float(float(opts.get("default", 0.0)), min=float(opts.get("min", -1e18)),
                     max=float(opts.get("max", 1e18)), step=float(opts.get("step", 0.01)),
                     round=opts.get("round"), display=opts.get("display"), tooltip=tooltip,
                     optional=optional)
    if kind == "STRING":
        return String(str(opts.get("default", "")), multiline=bool(opts.get("multiline")),
                      dynamic_prompts=bool(opts.get("dynamicPrompts")),
                      placeholder=opts.get("placeholder"), tooltip=tooltip, optional=optional)
    if kind == "BOOLEAN":
        return Boolean(bool(opts.get("default", False)), label_on=opts.get("label_on"),
                       label_off=opts.get("label_off"), tooltip=tooltip, optional=optional)
    extra = {k: v for k, v in opts.items() if k != "tooltip"}
    return Link(str(kind), tooltip=tooltip, optional=optional, **extra)


def _accepted(fn: Any, inputs: dict) -> dict:
    """The keyword arguments ``fn`` takes (ComfyUI passes hooks only the ones they name)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return inputs
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return inputs
    return {k: v for k, v in inputs.items() if k in params}


def _fingerprint_via(cls: type):
    def fingerprint(_node_cls, ctx, **inputs):
        value = cls.IS_CHANGED(**_accepted(cls.IS_CHANGED, inputs))
        if isinstance(value, float) and math.isnan(value):
            return ALWAYS_RUN  # ComfyUI's "always re-run" answer
        return value

    return fingerprint


def _validate_via(cls: type):
    def validate_inputs(_node_cls, ctx, **inputs):
        answer = cls.VALIDATE_INPUTS(**_accepted(cls.VALIDATE_INPUTS, inputs))
        return None if answer is True else str(answer)

    return validate_inputs

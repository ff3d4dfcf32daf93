"""The registry of node classes, and everything derived from their declarations."""

from __future__ import annotations

import copy
import inspect
import logging
from dataclasses import dataclass, field
from typing import Any

from loom.nodeapi.guard import failure_text, reraise_if_fatal
from loom.nodeapi.inputs import Combo, Hidden, Input, InputError
from loom.nodeapi.node import Node

log = logging.getLogger("loom.nodes")


class NodeDeclarationError(TypeError):
    """A node class is declared wrongly (reported against the pack that exports it)."""


@dataclass
class PackInfo:
    """A node pack (built-in module or plugin) and how its import went."""

    name: str
    path: str
    builtin: bool
    nodes: list[str] = field(default_factory=list)
    error: str | None = None  # the traceback when the pack failed to import
    seconds: float = 0.0


class NodeRegistry:
    def __init__(self) -> None:
        self.classes: dict[str, type[Node]] = {}
        self.modules: dict[str, str] = {}  # class_type -> python module (object_info field)
        self.packs: dict[str, PackInfo] = {}
        # (pack, function) for packs that define ``warm_up()``: heavy imports, run once at
        # start-up off the event loop (see loader.py).
        self.warm_ups: list[tuple[str, Any]] = []

    # -- registration -----------------------------------------------------------------------

    def register(self, class_type: str, cls: type[Node], module: str = "nodes") -> None:
        check_declaration(class_type, cls)
        if class_type in self.classes and self.classes[class_type] is not cls:
            log.warning("Node %s from %s replaces the one from %s", class_type, module,
                        self.modules.get(class_type))
        # Each input learns the name it is declared under (its error messages use it). A copy
        # where the name differs: an Input object shared by several nodes or names is never
        # changed by registering one of them.
        if any(inp.name != name for name, inp in cls.inputs.items()):
            cls.inputs = {name: inp if inp.name == name else _named(inp, name)
                          for name, inp in cls.inputs.items()}
        self.classes[class_type] = cls
        self.modules[class_type] = module

    def get(self, class_type: str) -> type[Node] | None:
        return self.classes.get(class_type)

    def __contains__(self, class_type: str) -> bool:
        return class_type in self.classes

    # -- /object_info -----------------------------------------------------------------------

    def object_info(self, ctx: Any = None) -> dict[str, dict]:
        """Every node described in ComfyUI's ``/object_info`` shape (combo choices are live)."""
        return {name: self.describe(name, ctx) for name in self.classes}

    def describe(self, class_type: str, ctx: Any = None) -> dict:
        """One node's description. An input whose description fails (a plugin's choices function
        raised) is shown with no choices, and the node gets an ``error`` saying why: the editor
        still lists it, and every other node is unaffected."""
        cls = self.classes[class_type]
        required: dict[str, list] = {}
        optional: dict[str, list] = {}
        hidden: dict[str, str] = {}
        errors: list[str] = []
        for name, inp in cls.inputs.items():
            if isinstance(inp, Hidden):
                hidden[name] = inp.type
                continue
            try:
                described = inp.describe(ctx)
            except BaseException as e:
                reraise_if_fatal(e)
                message = e.message if isinstance(e, InputError) else \
                    f"'{name}' could not be described: {failure_text(e)}"
                errors.append(message)
                described = [[] if isinstance(inp, Combo) else inp.type, {"error": message}]
            (optional if inp.optional else required)[name] = described
        inputs: dict[str, Any] = {"required": required}
        order: dict[str, list[str]] = {"required": list(required)}
        if optional:
            inputs["optional"] = optional
            order["optional"] = list(optional)
        if hidden:
            inputs["hidden"] = hidden
        info = {
            "input": inputs,
            "input_order": order,
            "output": [o.type for o in cls.outputs],
            "output_is_list": [o.is_list for o in cls.outputs],
            "output_name": [o.label for o in cls.outputs],
            "output_tooltips": [o.tooltip or "" for o in cls.outputs],
            "name": class_type,
            "display_name": cls.display_name or class_type,
            "description": cls.summary(),
            "python_module": self.modules.get(class_type, "nodes"),
            "category": cls.category,
            "output_node": cls.output_node,
            "deprecated": cls.deprecated,
            "experimental": cls.experimental,
        }
        if errors:
            info["error"] = "; ".join(errors)
        return info


def _named(inp: Input, name: str) -> Input:
    named = copy.copy(inp)
    named.name = name
    return named


def check_declaration(class_type: str, cls: Any) -> None:
    """Fail early, with the node's name, on declarations the engine could not run."""
    if not (isinstance(cls, type) and issubclass(cls, Node)):
        raise NodeDeclarationError(f"{class_type}: {cls!r} is not a subclass of loom.nodeapi.Node")
    if not isinstance(class_type, str) or not class_type:
        raise NodeDeclarationError(f"{cls.__name__}: node names must be non-empty strings")
    for name, inp in dict(cls.inputs).items():
        if not isinstance(inp, Input):
            raise NodeDeclarationError(f"{class_type}.{name}: {inp!r} is not an input declaration")
    if not isinstance(cls.outputs, tuple):
        raise NodeDeclarationError(f"{class_type}: outputs must be a tuple of Output")
    if cls.run is Node.run:
        raise NodeDeclarationError(f"{class_type}: does not implement run()")
    check_run_signature(class_type, cls)


def check_run_signature(class_type: str, cls: type[Node]) -> None:
    """``run`` must accept every declared input by name, and every parameter it requires must be
    a declared input: a misspelt name fails when the pack loads, naming the node, instead of as a
    TypeError at run time. A ``run(**kwargs)`` (ComfyUI-style adapted nodes) accepts anything."""
    try:
        params = inspect.signature(cls.run).parameters
    except (TypeError, ValueError):  # a builtin or C callable: nothing to compare
        return
    names = list(params)[1:] if params and list(params)[0] == "self" else list(params)
    takes_any = any(params[n].kind is inspect.Parameter.VAR_KEYWORD for n in names)
    by_name = {n for n in names if params[n].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                      inspect.Parameter.KEYWORD_ONLY)}
    declared = dict(cls.inputs)
    if not takes_any:
        unknown = [n for n in declared if n not in by_name]
        if unknown:
            raise NodeDeclarationError(
                f"{class_type}: run() has no parameter for the declared input(s) "
                f"{', '.join(map(repr, unknown))}")
    missing = [n for n in by_name if n not in declared
               and params[n].default is inspect.Parameter.empty]
    if missing:
        raise NodeDeclarationError(
            f"{class_type}: run() requires {', '.join(map(repr, missing))}, which the node "
            "does not declare as inputs")
    _check_defaults(class_type, declared, params)


def _check_defaults(class_type: str, declared: dict, params) -> None:
    """A default in ``run``'s signature (for direct calls, and optional inputs left out) must
    be the declared one: the declaration is the one source, the signature may only repeat it."""
    for name, inp in declared.items():
        declared_default = getattr(inp, "default", None)
        param = params.get(name)
        if declared_default is None or param is None or param.default is inspect.Parameter.empty:
            continue
        if param.default != declared_default:
            raise NodeDeclarationError(
                f"{class_type}.{name}: run() defaults to {param.default!r} but the input "
                f"declares {declared_default!r}; give run() the declared default or none")

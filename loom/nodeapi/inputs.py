"""Typed input declarations for nodes.

A node lists its inputs as instances of these classes. Each one knows three things the registry
derives everything else from: how it is described in ``/object_info`` (ComfyUI's shape, so
existing front ends draw it), how a constant value sent by a client is checked and coerced, and
whether it is a widget (a constant) or a socket (a link from another node's output).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from loom.nodeapi.guard import failure_text, reraise_if_fatal

# Limits every node shares (ComfyUI's values, so its workflows validate the same way).
SEED_MAX = 0xFFFFFFFFFFFFFFFF  # seeds are u64
INT_MAX = SEED_MAX  # the default range of an Int
MAX_RESOLUTION = 16384  # largest width/height a node accepts


class InputError(ValueError):
    """A constant input value was rejected. ``type`` is a ComfyUI validation error type."""

    def __init__(self, type: str, message: str, extra: dict | None = None):
        super().__init__(message)
        self.type = type
        self.message = message
        self.extra = extra or {}


@dataclass(kw_only=True)
class Input:
    """Base of all inputs. ``optional`` inputs may be left unconnected/unset.

    The widget inputs below are keyword-only dataclasses: each attribute and its default is
    declared once; only the first (``default``, or ``choices`` for a Combo) may be positional.
    """

    type: str = "*"
    tooltip: str | None = None
    optional: bool = False
    # Set on every input by the registry from the attribute name it was declared under.
    name: str = field(default="", compare=False)

    is_widget = False  # widgets hold constants; sockets take links

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if self.tooltip:
            opts["tooltip"] = self.tooltip
        return opts

    def _widget_options(self, opts: dict[str, Any], **flags: Any) -> dict[str, Any]:
        """A widget's options: ``opts``, then each of ``flags`` that is set (ComfyUI leaves the
        others out), then the tooltip."""
        return {**opts, **{k: v for k, v in flags.items() if v}, **Input.options(self)}

    def describe(self, ctx: Any = None) -> list:
        """The ``[type, {options}]`` pair ``/object_info`` shows for this input."""
        opts = self.options()
        return [self.type, opts] if opts else [self.type]

    def accepts_type(self, output_type: str) -> bool:
        """Whether a link from an output of ``output_type`` may feed this input."""
        if self.type == "*" or output_type == "*":
            return True
        mine = {t.strip() for t in self.type.split(",")}
        theirs = {t.strip() for t in output_type.split(",")}
        return bool(mine & theirs)

    def coerce(self, value: Any, ctx: Any = None) -> Any:
        """Check and normalise a constant. Sockets only take links."""
        raise InputError(
            "invalid_input_type",
            f"Input '{self.name}' takes a link from a node with a {self.type} output, not a constant",
            {"received_value": value},
        )


@dataclass
class Link(Input):
    """A socket fed by another node's output of a given type (MODEL, IMAGE, LATENT, …)."""

    def __init__(self, type: str, *, tooltip: str | None = None, optional: bool = False, **extra):
        super().__init__(type=type, tooltip=tooltip, optional=optional)
        self.extra = extra

    def options(self) -> dict[str, Any]:
        return {**super().options(), **self.extra}


@dataclass(kw_only=True)
class Int(Input):
    type: str = field(default="INT", init=False)
    default: int = field(default=0, kw_only=False)
    min: int = -INT_MAX
    max: int = INT_MAX
    step: int = 1
    control_after_generate: bool = False
    display: str | None = None  # "number" or "slider"

    is_widget = True

    def options(self) -> dict[str, Any]:
        return self._widget_options(
            {"default": self.default, "min": self.min, "max": self.max, "step": self.step},
            control_after_generate=self.control_after_generate, display=self.display)

    def coerce(self, value: Any, ctx: Any = None) -> int:
        original = value
        if isinstance(value, bool):
            raise InputError("invalid_input_type", f"'{self.name}' must be an integer, got a boolean",
                             {"received_value": value})
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        elif isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                value = None
        if not isinstance(value, int):
            raise InputError("invalid_input_type", f"'{self.name}' must be an integer",
                             {"received_value": _shown(original)})
        _check_range(self, value)
        return value


def pixels(default: int = 0, *, min: int = 0, step: int = 1, **options: Any) -> Int:
    """An Int for a length or an offset in pixels: from ``min`` up to MAX_RESOLUTION."""
    return Int(default, min=min, max=MAX_RESOLUTION, step=step, **options)


@dataclass(kw_only=True)
class Float(Input):
    type: str = field(default="FLOAT", init=False)
    default: float = field(default=0.0, kw_only=False)
    min: float = -1e18  # finite, so /object_info stays valid JSON
    max: float = 1e18
    step: float = 0.01
    round: float | bool | None = None
    display: str | None = None

    is_widget = True

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"default": self.default, "min": self.min, "max": self.max,
                                "step": self.step}
        if self.round is not None:  # False too: ComfyUI's "no rounding"
            opts["round"] = self.round
        return self._widget_options(opts, display=self.display)

    def coerce(self, value: Any, ctx: Any = None) -> float:
        original = value
        if isinstance(value, bool):
            value = None
        elif isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                value = None
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InputError("invalid_input_type", f"'{self.name}' must be a finite number",
                             {"received_value": _shown(original)})
        value = float(value)
        _check_range(self, value)
        return value


@dataclass(kw_only=True)
class String(Input):
    type: str = field(default="STRING", init=False)
    default: str = field(default="", kw_only=False)
    multiline: bool = False
    dynamic_prompts: bool = False
    placeholder: str | None = None

    is_widget = True

    def options(self) -> dict[str, Any]:
        return self._widget_options({"default": self.default}, multiline=self.multiline,
                                    dynamicPrompts=self.dynamic_prompts, placeholder=self.placeholder)

    def coerce(self, value: Any, ctx: Any = None) -> str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise InputError("invalid_input_type", f"'{self.name}' must be a string",
                             {"received_value": _shown(value)})
        return value


def fraction(default: float, *, step: float = 0.01, **options: Any) -> Float:
    """A Float for a share of something: from 0 to 1."""
    return Float(default, min=0.0, max=1.0, step=step, **options)


@dataclass(kw_only=True)
class Boolean(Input):
    type: str = field(default="BOOLEAN", init=False)
    default: bool = field(default=False, kw_only=False)
    label_on: str | None = None
    label_off: str | None = None

    is_widget = True

    def options(self) -> dict[str, Any]:
        return self._widget_options({"default": self.default}, label_on=self.label_on,
                                    label_off=self.label_off)

    def coerce(self, value: Any, ctx: Any = None) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise InputError("invalid_input_type", f"'{self.name}' must be true or false",
                         {"received_value": _shown(value)})


@dataclass(kw_only=True)
class Combo(Input):
    """A choice from a list. ``choices`` may be a callable, evaluated at each use (file lists)."""

    type: str = field(default="COMBO", init=False)
    choices: Sequence[str] | Callable[[Any], Sequence[str]] = field(kw_only=False)
    default: str | None = None
    image_upload: bool = False
    control_after_generate: bool = False

    is_widget = True

    def resolve_choices(self, ctx: Any = None) -> list[str]:
        """The choices now; InputError ``choices_unavailable`` when a choices function fails."""
        if not callable(self.choices):
            return list(self.choices)
        try:
            return list(self.choices(ctx))
        except BaseException as e:  # a plugin's function (even sys.exit()) costs only its node
            reraise_if_fatal(e)
            raise InputError("choices_unavailable", f"The choices of '{self.name}' could not be "
                             f"listed: {failure_text(e)}") from e

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if self.default is not None:
            opts["default"] = self.default
        if self.image_upload:
            opts["image_upload"] = True
        if self.control_after_generate:
            opts["control_after_generate"] = True
        return {**opts, **super().options()}

    def describe(self, ctx: Any = None) -> list:
        return [self.resolve_choices(ctx), self.options()]

    def accepts_type(self, output_type: str) -> bool:
        # A combo converted to a socket takes a COMBO link, or a STRING from a primitive node.
        return output_type in ("COMBO", "STRING", "*")

    def coerce(self, value: Any, ctx: Any = None) -> str:
        choices = self.resolve_choices(ctx)
        if isinstance(value, str) and value in choices:
            return value
        raise InputError("value_not_in_list", self.not_in_list_message(value, choices, ctx),
                         {"received_value": _shown(value), "input_config": [choices[:50]]})

    def not_in_list_message(self, value: Any, choices: list[str], ctx: Any = None) -> str:
        shown = ", ".join(repr(c) for c in choices[:10]) + (" …" if len(choices) > 10 else "")
        return f"'{self.name}': {_shown(value)!r} is not one of the choices ({shown or 'none'})"


@dataclass
class ModelFile(Combo):
    """A combo listing the model files of a ``models/`` folder (checkpoints, loras, vae, …).

    A missing file gets an error that names the file and the folder where it should go.
    """

    folder: str = ""

    def __init__(self, folder: str, *, tooltip: str | None = None, optional: bool = False):
        super().__init__(self._list, tooltip=tooltip, optional=optional)
        self.folder = folder

    def _list(self, ctx: Any) -> list[str]:
        paths = ctx.paths if ctx is not None else None
        return paths.list_models(self.folder) if paths is not None else []

    def not_in_list_message(self, value: Any, choices: list[str], ctx: Any = None) -> str:
        paths = ctx.paths if ctx is not None else None
        where = paths.folder_hint(self.folder) if paths is not None else f"models/{self.folder}/"
        if not choices:
            return (f"Model file {value!r} for '{self.name}' was not found: the folder {where} has "
                    f"no model files. Put the file there, then queue again.")
        return (f"Model file {value!r} for '{self.name}' was not found in {where}. Put the file "
                f"there, or pick one of: " + ", ".join(choices[:10]))


@dataclass
class Hidden(Input):
    """Values the executor supplies rather than the user: PROMPT, EXTRA_PNGINFO, UNIQUE_ID."""

    def __init__(self, kind: str):
        super().__init__(type=kind)


def _check_range(inp: Int | Float, value: float) -> None:
    if value < inp.min:
        raise InputError("value_smaller_than_min",
                         f"'{inp.name}' is {value}, smaller than the minimum {inp.min}",
                         {"received_value": value})
    if value > inp.max:
        raise InputError("value_bigger_than_max",
                         f"'{inp.name}' is {value}, bigger than the maximum {inp.max}",
                         {"received_value": value})


def _shown(value: Any) -> Any:
    """A JSON-safe, bounded rendering of a rejected value for error messages."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value if not isinstance(value, str) or len(value) < 200 else value[:200] + "…"
    return repr(value)[:200]

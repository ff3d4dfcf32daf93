"""The node contract shared by built-in nodes and plugins.

A node is a plain class::

    class Add(Node):
        category = "math"
        inputs = {"a": Int(0), "b": Int(0)}
        outputs = (Output("INT", "sum"),)

        def run(self, a, b):
            return (a + b,)

``run`` gets one keyword argument per input (optional inputs that are not given are left out,
so give them a default in the signature: the declared one, else loading the pack fails, as it
does for a parameter that names no input) and returns a tuple with one value per output, or a
:class:`NodeResult` when it also has something to show in the UI. During execution
``self.ctx`` is the :class:`RunContext`: progress, interrupt checks, model folders, the model
manager. A unit test can call ``Add().run(a=1, b=2)`` with no server and no executor.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from loom.files import model_fingerprint
from loom.nodeapi.inputs import Input, ModelFile

if TYPE_CHECKING:  # the node API imports neither torch nor the server's configuration
    from loom.config import Settings
    from loom.paths import Folders
    from loom.runtime.model_manager import ModelManager

# Returned by ``fingerprint`` when a node must run every time (ComfyUI returns NaN for this).
ALWAYS_RUN = object()


class Interrupted(Exception):
    """Raised inside a node when the user interrupts the prompt being executed."""


@dataclass(frozen=True)
class Output:
    type: str
    name: str | None = None
    tooltip: str | None = None
    is_list: bool = False

    @property
    def label(self) -> str:
        return self.name or self.type


@dataclass(frozen=True)
class Allocation:
    """What a node's outputs will hold, estimated before it runs (see :meth:`Node.allocation`).

    ``shapes`` has one entry per output: the shape of its tensor (IMAGE ``[B, H, W, C]``, MASK
    ``[B, H, W]``, LATENT ``[B, C, H/8, W/8]`` of its samples) or None when unknown or not a
    tensor. ``inputs`` names the inputs that set the size: the error names them.
    """

    shapes: tuple[tuple[int, ...] | None, ...]
    inputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelUse:
    """What a node will compute with, declared before it runs (see :meth:`Node.uses`).

    ``models``: the MODEL, CLIP, VAE, UPSCALE_MODEL… values it will use together (or torch
    modules, or ``(module, patches)`` pairs); ``working_bytes``: an estimate of the device memory
    its activations need on top of the weights. The model manager places them all at once and
    makes room for the working memory before ``run`` starts.
    """

    models: tuple = ()
    working_bytes: int = 0


@dataclass
class NodeResult:
    """What ``run`` returns when it has UI output (images to show, text) besides its outputs."""

    outputs: tuple = ()
    ui: dict[str, Any] | None = None


class ProgressSink:
    """Receives per-node progress. The executor's sink turns it into ``progress`` events."""

    def __call__(self, value: int, total: int, preview: Any = None) -> None:  # pragma: no cover
        pass


@dataclass
class RunContext:
    """What the executor hands a running node. Defaults make nodes callable in unit tests."""

    node_id: str = ""
    prompt_id: str = ""
    paths: Folders | None = None  # models, input, output and temp folders
    models: ModelManager | None = None  # the runtime's model manager (GPU placement)
    settings: Settings | None = None
    interrupt: threading.Event = field(default_factory=threading.Event)
    on_progress: Callable[[int, int, Any], None] | None = None
    on_image: Callable[[Any], None] | None = None
    # Whether anyone will see step previews of this prompt: a node may skip making them.
    previews: bool = False
    on_file_saved: Callable[[str], None] | None = None
    # Set when the node runs again after running out of device memory: a node that can work in
    # tiles (VAE, upscalers) should now.
    low_memory: bool = False

    def saved_file(self, path: Any) -> None:
        """Tell Loom about a file this run wrote (in output/ or temp/). If Loom is killed before
        the prompt finishes, the file is removed before the prompt runs again: no orphans."""
        if self.on_file_saved is not None:
            self.on_file_saved(str(path))

    def check_interrupted(self) -> None:
        """Call from long loops; raises :class:`Interrupted` when the user pressed interrupt."""
        if self.interrupt.is_set():
            raise Interrupted()

    def progress(self, value: int, total: int, preview: Any = None) -> None:
        """Report progress (e.g. sampling step ``value`` of ``total``); also checks interrupt."""
        if self.on_progress is not None:
            self.on_progress(value, total, preview)
        self.check_interrupted()

    def send_image(self, image: Any) -> None:
        """Send an image (a PIL image, or an ``[H, W, C]`` tensor/array in 0..1) to the client
        that queued the prompt, over its websocket as a PNG frame, whether or not it asked for
        previews (ComfyUI's SaveImageWebsocket). Does nothing outside a server."""
        if self.on_image is not None:
            self.on_image(image)


class Node:
    """Base class of every node. Subclasses declare the class attributes below and ``run``.

    The usual shape: ``class Blur(Node, category="image", display_name="Blur Image"):`` with the
    node's description as its docstring (shown in the editor), then ``inputs``, ``outputs`` and
    ``run``. Setting the same names as class attributes works too.
    """

    inputs: ClassVar[Mapping[str, Input]] = {}
    outputs: ClassVar[tuple[Output, ...]] = ()
    category: ClassVar[str] = "utils"
    display_name: ClassVar[str | None] = None
    description: ClassVar[str] = ""
    output_node: ClassVar[bool] = False
    deprecated: ClassVar[bool] = False
    experimental: ClassVar[bool] = False
    # Bump when a node's behaviour changes so cached results from the old version are not reused.
    version: ClassVar[str] = "1"

    def __init_subclass__(cls, *, category: str | None = None, display_name: str | None = None,
                          **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if category is not None:
            cls.category = category
        if display_name is not None:
            cls.display_name = display_name

    def __init__(self, ctx: RunContext | None = None):
        self.ctx = ctx or RunContext()

    @classmethod
    def summary(cls) -> str:
        """What the editor shows about the node: ``description``, else the class's own docstring
        with its lines joined (a blank line starts a new paragraph)."""
        if cls.description:
            return cls.description
        paragraphs = inspect.cleandoc(cls.__doc__ or "").split("\n\n")
        return "\n".join(" ".join(p.split()) for p in paragraphs).strip()

    @classmethod
    def choice(cls, name: str, value: str) -> str:
        """``value`` if it is one of the choices of the Combo input ``name``, else a ValueError
        (validation checks prompts already; this covers ``run`` called directly)."""
        choices = cls.inputs[name].resolve_choices()
        if value not in choices:
            raise ValueError(f"{name} must be one of {choices}, not {value!r}")
        return value

    @classmethod
    def fingerprint(cls, ctx: RunContext, **inputs: Any) -> Any:
        """The "changed since last time" hook (ComfyUI's IS_CHANGED).

        Return something that changes when the node's result would, though its inputs did not
        (e.g. the hash or mtime of a file it reads), or :data:`ALWAYS_RUN`. It becomes part of
        the cache signature. ``inputs`` holds the constant (widget) inputs only.

        The default covers model files: the identity (name, size, mtime) of each file that the
        node's :class:`ModelFile` inputs name, so a loader runs again when its file is replaced
        on disk; None for a node without such inputs.
        """
        found = (model_fingerprint(ctx, inp.folder, inputs[name])
                 for name, inp in cls.inputs.items() if isinstance(inp, ModelFile) and name in inputs)
        return tuple(f for f in found if f is not None) or None  # a missing file fails validation

    @classmethod
    def allocation(cls, ctx: RunContext, **inputs: Any) -> Allocation | None:
        """The memory a node's outputs will take, for the per-prompt budget checked at
        validation (declare it on nodes that allocate from their inputs: sizes, batch sizes,
        scale factors). ``inputs`` holds the constants, and for each linked input the shape
        the upstream node's estimate gave that output, or None when it is unknown. Return
        None when there is nothing to say."""
        return None

    def uses(self, **inputs: Any) -> ModelUse | None:
        """The models this run will compute with and its working memory (inputs as ``run``
        gets them), so the model manager can make room first. None: nothing to declare."""
        return None

    @classmethod
    def validate_inputs(cls, ctx: RunContext, **inputs: Any) -> str | None:
        """Extra checks on constant inputs at validation time; return an error message or None."""
        return None

    def run(self, **inputs: Any) -> tuple | NodeResult:
        raise NotImplementedError(f"{type(self).__name__} does not implement run()")

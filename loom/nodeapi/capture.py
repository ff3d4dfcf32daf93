"""An output node that keeps the values it receives, for code that runs a graph in-process and
wants values back (tests, benchmarks, the demo model's evaluation): the engine hands none back.
"""

from __future__ import annotations

from typing import Any, ClassVar

from loom.nodeapi.inputs import Link
from loom.nodeapi.node import ALWAYS_RUN, Node


class Capture(Node):
    """Base of the classes :func:`capture_node` makes."""

    output_node = True
    outputs = ()
    always_run: ClassVar[bool] = True
    seen: ClassVar[dict[tuple[str, str], dict[str, Any]]]

    @classmethod
    def fingerprint(cls, ctx, **_):
        # A repeated graph is cached upstream, but the capture must still hand its values back.
        return ALWAYS_RUN if cls.always_run else None

    def run(self, **values):
        type(self).seen[(self.ctx.prompt_id, self.ctx.node_id)] = values
        return ()

    @classmethod
    def take(cls, prompt_id: str, node_id: str | None = None) -> dict[str, Any]:
        """Remove and return what the node ``node_id`` of prompt ``prompt_id`` received (by input
        name); without ``node_id``, the prompt must have exactly one capture node."""
        if node_id is None:
            keys = [key for key in cls.seen if key[0] == prompt_id]
            if len(keys) != 1:
                raise KeyError(f"{len(keys)} captures for prompt {prompt_id!r}; name the node")
            return cls.seen.pop(keys[0])
        return cls.seen.pop((prompt_id, node_id))


def capture_node(class_type: str, *, always_run: bool = True, **types: str) -> type[Capture]:
    """A node class named ``class_type`` with one linked input per keyword (input name = its
    type, e.g. ``latent="LATENT"``). Register it, run graphs through it, and read each run's values
    with ``take``. With ``always_run`` it runs even when everything upstream is cached."""
    inputs = {name: Link(kind) for name, kind in types.items()}
    return type(class_type, (Capture,), {"inputs": inputs, "always_run": always_run, "seen": {},
                                         "__module__": __name__})

"""The per-prompt memory budget, checked at validation from the nodes' declared estimates.

A node that allocates from its inputs (EmptyImage's width × height × batch_size, an upscale's
factor) declares :meth:`~loom.nodeapi.Node.allocation`: the shapes of its outputs, given its
constants and the estimated shapes of its linked inputs. Validation walks the prompt in run
order, propagates the shapes, and refuses a prompt whose outputs would not fit the budget (the
executor holds every output of a prompt until it ends) before anything allocates, naming the
node, the inputs that set the size and the limit. Nodes without an estimate count as nothing,
and what they output is unknown to the nodes after them.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from loom.engine.order import postorder
from loom.graph.errors import NodeError
from loom.nodeapi.guard import reraise_if_fatal
from loom.nodeapi.node import Allocation

log = logging.getLogger("loom.engine")

BYTES_PER_ELEMENT = 4  # IMAGE, MASK and LATENT are float32 tensors
SETTING = "--max-prompt-memory-mb"


def budget_bytes(settings: Any) -> int:
    """``settings.max_prompt_memory_mb``, or half of this machine's memory when unset."""
    mb = getattr(settings, "max_prompt_memory_mb", None)
    if mb:
        return int(mb * 2**20)
    try:
        import psutil

        return psutil.virtual_memory().total // 2
    except Exception:  # noqa: BLE001 - no psutil or no /proc: a generous fixed budget
        return 16 * 2**30


def check_allocations(specs: dict, outputs: list[str], ctx: Any) -> dict[str, NodeError]:
    """Errors by node id for the nodes whose outputs would overrun the budget (none: fits).
    ``specs`` are the validated :class:`~loom.engine.validate.NodeSpec` by node id."""
    budget = budget_bytes(ctx.settings if ctx is not None else None)
    shapes: dict[str, tuple] = {}
    total = 0
    for node_id in postorder(specs, outputs):
        spec = specs[node_id]
        estimate = _estimate(spec, shapes, ctx)
        if estimate is None:
            continue
        sizes = [_nbytes(s) for s in estimate.shapes if s is not None]
        if any(n is None for n in sizes):
            continue  # a size that comes from a link with no estimate (a primitive node): unknown
        shapes[node_id] = estimate.shapes
        size = sum(sizes)
        total += size
        if size > budget or total > budget:
            return {
                node_id: NodeError(
                    "allocation_over_budget",
                    _message(spec, estimate, size, total, budget),
                    estimate.inputs[0] if estimate.inputs else "",
                    {
                        "input_name": estimate.inputs[0] if estimate.inputs else None,
                        "estimated_bytes": size,
                        "limit_bytes": budget,
                    },
                )
            }
    return {}


def _estimate(spec, shapes: dict[str, tuple], ctx: Any) -> Allocation | None:
    inputs = dict(spec.consts)
    for name, link in spec.links.items():
        upstream = shapes.get(link.node_id)
        inputs[name] = upstream[link.slot] if upstream and link.slot < len(upstream) else None
    try:
        estimate = spec.cls.allocation(ctx, **inputs)
    except BaseException as e:  # a plugin's estimate that fails only loses the estimate
        reraise_if_fatal(e)
        log.warning("allocation estimate of %s (node %s) failed: %s", spec.class_type, spec.node_id, e)
        return None
    if not isinstance(estimate, Allocation):
        return None
    return estimate


def _nbytes(shape: tuple) -> int | None:
    """Bytes of a float32 tensor of ``shape``; None when a dimension is not known."""
    try:
        dims = [max(0, int(d)) for d in shape]
    except (TypeError, ValueError, OverflowError):
        return None
    return math.prod(dims) * BYTES_PER_ELEMENT


def _message(spec, estimate: Allocation, size: int, total: int, budget: int) -> str:
    cause = ", ".join(
        f"{name}={spec.consts[name]}" if name in spec.consts else name for name in estimate.inputs
    )
    cause = f" (set by {cause})" if cause else ""
    limit = f"the per-prompt memory limit of {format_bytes(budget)} ({SETTING})"
    if size > budget:
        return f"{spec.class_type} would allocate {format_bytes(size)}{cause}, over {limit}"
    return (
        f"With {spec.class_type}'s {format_bytes(size)}{cause}, the prompt's outputs would "
        f"take {format_bytes(total)}, over {limit}"
    )


def format_bytes(n: int) -> str:
    for unit, scale in (("TB", 2**40), ("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


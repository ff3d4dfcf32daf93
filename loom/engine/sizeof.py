"""Approximate RAM held by a node's outputs, for the cache's budgets.

Duck-typed so the engine need not import torch or numpy: tensors report
``element_size() * nelement()``, arrays ``nbytes``; objects may define ``loom_sizeof()``.
Model wrappers define ``loom_modules()`` (their torch modules) instead: many outputs share one
set of weights (a checkpoint's MODEL and every LoRA-patched MODEL made from it), so weights are
counted once per module by :func:`modules_of`, not per output.
"""

from __future__ import annotations

import sys
from typing import Any


def sizeof(value: Any, _depth: int = 0) -> int:
    if _depth > 6:
        return 0
    custom = getattr(value, "loom_sizeof", None)
    if callable(custom):
        return int(custom())
    if hasattr(value, "element_size") and hasattr(value, "nelement"):
        try:
            return int(value.element_size() * value.nelement())
        except Exception:
            return 0
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if isinstance(value, (bytes, bytearray, str)):
        return len(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return sys.getsizeof(value) + sum(sizeof(v, _depth + 1) for v in value)
    if isinstance(value, dict):
        return sys.getsizeof(value) + sum(sizeof(v, _depth + 1) for v in value.values())
    return sys.getsizeof(value)


def modules_of(value: Any, _depth: int = 0) -> dict[int, tuple[Any, int]]:
    """``{id(module): (module, bytes of its parameters and buffers)}`` of the model modules
    that ``value`` (a node's outputs) holds."""
    found: dict[int, tuple[Any, int]] = {}
    if _depth > 6:
        return found
    modules = getattr(value, "loom_modules", None)
    if callable(modules):
        for module in modules():
            if module is not None and id(module) not in found:
                found[id(module)] = (module, _module_bytes(module))
    elif isinstance(value, (list, tuple)):
        for v in value:
            found.update(modules_of(v, _depth + 1))
    elif isinstance(value, dict):
        for v in value.values():
            found.update(modules_of(v, _depth + 1))
    return found


def _module_bytes(module: Any) -> int:
    total = 0
    for getter in ("parameters", "buffers"):
        fn = getattr(module, getter, None)
        if callable(fn):
            total += sum(sizeof(t) for t in fn())
    return total

"""Approximate RAM held by a node's outputs, for the cache's budgets.

Duck-typed so the engine need not import torch or numpy: a tensor counts its whole storage
(a slice or view keeps all of it alive; an ``expand``ed one holds only the small original),
arrays their base buffer, PIL images their pixels; objects may define ``loom_sizeof()``, and
any other object is counted through its attributes, so a plugin's wrapper around a tensor is not
taken for a few bytes. Each buffer is counted once per call however often it appears.
Model wrappers define ``loom_modules()`` (their torch modules) instead, and a bare torch module
counts as one: many outputs share one set of weights (a checkpoint's MODEL and every
LoRA-patched MODEL made from it), so weights are counted once per module by :func:`modules_of`,
not per output.
"""

from __future__ import annotations

import sys
from typing import Any

# Objects looked at per call, at most: an output that reaches a large object graph is not
# walked whole (what lies beyond is not counted).
MAX_VISITS = 20_000


def sizeof(value: Any, _depth: int = 0, _seen: set | None = None) -> int:
    seen = set() if _seen is None else _seen
    if _depth > 8 or id(value) in seen or len(seen) > MAX_VISITS:
        return 0
    seen.add(id(value))
    custom = getattr(value, "loom_sizeof", None)
    if callable(custom):
        return int(custom())
    if _is_module(value):
        return 0  # weights: counted by modules_of
    if hasattr(value, "element_size") and hasattr(value, "nelement"):
        return _tensor_bytes(value, seen)
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        base = getattr(value, "base", None)  # a numpy view keeps its base alive
        if base is not None and isinstance(getattr(base, "nbytes", None), int):
            return sizeof(base, _depth + 1, seen)
        return nbytes
    if isinstance(value, (bytes, bytearray, str)):
        return sys.getsizeof(value)
    if isinstance(value, (int, float, bool, complex, type(None))):
        return sys.getsizeof(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return sys.getsizeof(value) + sum(sizeof(v, _depth + 1, seen) for v in value)
    if isinstance(value, dict):
        return sys.getsizeof(value) + sum(sizeof(k, _depth + 1, seen) + sizeof(v, _depth + 1, seen)
                                          for k, v in value.items())
    if callable(getattr(value, "getbands", None)) and isinstance(getattr(value, "width", None), int):
        # A PIL image: its pixels live in C memory that getsizeof does not see.
        return sys.getsizeof(value) + value.width * value.height * 4  # at most 4 bytes a pixel
    if isinstance(value, type) or callable(value) and not hasattr(value, "__dict__"):
        return sys.getsizeof(value)
    total = sys.getsizeof(value)
    attrs = getattr(value, "__dict__", None)
    if isinstance(attrs, dict):
        total += sum(sizeof(v, _depth + 1, seen) for v in attrs.values())
    for name in getattr(type(value), "__slots__", ()):
        if isinstance(name, str):
            total += sizeof(getattr(value, name, None), _depth + 1, seen)
    return total


def _tensor_bytes(tensor: Any, seen: set) -> int:
    try:
        storage = tensor.untyped_storage()
        key = ("storage", storage.data_ptr(), str(tensor.device))
        if key in seen:
            return 0
        seen.add(key)
        return int(storage.nbytes())
    except Exception:  # sparse, nested, meta, or not a torch tensor
        try:
            return int(tensor.element_size() * tensor.nelement())
        except Exception:
            return 0


def _is_module(value: Any) -> bool:
    """A torch ``nn.Module`` (duck-typed): weights, not plain output bytes."""
    return all(callable(getattr(value, name, None))
               for name in ("parameters", "buffers", "named_modules", "state_dict"))


def modules_of(value: Any, _depth: int = 0, _seen: set | None = None) -> dict[int, tuple[Any, int]]:
    """``{id(module): (module, bytes of its parameters and buffers)}`` of the model modules
    that ``value`` (a node's outputs) holds, also inside a plugin's own objects."""
    found: dict[int, tuple[Any, int]] = {}
    seen = set() if _seen is None else _seen
    if _depth > 8 or id(value) in seen or len(seen) > MAX_VISITS:
        return found
    seen.add(id(value))
    modules = getattr(value, "loom_modules", None)
    if callable(modules):
        for module in modules():
            if module is not None and id(module) not in found:
                found[id(module)] = (module, _module_bytes(module))
    elif _is_module(value):
        found[id(value)] = (value, _module_bytes(value))
    elif isinstance(value, (list, tuple, set, frozenset)):
        for v in value:
            found.update(modules_of(v, _depth + 1, seen))
    elif isinstance(value, dict):
        for v in value.values():
            found.update(modules_of(v, _depth + 1, seen))
    elif not isinstance(value, (str, bytes, bytearray, int, float, bool, type(None), type)) \
            and not hasattr(value, "element_size") and not isinstance(getattr(value, "nbytes", None), int):
        attrs = getattr(value, "__dict__", None)
        for v in (attrs.values() if isinstance(attrs, dict) else ()):
            found.update(modules_of(v, _depth + 1, seen))
    return found


def _module_bytes(module: Any) -> int:
    total, seen = 0, set()
    for getter in ("parameters", "buffers"):
        fn = getattr(module, getter, None)
        if callable(fn):
            total += sum(_tensor_bytes(t, seen) for t in fn())
    return total

"""Approximate RAM held by a node's outputs, for the cache's byte budget.

Duck-typed so the engine need not import torch or numpy: tensors report
``element_size() * nelement()``, arrays ``nbytes``; objects may define ``loom_sizeof()``
(models owned by the model manager return 0: their weights are budgeted there, not here).
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

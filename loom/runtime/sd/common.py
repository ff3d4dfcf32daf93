"""Small shared helpers of the SD runtime: the model manager to use, the device policy."""

from __future__ import annotations

import threading

from loom.nodeapi.node import RunContext
from loom.runtime.devices import DevicePolicy
from loom.runtime.model_manager import ModelManager

_default: ModelManager | None = None
_lock = threading.Lock()


def default_manager() -> ModelManager:
    """A process-wide manager for code run without an executor (unit tests, scripts)."""
    global _default
    with _lock:
        if _default is None:
            _default = ModelManager()
        return _default


def manager_of(ctx: RunContext | None) -> ModelManager:
    """The run context's model manager, or the default one when a node is called bare."""
    return (ctx.models if ctx is not None else None) or default_manager()


def policy_of(ctx: RunContext | None) -> DevicePolicy:
    return manager_of(ctx).policy

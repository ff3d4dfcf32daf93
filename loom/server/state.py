"""What one running server holds, kept on the aiohttp app (never in module globals)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from loom.config import Settings
from loom.nodeapi.node import Node, RunContext
from loom.nodeapi.registry import NodeRegistry
from loom.server.ws import Hub
from loom.store import Store


class LazyModelManager:
    """The runtime's ModelManager, created on first use: a server whose nodes never touch a
    model (tests, a CPU box running image nodes) does not pay for importing torch."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self._manager: Any = None
        self._lock = threading.Lock()

    @property
    def created(self) -> bool:
        return self._manager is not None

    def get(self) -> Any:
        if self._manager is None:
            with self._lock:
                if self._manager is None:
                    from loom.runtime.devices import DevicePolicy
                    from loom.runtime.model_manager import ModelManager
                    from loom.runtime.vram import parse_gb

                    s = self._settings
                    cpu = s.cpu or s.vram == "cpu"
                    self._manager = ModelManager(DevicePolicy.detect(force_cpu=cpu), mode=s.vram,
                                                 reserve_bytes=parse_gb(s.reserve_vram_gb))
        return self._manager

    def run_node(self, node: Any, inputs: dict, label: str) -> Any:
        """Run a node through the manager (placement, working memory, OOM retry); a node that
        declares no models while none is loaded runs bare, without importing torch."""
        if self._manager is None and type(node).uses is Node.uses:
            return node.run(**inputs)
        return self.get().run_node(node, inputs, label)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.get(), name)


@dataclass
class AppState:
    settings: Settings
    registry: NodeRegistry
    hub: Hub
    models: LazyModelManager
    store: Store | None = None
    workers: Any = None  # loom.server.worker.WorkerPool once started
    load_packs: bool = True
    started: float = 0.0
    # The folder of the browser app served at / (loom.server.front_end.web_root).
    web_root: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def node_ctx(self) -> RunContext:
        """The context validation and /object_info see (model folders for combo choices)."""
        return RunContext(paths=self.settings.folders, models=self.models, settings=self.settings)


STATE: web.AppKey[AppState] = web.AppKey("loom_state", AppState)


def get_state(request: web.Request) -> AppState:
    return request.app[STATE]

"""The output cache: node results keyed by the signature of their inputs, LRU-bounded.

Three bounds, least recently used out first: the entry count, the RAM that plain outputs hold
(images, latents, conditioning), and the RAM of the model weights that cached outputs keep
alive (a loader's MODEL/CLIP/VAE). Weights are counted once per module however many entries
share it, so a LoRA-patched MODEL does not count its checkpoint twice; switching between
checkpoints evicts the least recently used ones instead of keeping every model ever loaded.
The newest entry is always kept, so one model bigger than the budget is still reused by the
next prompt. Thread-safe: the server's ``/free`` may clear it while a worker runs.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from loom.engine.sizeof import modules_of, sizeof


@dataclass
class CacheEntry:
    outputs: tuple
    ui: dict | None
    size: int
    modules: dict[int, int]  # id(module) -> bytes, for the model modules the outputs hold


class OutputCache:
    def __init__(self, max_entries: int = 10_000, max_bytes: int = 4 << 30,
                 max_model_bytes: int = 16 << 30):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_model_bytes = max_model_bytes
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._bytes = 0
        self._module_refs: dict[int, list[int]] = {}  # id(module) -> [entries holding it, bytes]
        self._model_bytes = 0
        self._protected: set[int] = set()
        self._lock = threading.Lock()
        self.evictions = 0

    def get(self, signature: str) -> CacheEntry | None:
        with self._lock:
            entry = self._entries.get(signature)
            if entry is not None:
                self._entries.move_to_end(signature)
            return entry

    def __contains__(self, signature: str) -> bool:
        with self._lock:
            return signature in self._entries

    def put(self, signature: str, outputs: tuple, ui: dict | None) -> None:
        size = sizeof(outputs) + (sizeof(ui) if ui else 0)
        modules = {key: nbytes for key, (_, nbytes) in modules_of(outputs).items()}
        with self._lock:
            old = self._entries.pop(signature, None)
            if old is not None:
                self._forget(old)
            if size > self.max_bytes or self.max_entries <= 0:
                return  # larger than the whole budget: keeping it would evict everything else
            entry = CacheEntry(outputs, ui, size, modules)
            self._entries[signature] = entry
            self._bytes += size
            for key, nbytes in modules.items():
                ref = self._module_refs.setdefault(key, [0, nbytes])
                if ref[0] == 0:
                    self._model_bytes += nbytes
                ref[0] += 1
            if modules:
                # The newest model is the one prompts are using: never evicted for its size.
                self._protected = set(modules)
            self._evict_while(lambda: len(self._entries) > self.max_entries, lambda e: True)
            # Model entries hold (almost) no plain bytes: evicting them would not help.
            self._evict_while(lambda: self._bytes > self.max_bytes, lambda e: not e.modules)
            self._evict_models()

    def _evict_while(self, over, evictable) -> None:
        """Evict the least recently used evictable entries (never the newest) while ``over()``."""
        while over() and len(self._entries) > 1:
            newest = next(reversed(self._entries))
            victim = next((sig for sig, e in self._entries.items()
                           if sig != newest and evictable(e)), None)
            if victim is None:
                return
            self._forget(self._entries.pop(victim))
            self.evictions += 1

    def _evict_models(self) -> None:
        """While over the weights budget, drop the least recently used model: every entry that
        holds it (dropping only some would free nothing)."""
        while self._model_bytes > self.max_model_bytes:
            last_use: dict[int, int] = {}
            for position, entry in enumerate(self._entries.values()):
                for key in entry.modules:
                    last_use[key] = position
            candidates = [k for k in last_use if k not in self._protected]
            if not candidates:
                return
            victim = min(candidates, key=last_use.__getitem__)
            for sig in [s for s, e in self._entries.items() if victim in e.modules]:
                self._forget(self._entries.pop(sig))
                self.evictions += 1

    def _forget(self, entry: CacheEntry) -> None:
        self._bytes -= entry.size
        for key in entry.modules:
            ref = self._module_refs[key]
            ref[0] -= 1
            if ref[0] == 0:
                self._model_bytes -= ref[1]
                del self._module_refs[key]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
            self._module_refs.clear()
            self._model_bytes = 0
            self._protected = set()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"entries": len(self._entries), "bytes": self._bytes,
                    "max_entries": self.max_entries, "max_bytes": self.max_bytes,
                    "model_bytes": self._model_bytes, "max_model_bytes": self.max_model_bytes,
                    "models": len(self._module_refs), "evictions": self.evictions}

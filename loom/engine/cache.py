"""The output cache: node results keyed by the signature of their inputs, LRU-bounded.

Bounded both by entry count and by an estimate of the RAM the outputs hold, so a session of
many large images cannot grow without limit. Thread-safe: the server's ``/free`` may clear it
while a worker runs.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from loom.engine.sizeof import sizeof


@dataclass
class CacheEntry:
    outputs: tuple
    ui: dict | None
    size: int


class OutputCache:
    def __init__(self, max_entries: int = 10_000, max_bytes: int = 4 << 30):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._bytes = 0
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
        with self._lock:
            old = self._entries.pop(signature, None)
            if old is not None:
                self._bytes -= old.size
            if size > self.max_bytes or self.max_entries <= 0:
                return  # larger than the whole budget: keeping it would evict everything else
            self._entries[signature] = CacheEntry(outputs, ui, size)
            self._bytes += size
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.size
                self.evictions += 1

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"entries": len(self._entries), "bytes": self._bytes,
                    "max_entries": self.max_entries, "max_bytes": self.max_bytes,
                    "evictions": self.evictions}

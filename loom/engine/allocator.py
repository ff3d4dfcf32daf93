"""Give memory the process freed back to the operating system.

Tensors live in memory from the C allocator. glibc's keeps what is freed for reuse: after an
mmapped chunk is freed it raises its mmap threshold, so later images and latents of a few MB come
from its heaps, and freed space inside those heaps stays counted in the RSS. A cache that evicts
as it should then still looks like a leak (measured: 256 MB budget, RSS grew ~80 MB past budget
over 200 distinct prompts, and ``/free`` gave nothing back). ``malloc_trim(0)`` hands the free
pages back. It takes a few milliseconds, so it runs after a prompt that dropped a lot
(:class:`Trimmer`), and on ``/free``. Lowering the mmap threshold instead would also plateau,
but made memory-bound CPU work ~30% slower (every large tensor a fresh mmap + page faults).

Elsewhere (musl, macOS, Windows) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import sys
import threading

log = logging.getLogger("loom.engine")

_libc = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _malloc_trim = _libc.malloc_trim
        _malloc_trim.argtypes = [ctypes.c_size_t]
        _malloc_trim.restype = ctypes.c_int
    except (OSError, AttributeError):  # not glibc
        _libc = None


def trim() -> bool:
    """Return free heap pages to the OS; True when the C library could."""
    if _libc is None:
        return False
    return bool(_malloc_trim(0))


def release(collect: bool = True) -> None:
    """Everything unreachable freed (``gc``), then handed back to the OS."""
    if collect:
        gc.collect()
    trim()


class Trimmer:
    """Trims once at least ``threshold`` bytes were dropped (by cache evictions, say) since the
    last trim. Thread-safe; the trim itself runs outside the lock."""

    def __init__(self, threshold: int = 64 << 20):
        self.threshold = threshold
        self._dropped = 0
        self._lock = threading.Lock()

    def dropped(self, nbytes: int) -> None:
        with self._lock:
            self._dropped += max(0, nbytes)

    def maybe_trim(self) -> bool:
        with self._lock:
            if self._dropped < self.threshold:
                return False
            self._dropped = 0
        return trim()

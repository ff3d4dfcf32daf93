"""Models loaded from files, one copy per process: the same file with the same options gives
the same objects to every node, prompt and worker.

Each worker has its own output cache, so without this two workers running the same checkpoint
would each load it (and hold it twice). Entries hold the loaded wrappers weakly: while any
cache or running prompt holds them they are handed out again; once nobody does, the weights
are freed and the next request loads the file again. A file whose size or modification time
changed is loaded again (its old copy stays with whoever still holds it).

Weight patches (LoRAs) never change these objects: a patched MODEL is a new wrapper over the
same modules (see :mod:`loom.runtime.model_manager`), so patched and plain share the weights.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("loom.models")


@dataclass
class _Entry:
    stamp: tuple  # (size, mtime_ns) of the file when loaded
    refs: tuple  # a weak reference per value (None for a None value)
    single: bool  # the loader returned one value, not a tuple


class LoadedModels:
    def __init__(self, manager: Any = None):
        self._manager = weakref.ref(manager) if manager is not None else None
        self._entries: dict[Hashable, _Entry] = {}
        self._locks: dict[Hashable, threading.Lock] = {}
        self._guard = threading.Lock()
        self.loads: Counter = Counter()  # (kind, file) -> times it was loaded from disk

    def get(self, kind: str, path: str | Path, load: Callable[[], Any], *, options: Hashable = ()) -> Any:
        """What ``load()`` returns for ``path`` with ``options``: the loaded copy when one is
        alive and the file unchanged, else a fresh load (one thread loads, others wait)."""
        path = Path(path).resolve()
        key = (kind, str(path), options)
        stamp = _stamp(path)
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            with self._guard:
                entry = self._entries.get(key)
            if entry is not None:
                values = _alive(entry)
                if values is not None and entry.stamp == stamp:
                    return values[0] if entry.single else values
                if values is not None:
                    log.info("%s changed on disk: loading it again", path.name)
            result = load()
            single = not isinstance(result, tuple)
            values = (result,) if single else result
            refs = tuple(None if v is None else weakref.ref(v) for v in values)
            with self._guard:
                self._entries[key] = _Entry(stamp, refs, single)
                self.loads[(kind, path.name)] += 1
            self._name_modules(path.name, values)
            return result

    def describe(self) -> list[dict]:
        """The files whose models are loaded now (for ``/system_stats``)."""
        with self._guard:
            items = list(self._entries.items())
        out = []
        for (kind, path, _options), entry in items:
            values = _alive(entry)
            if values is not None:
                modules = {id(m): m for v in values for m in _modules(v)}
                out.append(
                    {
                        "kind": kind,
                        "file": Path(path).name,
                        "loads": self.loads[(kind, Path(path).name)],
                        "bytes": sum(
                            t.element_size() * t.nelement()
                            for m in modules.values()
                            for t in (*m.parameters(), *m.buffers())
                        ),
                    }
                )
        return out

    def _name_modules(self, file: str, values) -> None:
        manager = self._manager() if self._manager is not None else None
        if manager is None:
            return
        for value in values:
            for i, module in enumerate(_modules(value)):
                part = type(module).__name__
                manager.name(module, f"{file} ({part}{'' if i == 0 else f' {i + 1}'})")


def _modules(value) -> tuple:
    modules = getattr(value, "loom_modules", None)
    if callable(modules):
        return tuple(modules())
    module = getattr(value, "module", None)  # upscale / face models
    return (module,) if module is not None and hasattr(module, "parameters") else ()


def _alive(entry: _Entry) -> tuple | None:
    values = tuple(None if r is None else r() for r in entry.refs)
    if any(r is not None and v is None for r, v in zip(entry.refs, values, strict=True)):
        return None
    return values


def _stamp(path: Path) -> tuple:
    try:
        st = path.stat()
    except OSError:
        return ()
    return (st.st_size, st.st_mtime_ns)

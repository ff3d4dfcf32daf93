"""SQLite persistence: the prompt queue, history, saved workflows and settings.

What the user made survives a crash or restart. :class:`Store` opens the database once and
hands out the parts.
"""

from __future__ import annotations

from pathlib import Path

from loom.store.checkup import DatabaseProblem
from loom.store.db import Database
from loom.store.history import History
from loom.store.jobs import Jobs
from loom.store.queue import PromptQueue, QueueItem
from loom.store.userdata import UserData


class StoreInUse(RuntimeError):
    """Another Loom server already uses this database."""


class Store:
    def __init__(self, path: Path | str, *, history_max_items: int = 10_000,
                 exclusive: bool = False, reset_damaged: bool = False):
        """``exclusive``: hold a lock next to the database for as long as it is open, so that
        a second server on the same user folder refuses to start (its start-up recovery would
        put the first one's running prompts back in the queue). ``reset_damaged``: set a
        damaged or foreign database file aside and start a fresh one (see
        :mod:`loom.store.checkup`) rather than refuse to open it."""
        self._lock_file = _lock(Path(path)) if exclusive else None
        try:
            self.db = Database(path, reset_damaged=reset_damaged)
        except BaseException:
            self._release_lock()
            raise
        self.queue = PromptQueue(self.db, history_max_items=history_max_items)
        self.history = History(self.db, max_items=history_max_items)
        self.userdata = UserData(self.db)
        self.jobs = Jobs(self.db)

    def close(self) -> None:
        self.db.close()
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # releases the lock
            self._lock_file = None


def _lock(db_path: Path):
    db_path.parent.mkdir(parents=True, exist_ok=True)
    f = open(db_path.with_name(db_path.name + ".lock"), "a+b")
    try:
        import fcntl
    except ImportError:  # Windows: no advisory lock; SQLite still keeps the data consistent
        return f
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise StoreInUse(f"another Loom server is using {db_path}; stop it, or give this one "
                         "another --user-dir") from None
    return f


__all__ = ["Database", "DatabaseProblem", "History", "Jobs", "PromptQueue", "QueueItem", "Store",
           "StoreInUse", "UserData"]

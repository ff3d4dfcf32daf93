"""SQLite persistence: the prompt queue, history, saved workflows and settings.

What the user made survives a crash or restart. :class:`Store` opens the database once and
hands out the parts.
"""

from __future__ import annotations

from pathlib import Path

from loom.store.db import Database
from loom.store.history import History
from loom.store.queue import PromptQueue, QueueItem
from loom.store.userdata import UserData


class Store:
    def __init__(self, path: Path | str, *, history_max_items: int = 10_000):
        self.db = Database(path)
        self.queue = PromptQueue(self.db, history_max_items=history_max_items)
        self.history = History(self.db, max_items=history_max_items)
        self.userdata = UserData(self.db)

    def close(self) -> None:
        self.db.close()


__all__ = ["Database", "History", "PromptQueue", "QueueItem", "Store", "UserData"]

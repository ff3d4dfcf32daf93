"""The SQLite database under the user directory: one file holds queue, history and user data.

One connection, shared by the event loop and the worker threads and guarded by a lock: every
statement here takes well under a millisecond, so a pool would add more than it saves. WAL mode
with ``synchronous=NORMAL``: a commit survives the process being killed (``kill -9``), only a
power cut can lose the last few. Transactions start with ``BEGIN IMMEDIATE`` so that, should a
second process ever share the file (workers on other machines are planned), a claim cannot race.

The schema is versioned with ``PRAGMA user_version``: :data:`MIGRATIONS` lists the steps, and a
database is brought forward one step at a time when it is opened. Before that, the file is checked
read-only (:mod:`loom.store.checkup`): Loom changes nothing in a file that is not its own or not
intact.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from loom.store import checkup

log = logging.getLogger("loom.store")


def dumps(value) -> str:
    """Compact JSON, as stored (and served) by the store."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)

# Each entry moves the schema from version i to i + 1. Never edit a released step: add one.
MIGRATIONS: list[str] = [
    # 1: queue, history, user files, settings
    """
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE queue (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        prompt_id TEXT NOT NULL UNIQUE,
        number REAL NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',      -- pending | running
        worker TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,        -- times a crash interrupted it
        prompt TEXT NOT NULL,                       -- JSON: the API prompt
        extra_data TEXT NOT NULL,                   -- JSON object
        outputs TEXT NOT NULL,                      -- JSON list: output node ids to execute
        client_id TEXT,
        created REAL NOT NULL,
        claimed REAL
    );
    CREATE INDEX queue_order ON queue (state, number, seq);
    CREATE TABLE history (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        prompt_id TEXT NOT NULL UNIQUE,
        entry TEXT NOT NULL,                        -- JSON: ComfyUI's history entry
        status TEXT NOT NULL,
        completed REAL NOT NULL
    );
    CREATE TABLE history_files (
        prompt_id TEXT NOT NULL,
        node_id TEXT NOT NULL,
        kind TEXT NOT NULL,                         -- images, gifs, audio, ... (the UI key)
        filename TEXT NOT NULL,
        subfolder TEXT NOT NULL,
        type TEXT NOT NULL                          -- output | temp | input
    );
    CREATE INDEX history_files_prompt ON history_files (prompt_id);
    CREATE TABLE userdata (
        user TEXT NOT NULL,
        path TEXT NOT NULL,
        content BLOB NOT NULL,
        created REAL NOT NULL,
        modified REAL NOT NULL,
        PRIMARY KEY (user, path)
    );
    CREATE TABLE settings (
        user TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,                        -- JSON
        PRIMARY KEY (user, key)
    );
    """,
    # 2: mark the file as Loom's, so a start-up can tell it from another program's database
    f"PRAGMA application_id = {checkup.APPLICATION_ID};",
    # 3: files a running prompt wrote, until it finishes: a prompt killed by a crash has its
    # files removed before it runs again (no orphans)
    """
    CREATE TABLE attempt_files (
        prompt_id TEXT NOT NULL,
        path TEXT NOT NULL,
        PRIMARY KEY (prompt_id, path)
    );
    """,
]


@functools.cache
def schema_at(version: int) -> dict[str, list[str]]:
    """Loom's tables and their columns at a schema version (from :data:`MIGRATIONS`)."""
    conn = sqlite3.connect(":memory:")
    try:
        for step in MIGRATIONS[:version]:
            conn.executescript(step)
        return checkup.table_columns(conn)
    finally:
        conn.close()


class Database:
    """A thread-safe wrapper around one SQLite connection.

    A file that is damaged or not Loom's raises :class:`~loom.store.checkup.DatabaseProblem`,
    unchanged; with ``reset_damaged`` it is set aside instead, and a fresh database gets what
    could be read from it."""

    def __init__(self, path: Path | str, *, reset_damaged: bool = False):
        self.path = Path(path) if str(path) != ":memory:" else path
        set_aside = None
        if isinstance(self.path, Path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                checkup.inspect(self.path, schema_at, len(MIGRATIONS))
            except checkup.DatabaseProblem as e:
                if not reset_damaged:
                    raise
                set_aside = checkup.set_aside(self.path)
                log.warning("The database %s %s; it is kept as %s and Loom starts a fresh one",
                            self.path, e.what, set_aside)
                set_aside = None if e.foreign else set_aside
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None,
                                     timeout=30.0)
        self._lock = threading.RLock()
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self.migrate()
        if set_aside is not None:
            self._salvage(set_aside)

    def _salvage(self, damaged: Path) -> None:
        with self.tx() as c:
            counts = checkup.salvage(damaged, c, schema_at(len(MIGRATIONS)))
        if counts is None:
            return
        found = ", ".join(f"{n} from {t}" for t, n in counts.items() if n) or "nothing"
        log.warning("Recovered rows from %s: %s", damaged, found)

    @property
    def version(self) -> int:
        with self._lock:
            return self._conn.execute("PRAGMA user_version").fetchone()[0]

    def migrate(self) -> None:
        with self._lock:
            current = self.version
            if current > len(MIGRATIONS):
                raise RuntimeError(f"{self.path} has schema version {current}, newer than this Loom "
                                   f"knows ({len(MIGRATIONS)}): upgrade Loom or use another user dir")
            for version in range(current, len(MIGRATIONS)):
                log.info("Migrating %s to schema version %d", self.path, version + 1)
                # executescript commits on its own; the version bump is inside the script so a
                # crash mid-step leaves the old version and the step is retried whole.
                self._conn.executescript(
                    f"BEGIN IMMEDIATE;\n{MIGRATIONS[version]}\nPRAGMA user_version = {version + 1};\n"
                    "COMMIT;")

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: committed when the block ends, rolled back if it raises."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """The connection, for reads (each statement sees a consistent snapshot)."""
        with self._lock:
            yield self._conn

    def close(self) -> None:
        with self._lock:
            self._conn.close()

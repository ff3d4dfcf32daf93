"""Check that a database file is Loom's and intact before anything writes to it.

Opening a SQLite file for writing changes it (WAL mode, new tables), so a file that is damaged
or belongs to another program is looked at first, read-only: is it a SQLite file at all, is it
marked as Loom's (``PRAGMA application_id``, or Loom's tables at a known ``user_version`` for
files made before the mark), does ``PRAGMA quick_check`` find it sound. Any doubt stops the start
with a :class:`DatabaseProblem` that says what is wrong, where, and the way out; the file is
left as it was.

The way out, :func:`set_aside`, renames the file (with its ``-wal`` journal, which may hold the
last commits) to ``NAME.damaged-YYYYmmdd-HHMMSS`` so nothing is lost, and :func:`salvage` copies
into the fresh database every row SQLite can still read from a damaged Loom file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("loom.store")

# "LOOM" in ASCII: marks a SQLite file as a Loom database (PRAGMA application_id).
APPLICATION_ID = 0x4C4F4F4D
SQLITE_MAGIC = b"SQLite format 3\x00"
RESET_FLAG = "--reset-damaged-db"
# Journal files that belong to a database file and move with it.
_SIDECARS = ("-wal", "-shm", "-journal")


class DatabaseProblem(RuntimeError):
    """The database file cannot be used as it is; the message says why and what to do."""

    def __init__(self, path: Path, what: str, *, foreign: bool = False):
        self.path, self.what, self.foreign = path, what, foreign
        if foreign:
            way_out = (f"Give Loom another --user-dir, or move the file away; {RESET_FLAG} "
                       "renames it (keeping it next to the new one) and starts a fresh database")
        else:
            way_out = (f"Start Loom with {RESET_FLAG} to keep this file as {path.name}.damaged-"
                       "<time> and start a fresh database with everything SQLite can still read "
                       "from it, or move it aside yourself")
        super().__init__(f"the database {path} {what}. Loom has not changed it. {way_out}.")


def inspect(path: Path, schema_at: Callable[[int], dict[str, list[str]]], latest: int) -> None:
    """Raise :class:`DatabaseProblem` unless ``path`` is absent, empty, or a sound Loom
    database. ``schema_at(version)`` gives Loom's tables (name -> column names) at a schema
    version; ``latest`` is the newest version this Loom knows."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir():
        raise DatabaseProblem(path, "is a directory, not a database file")
    if not path.is_file():
        raise DatabaseProblem(path, "is not a regular file")
    try:
        with open(path, "rb") as f:
            head = f.read(100)
    except OSError as e:
        raise DatabaseProblem(path, f"cannot be read ({e.strerror})") from None
    if not head:
        return  # an empty file is a new database to SQLite too
    if not head.startswith(SQLITE_MAGIC):
        raise DatabaseProblem(path, f"is not a SQLite database (it starts with {head[:16]!r})")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as e:
        raise DatabaseProblem(path, f"cannot be opened ({e})") from None
    try:
        _check(conn, path, schema_at, latest)
    except sqlite3.DatabaseError as e:
        where = _truncation(path, head) or _unreadable(conn)
        raise DatabaseProblem(path, f"is damaged: SQLite reports {e!s:.300}"
                                    + (f" ({where})" if where else "")) from None
    finally:
        conn.close()


def _check(conn: sqlite3.Connection, path: Path, schema_at, latest: int) -> None:
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = table_columns(conn)
    if app_id not in (0, APPLICATION_ID):
        raise DatabaseProblem(path, f"belongs to another application (its application_id is "
                                    f"{app_id:#x}, Loom's is {APPLICATION_ID:#x})", foreign=True)
    if app_id == 0 and version == 0:
        if tables:
            raise DatabaseProblem(path, "is not a Loom database: it holds tables Loom did not "
                                        f"create ({_names(tables)})", foreign=True)
        return  # an empty SQLite file: Loom sets it up
    if version > latest:
        raise RuntimeError(f"{path} has schema version {version}, newer than this Loom knows "
                           f"({latest}): upgrade Loom or use another user dir")
    expected = schema_at(version)
    wrong = sorted(name for name, cols in expected.items() if tables.get(name) != cols)
    if wrong:
        if app_id == 0:
            raise DatabaseProblem(path, f"is not a Loom database (schema version {version}, but "
                                        f"its tables differ from Loom's: {', '.join(wrong)})",
                                  foreign=True)
        raise DatabaseProblem(path, f"is damaged: its tables {', '.join(wrong)} differ from "
                                    f"Loom's schema version {version}")
    started = time.perf_counter()
    problems = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
    if problems != ["ok"]:
        raise DatabaseProblem(path, "is damaged: SQLite's integrity check reports "
                                    + "; ".join(p[:200] for p in problems))
    if (took := time.perf_counter() - started) > 1:
        log.info("Checked %s in %.1f s", path, took)


def _truncation(path: Path, head: bytes) -> str:
    """Words for a file shorter than its header says (a copy cut short), else ''."""
    size, expected = path.stat().st_size, _header_size(head)
    if expected and size < expected:
        return f"the file has {size:,} bytes where its header says {expected:,}: cut short"
    return ""


def _header_size(head: bytes) -> int:
    """The file size a SQLite header states (page size x page count; 0 if unknown)."""
    if len(head) < 100 or not head.startswith(SQLITE_MAGIC):
        return 0
    page_size = int.from_bytes(head[16:18], "big")
    return (65536 if page_size == 1 else page_size) * int.from_bytes(head[28:32], "big")


def _unreadable(conn: sqlite3.Connection) -> str:
    """Which tables of a damaged file cannot be read to the end, as words."""
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    except sqlite3.DatabaseError:
        return "its list of tables cannot be read"
    bad = []
    for name in names:
        rows = 0
        try:
            for _ in conn.execute(f'SELECT * FROM "{name}"'):
                rows += 1
        except sqlite3.DatabaseError:
            bad.append(f"{name} after {rows} rows")
    return "unreadable: " + ", ".join(bad) if bad else ""


def table_columns(conn: sqlite3.Connection) -> dict[str, list[str]]:
    """Every table of a database (SQLite's own excepted) and its column names, in order."""
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"
                                        " AND name NOT LIKE 'sqlite_%'")]
    return {name: [r[1] for r in conn.execute(f'PRAGMA table_info("{name}")')] for name in names}


def _names(tables: dict) -> str:
    names = sorted(tables)
    return ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")


def set_aside(path: Path) -> Path:
    """Rename ``path`` (and its journal files) to ``NAME.damaged-TIME``; returns the new path."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while target.exists() or any(Path(f"{target}{s}").exists() for s in _SIDECARS):
        n += 1
        target = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    os.rename(path, target)
    for suffix in _SIDECARS:
        with contextlib.suppress(FileNotFoundError):
            os.rename(f"{path}{suffix}", f"{target}{suffix}")
    return target


def salvage(damaged: Path, into: sqlite3.Connection,
            tables: dict[str, list[str]]) -> dict[str, int] | None:
    """Copy the rows of ``tables`` (name -> columns of the new database) that SQLite can still
    read from the set-aside file ``damaged`` into ``into``; returns rows copied per table (None
    when ``damaged`` is no SQLite file at all).

    Works on a scratch copy, so the set-aside file stays exactly as it was. A truncated copy is
    padded back to the size its header states, which lets SQLite read the pages before the cut.
    Reading walks each table by rowid and steps over what it cannot read."""
    try:
        with open(damaged, "rb") as f:
            if not f.read(16).startswith(SQLITE_MAGIC):
                return None
    except OSError:  # a directory, say
        return None
    scratch = damaged.with_name(damaged.name + ".salvage")
    counts: dict[str, int] = {}
    try:
        shutil.copyfile(damaged, scratch)
        if Path(f"{damaged}-wal").is_file():
            shutil.copyfile(f"{damaged}-wal", f"{scratch}-wal")
        _pad_to_header_size(scratch)
        src = sqlite3.connect(f"{scratch.resolve().as_uri()}", uri=True)
        try:
            try:
                theirs = table_columns(src)
            except sqlite3.DatabaseError:
                return {}
            for name, columns in tables.items():
                shared = [c for c in columns if c in theirs.get(name, [])]
                if shared:
                    counts[name] = _copy_table(src, into, name, shared)
        finally:
            src.close()
    except (OSError, sqlite3.Error) as e:
        log.warning("Salvaging %s stopped early: %s", damaged, e)
    finally:
        for suffix in ("", *_SIDECARS):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{scratch}{suffix}")
    return counts


def _pad_to_header_size(path: Path) -> None:
    with open(path, "r+b") as f:
        expected = _header_size(f.read(100))
        if f.seek(0, os.SEEK_END) < expected <= 2**40:
            f.truncate(expected)


def _copy_table(src: sqlite3.Connection, into: sqlite3.Connection, table: str,
                columns: list[str]) -> int:
    cols = ", ".join(f'"{c}"' for c in columns)
    insert = (f'INSERT OR IGNORE INTO "{table}" (rowid, {cols}) '
              f"VALUES (?{', ?' * len(columns)})")
    select = f'SELECT rowid, {cols} FROM "{table}" WHERE rowid > ? ORDER BY rowid'
    copied, last, misses = 0, 0, 0  # Loom's rowids start at 1
    while misses < 100:
        try:
            for row in src.execute(select, (last,)):
                last = row[0]
                misses = 0
                copied += into.execute(insert, row).rowcount
            return copied
        except sqlite3.DatabaseError:
            # Unreadable from here on: step past it, one row at a time at first, then further.
            misses += 1
            last += 1 if misses <= 64 else 2 ** (misses - 64) * 64
    return copied

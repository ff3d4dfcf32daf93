"""Saved workflows and other user files, and the user's settings, in SQLite.

Files are keyed by (user, path) where path is a '/'-separated relative path such as
``workflows/portrait.json``. They live in the database rather than in ``user/``: a save is one
atomic transaction, and a half-written workflow cannot exist. Loom is single-user for now; the
user is always ``default`` but the key is there for when it is not.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from loom.store.db import Database, dumps

DEFAULT_USER = "default"
MAX_PATH_LENGTH = 1024


class UserPathError(ValueError):
    """A user file path is malformed (absolute, '..', empty parts, control characters)."""


class UserFileExists(FileExistsError):
    pass


def clean_path(path: str, *, allow_empty: bool = False) -> str:
    """Normalise a user file path; refuse anything that is not a plain relative path."""
    if not isinstance(path, str):
        raise UserPathError("path must be a string")
    if len(path) > MAX_PATH_LENGTH:
        raise UserPathError(f"path is longer than {MAX_PATH_LENGTH} characters")
    if any(ord(ch) < 32 for ch in path) or "\\" in path:
        raise UserPathError(f"invalid character in path {path!r}")
    if path.startswith("/"):
        raise UserPathError(f"absolute paths are not allowed: {path!r}")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise UserPathError(f"'..' is not allowed in paths: {path!r}")
    if not parts and not allow_empty:
        raise UserPathError("path is empty")
    return "/".join(parts)


@dataclass
class FileInfo:
    path: str
    size: int
    modified: float
    created: float

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "modified": self.modified,
                "created": self.created}


class UserData:
    def __init__(self, db: Database):
        self.db = db

    # -- files ------------------------------------------------------------------------------

    def list(self, directory: str, *, recurse: bool = True,
             user: str = DEFAULT_USER) -> list[FileInfo]:
        """Files under ``directory`` (paths relative to it), sorted. Without ``recurse`` only
        the files directly in it."""
        directory = clean_path(directory, allow_empty=True)
        prefix = directory + "/" if directory else ""
        with self.db.read() as c:
            rows = c.execute("SELECT path, length(content), modified, created FROM userdata"
                             " WHERE user = ? AND substr(path, 1, ?) = ? ORDER BY path",
                             (user, len(prefix), prefix)).fetchall()
        out = []
        for path, size, modified, created in rows:
            rel = path[len(prefix):]
            if not recurse and "/" in rel:
                continue
            out.append(FileInfo(rel, size, modified, created))
        return out

    def entries(self, directory: str, user: str = DEFAULT_USER) -> list[dict[str, Any]]:
        """Direct children of ``directory``: files and (implied) folders (``/v2/userdata``)."""
        directory = clean_path(directory, allow_empty=True)
        prefix = directory + "/" if directory else ""
        folders: dict[str, float] = {}
        files = []
        for info in self.list(directory, recurse=True, user=user):
            head, sep, _ = info.path.partition("/")
            if sep:
                folders[head] = max(folders.get(head, 0.0), info.modified)
            else:
                files.append({"name": info.path, "path": prefix + info.path, "type": "file",
                              "size": info.size, "modified": info.modified})
        dirs = [{"name": name, "path": prefix + name, "type": "directory", "modified": modified}
                for name, modified in sorted(folders.items())]
        return dirs + files

    def info(self, path: str, user: str = DEFAULT_USER) -> FileInfo | None:
        path = clean_path(path)
        with self.db.read() as c:
            row = c.execute("SELECT length(content), modified, created FROM userdata"
                            " WHERE user = ? AND path = ?", (user, path)).fetchone()
        return FileInfo(path, *row) if row else None

    def get(self, path: str, user: str = DEFAULT_USER) -> bytes | None:
        path = clean_path(path)
        with self.db.read() as c:
            row = c.execute("SELECT content FROM userdata WHERE user = ? AND path = ?",
                            (user, path)).fetchone()
        return bytes(row[0]) if row else None

    def put(self, path: str, content: bytes, *, overwrite: bool = True,
            user: str = DEFAULT_USER) -> FileInfo:
        """Save a file; UserFileExists when it exists and ``overwrite`` is false."""
        path = clean_path(path)
        self._check_not_a_folder(path, user)
        now = time.time()
        with self.db.tx() as c:
            row = c.execute("SELECT created FROM userdata WHERE user = ? AND path = ?",
                            (user, path)).fetchone()
            if row is not None and not overwrite:
                raise UserFileExists(f"{path} already exists")
            created = row[0] if row else now
            c.execute("INSERT OR REPLACE INTO userdata (user, path, content, created, modified)"
                      " VALUES (?, ?, ?, ?, ?)", (user, path, bytes(content), created, now))
        return FileInfo(path, len(content), now, created)

    def delete(self, path: str, user: str = DEFAULT_USER) -> bool:
        path = clean_path(path)
        with self.db.tx() as c:
            return c.execute("DELETE FROM userdata WHERE user = ? AND path = ?",
                             (user, path)).rowcount > 0

    def move(self, source: str, dest: str, *, overwrite: bool = True,
             user: str = DEFAULT_USER) -> FileInfo | None:
        """Rename a file; None when ``source`` does not exist."""
        source, dest = clean_path(source), clean_path(dest)
        self._check_not_a_folder(dest, user)
        now = time.time()
        with self.db.tx() as c:
            row = c.execute("SELECT length(content), created FROM userdata WHERE user = ? AND"
                            " path = ?", (user, source)).fetchone()
            if row is None:
                return None
            if source == dest:
                return FileInfo(dest, row[0], now, row[1])
            exists = c.execute("SELECT 1 FROM userdata WHERE user = ? AND path = ?",
                               (user, dest)).fetchone()
            if exists and not overwrite:
                raise UserFileExists(f"{dest} already exists")
            c.execute("DELETE FROM userdata WHERE user = ? AND path = ?", (user, dest))
            c.execute("UPDATE userdata SET path = ?, modified = ? WHERE user = ? AND path = ?",
                      (dest, now, user, source))
        return FileInfo(dest, row[0], now, row[1])

    def _check_not_a_folder(self, path: str, user: str) -> None:
        with self.db.read() as c:
            prefix = path + "/"
            if c.execute("SELECT 1 FROM userdata WHERE user = ? AND substr(path, 1, ?) = ? LIMIT 1",
                         (user, len(prefix), prefix)).fetchone():
                raise UserPathError(f"{path} is a folder")

    # -- settings ---------------------------------------------------------------------------

    def settings(self, user: str = DEFAULT_USER) -> dict[str, Any]:
        with self.db.read() as c:
            rows = c.execute("SELECT key, value FROM settings WHERE user = ? ORDER BY key",
                             (user,)).fetchall()
        return {k: json.loads(v) for k, v in rows}

    def setting(self, key: str, user: str = DEFAULT_USER) -> Any:
        with self.db.read() as c:
            row = c.execute("SELECT value FROM settings WHERE user = ? AND key = ?",
                            (user, key)).fetchone()
        return json.loads(row[0]) if row else None

    def update_settings(self, values: dict[str, Any], user: str = DEFAULT_USER) -> None:
        with self.db.tx() as c:
            c.executemany("INSERT OR REPLACE INTO settings (user, key, value) VALUES (?, ?, ?)",
                          [(user, str(k), dumps(v)) for k, v in values.items()])

"""History of finished prompts, newest last (ComfyUI's order), pruned to a maximum count.

An entry is ComfyUI's shape: ``{"prompt": [number, prompt_id, prompt, extra_data,
outputs_to_execute], "outputs": {node_id: ui}, "status": {"status_str", "completed",
"messages"}, "meta": {...}}``. It is stored as one JSON text and served without being decoded.
The files an entry's outputs refer to (``{"filename", "subfolder", "type"}`` items) are also
indexed in ``history_files``, so they can be listed without parsing every entry.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from loom.store.db import Database, dumps


def file_refs(outputs: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(node_id, kind, filename, subfolder, type) of every file an outputs dict refers to."""
    refs = []
    for node_id, ui in outputs.items():
        if not isinstance(ui, dict):
            continue
        for kind, items in ui.items():
            if not isinstance(items, list):
                continue
            for item in items:
                if isinstance(item, dict) and isinstance(item.get("filename"), str):
                    refs.append((str(node_id), kind, item["filename"],
                                 str(item.get("subfolder") or ""), str(item.get("type") or "output")))
    return refs


def write_entry(c: sqlite3.Connection, prompt_id: str, entry: dict, status: str, *,
                prompt_json: str | None = None) -> None:
    """Insert (or replace) an entry inside the caller's transaction. ``prompt_json``, when
    given, is the entry's ``"prompt"`` value already encoded (``entry`` then has none)."""
    text = dumps(entry)
    if prompt_json is not None:
        text = '{"prompt":' + prompt_json + ("," + text[1:] if len(text) > 2 else "}")
    c.execute("DELETE FROM history WHERE prompt_id = ?", (prompt_id,))
    c.execute("DELETE FROM history_files WHERE prompt_id = ?", (prompt_id,))
    c.execute("INSERT INTO history (prompt_id, entry, status, completed) VALUES (?, ?, ?, ?)",
              (prompt_id, text, status, time.time()))
    refs = file_refs(entry.get("outputs") or {})
    if refs:
        c.executemany("INSERT INTO history_files (prompt_id, node_id, kind, filename, subfolder,"
                      " type) VALUES (?, ?, ?, ?, ?, ?)", [(prompt_id, *r) for r in refs])


class History:
    def __init__(self, db: Database, max_items: int = 10_000):
        self.db = db
        self.max_items = max_items

    def listing_json(self, max_items: int | None = None, offset: int | None = None) -> str:
        """The ``GET /history`` object as JSON text, oldest first.

        Without ``offset`` the newest ``max_items`` entries are returned (all when None); with
        ``offset`` the entries from the ``offset``-th oldest on (ComfyUI's paging)."""
        query = "SELECT prompt_id, entry FROM history ORDER BY seq"
        args: tuple = ()
        if offset is None and max_items is not None:
            query = ("SELECT prompt_id, entry FROM (SELECT seq, prompt_id, entry FROM history"
                     " ORDER BY seq DESC LIMIT ?) ORDER BY seq")
            args = (max_items,)
        elif offset is not None:
            query += " LIMIT ? OFFSET ?"
            args = (-1 if max_items is None else max_items, offset)
        with self.db.read() as c:
            rows = c.execute(query, args).fetchall()
        return "{" + ",".join(f"{dumps(pid)}:{entry}" for pid, entry in rows) + "}"

    def get_json(self, prompt_id: str) -> str:
        """``GET /history/{id}``: ``{id: entry}``, or ``{}`` when unknown (as ComfyUI)."""
        with self.db.read() as c:
            row = c.execute("SELECT entry FROM history WHERE prompt_id = ?", (prompt_id,)).fetchone()
        return "{" + (f"{dumps(prompt_id)}:{row[0]}" if row else "") + "}"

    def get(self, prompt_id: str) -> dict | None:
        with self.db.read() as c:
            row = c.execute("SELECT entry FROM history WHERE prompt_id = ?", (prompt_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def ids(self) -> list[str]:
        with self.db.read() as c:
            return [r[0] for r in c.execute("SELECT prompt_id FROM history ORDER BY seq")]

    def files(self, prompt_id: str) -> list[dict]:
        with self.db.read() as c:
            rows = c.execute("SELECT node_id, kind, filename, subfolder, type FROM history_files"
                             " WHERE prompt_id = ? ORDER BY rowid", (prompt_id,)).fetchall()
        return [dict(zip(("node_id", "kind", "filename", "subfolder", "type"), r, strict=True))
                for r in rows]

    def add(self, prompt_id: str, entry: dict, status: str) -> None:
        with self.db.tx() as c:
            write_entry(c, prompt_id, entry, status)
            prune(c, self.max_items)

    def delete(self, prompt_ids: list[str]) -> int:
        with self.db.tx() as c:
            n = 0
            for prompt_id in prompt_ids:
                n += c.execute("DELETE FROM history WHERE prompt_id = ?", (prompt_id,)).rowcount
                c.execute("DELETE FROM history_files WHERE prompt_id = ?", (prompt_id,))
        return n

    def clear(self) -> None:
        with self.db.tx() as c:
            c.execute("DELETE FROM history")
            c.execute("DELETE FROM history_files")

    def count(self) -> int:
        with self.db.read() as c:
            return c.execute("SELECT COUNT(*) FROM history").fetchone()[0]

    def prune(self) -> int:
        """Drop the oldest entries beyond ``max_items``."""
        with self.db.tx() as c:
            return prune(c, self.max_items)


def prune(c: sqlite3.Connection, max_items: int) -> int:
    """Inside the caller's transaction: drop the oldest entries beyond ``max_items``."""
    row = c.execute("SELECT seq FROM history ORDER BY seq DESC LIMIT 1 OFFSET ?",
                    (max(0, max_items),)).fetchone()
    if row is None:
        return 0
    c.execute("DELETE FROM history_files WHERE prompt_id IN"
              " (SELECT prompt_id FROM history WHERE seq <= ?)", (row[0],))
    return c.execute("DELETE FROM history WHERE seq <= ?", (row[0],)).rowcount

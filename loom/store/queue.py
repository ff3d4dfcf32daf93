"""The persistent prompt queue.

A row is ``pending`` until a worker claims it (``running``); when the prompt has run, the row is
deleted and its history entry written in the same transaction, so a prompt is always in exactly
one of queue and history. Rows a crash left ``running`` are put back to ``pending`` at start-up
(:meth:`PromptQueue.recover`), after the files their killed attempt wrote are removed (workers
note each file as it is written, :meth:`note_file`), so a re-run leaves no orphans. A prompt
that was running during a crash runs alone afterwards (no other prompt is claimed while it
runs), so a crash that happens again points at it; one that was running, alone, during the
last of several crashes is the likely cause and is given up on, with an error history entry
that says so, rather than crash the server forever. A prompt that merely shared a crash with
others is never given up on for it.

Ordering follows ComfyUI's ``number``: each queued prompt gets the next number (persisted, so
numbers keep growing across restarts); ``front`` queues it at ``-number``; a client may give a
``number`` of its own. The lowest number runs first, ties in queueing order.

Workers are threads here, but they only use :meth:`claim`, :meth:`finish`, :meth:`release` and
:meth:`wait_for_work`: a worker in another process (one per GPU, or on another machine) can
speak the same four calls over any transport.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loom.store.db import Database, dumps
from loom.store.history import prune, write_entry

log = logging.getLogger("loom.store")

# A prompt running during this many crashes, alone at the last, is moved to history as an error.
MAX_CRASH_ATTEMPTS = 3


def number_json(number: float) -> int | float:
    """ComfyUI numbers are ints unless a client sent a fractional one."""
    return int(number) if float(number).is_integer() else number


@dataclass
class QueueItem:
    prompt_id: str
    number: float
    prompt: dict
    extra_data: dict
    outputs: list[str]  # output node ids to execute
    client_id: str | None
    attempts: int = 0
    # The stored JSON of prompt, extra_data and outputs (reused for the history entry).
    texts: tuple[str, str, str] | None = field(default=None, repr=False)
    # What the producer attached in this process (the server: the validated prompt); None for
    # prompts read back from the database, e.g. after a restart.
    payload: Any = field(default=None, repr=False)

    def as_list(self) -> list:
        """ComfyUI's queue/history tuple: [number, prompt_id, prompt, extra_data, outputs]."""
        return [number_json(self.number), self.prompt_id, self.prompt, self.extra_data,
                self.outputs]

    def as_list_json(self) -> str:
        """:meth:`as_list` as JSON text, without encoding the prompt again."""
        if self.texts is None:
            return dumps(self.as_list())
        prompt, extra, outputs = self.texts
        return f"[{dumps(number_json(self.number))},{dumps(self.prompt_id)},{prompt},{extra},{outputs}]"


class DuplicatePromptId(ValueError):
    pass


class PromptQueue:
    def __init__(self, db: Database, history_max_items: int = 10_000):
        self.db = db
        self.history_max_items = history_max_items
        self._cond = threading.Condition()
        self._generation = 0  # bumped on every enqueue: workers wait for it to change
        self._listeners: list[Callable[[], None]] = []
        # prompt_id -> (prompt, extra_data, outputs, payload) of prompts queued by this process
        # and not yet claimed: a claim skips decoding what it already has in memory.
        self._hot: dict[str, tuple[dict, dict, list, Any]] = {}

    # -- change notification --------------------------------------------------------------

    def add_listener(self, callback: Callable[[], None]) -> None:
        """``callback()`` runs (in the changing thread) after every committed change."""
        self._listeners.append(callback)

    def _changed(self, work_added: bool = False) -> None:
        if work_added:
            with self._cond:
                self._generation += 1
                self._cond.notify_all()
        for callback in self._listeners:
            try:
                callback()
            except Exception:
                log.exception("queue listener failed")

    @property
    def generation(self) -> int:
        return self._generation

    def wait_for_work(self, generation: int, timeout: float | None = None) -> None:
        """Block until something was queued after ``generation`` was read (or timeout)."""
        with self._cond:
            self._cond.wait_for(lambda: self._generation != generation, timeout)

    def wake_all(self) -> None:
        """Wake every waiting worker (used when stopping)."""
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    # -- producers --------------------------------------------------------------------------

    def enqueue(self, prompt_id: str, prompt: dict, extra_data: dict, outputs: list[str], *,
                client_id: str | None = None, front: bool = False,
                number: float | None = None, payload: Any = None) -> float:
        """Add a prompt; returns its number. Raises DuplicatePromptId if the id is queued.

        ``payload`` is handed to the worker that claims the prompt in this process (it is not
        stored: a prompt claimed after a restart has none)."""
        prompt_text = dumps(prompt)
        extra_text = dumps(extra_data)
        outputs_text = dumps(outputs)
        with self.db.tx() as c:
            if c.execute("SELECT 1 FROM queue WHERE prompt_id = ?", (prompt_id,)).fetchone():
                raise DuplicatePromptId(f"prompt_id {prompt_id!r} is already queued")
            row = c.execute("SELECT value FROM meta WHERE key = 'next_number'").fetchone()
            counter = int(row[0]) if row else 1  # from 1, so -counter is ahead
            c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('next_number', ?)",
                      (str(counter + 1),))
            if number is None:
                number = -counter if front else counter
            c.execute("INSERT INTO queue (prompt_id, number, prompt, extra_data, outputs, client_id,"
                      " created) VALUES (?, ?, ?, ?, ?, ?, ?)",
                      (prompt_id, float(number), prompt_text, extra_text, outputs_text, client_id,
                       time.time()))
            self._hot[prompt_id] = (prompt, extra_data, outputs, payload)
        self._changed(work_added=True)
        return number

    # -- workers ----------------------------------------------------------------------------

    def claim(self, worker_id: str) -> QueueItem | None:
        """Atomically take the lowest-numbered pending prompt and mark it running by
        ``worker_id``; None when nothing is pending."""
        with self.db.tx() as c:
            running = [r[0] for r in c.execute("SELECT attempts FROM queue"
                                               " WHERE state = 'running'")]
            if any(running):
                return None  # a prompt that was running during a crash runs alone
            # With others running, prompts that were running during a crash wait their turn.
            solo = " AND attempts = 0" if running else ""
            row = c.execute("SELECT seq, prompt_id, number, prompt, extra_data, outputs, client_id,"
                            f" attempts FROM queue WHERE state = 'pending'{solo}"
                            " ORDER BY number, seq LIMIT 1").fetchone()
            if row is None:
                return None
            c.execute("UPDATE queue SET state = 'running', worker = ?, claimed = ? WHERE seq = ?",
                      (worker_id, time.time(), row[0]))
            hot = self._hot.pop(row[1], None)
        if hot is not None:
            prompt, extra_data, outputs, payload = hot
        else:
            prompt, extra_data, outputs = json.loads(row[3]), json.loads(row[4]), json.loads(row[5])
            payload = None
        item = QueueItem(prompt_id=row[1], number=row[2], prompt=prompt, extra_data=extra_data,
                         outputs=outputs, client_id=row[6], attempts=row[7],
                         texts=(row[3], row[4], row[5]), payload=payload)
        self._changed()
        return item

    def finish(self, item: QueueItem | str, entry: dict, status: str, *,
               notify: bool = True) -> None:
        """Remove a finished prompt from the queue and write its history entry, atomically.

        Given the claimed ``item`` and an ``entry`` without ``"prompt"``, the entry's prompt
        list is made from the item's stored JSON (a large prompt is not encoded again).
        ``notify=False``: the listeners are not called; the caller announces the change itself
        (a worker does, between its last events)."""
        prompt_id = item if isinstance(item, str) else item.prompt_id
        prompt_json = None
        if not isinstance(item, str) and "prompt" not in entry:
            prompt_json = item.as_list_json()
        with self.db.tx() as c:
            c.execute("DELETE FROM queue WHERE prompt_id = ?", (prompt_id,))
            c.execute("DELETE FROM attempt_files WHERE prompt_id = ?", (prompt_id,))
            write_entry(c, prompt_id, entry, status, prompt_json=prompt_json)
            prune(c, self.history_max_items)
            # Workers may be waiting for a prompt that must run alone, or for this one to end.
            wake = c.execute("SELECT 1 FROM queue WHERE state = 'pending' AND attempts > 0"
                             " LIMIT 1").fetchone() is not None
        if wake or (not isinstance(item, str) and item.attempts > 0):
            self.wake_all()
        if notify:
            self._changed()

    def note_file(self, prompt_id: str, path: str) -> None:
        """A running prompt wrote ``path``: removed if the prompt is killed before it finishes."""
        with self.db.tx() as c:
            c.execute("INSERT OR IGNORE INTO attempt_files (prompt_id, path) VALUES (?, ?)",
                      (prompt_id, str(path)))

    def release(self, prompt_id: str) -> list[str]:
        """Put a claimed prompt back to pending (its worker is stopping before it finished).
        Returns the files its attempt wrote, for the caller to remove (it runs again)."""
        with self.db.tx() as c:
            c.execute("UPDATE queue SET state = 'pending', worker = NULL, claimed = NULL"
                      " WHERE prompt_id = ?", (prompt_id,))
            files = [r[0] for r in c.execute("DELETE FROM attempt_files WHERE prompt_id = ?"
                                             " RETURNING path", (prompt_id,))]
        self._changed(work_added=True)
        return files

    def recover(self, remove_file: Callable[[str], object] | None = None) -> list[str]:
        """At start-up: prompts left running by a crash go back to pending (at the front of
        their number order, as before), after ``remove_file(path)`` was called for each file
        their killed attempt wrote. Returns the ids of prompts given up on."""
        given_up = []
        with self.db.tx() as c:
            rows = c.execute("SELECT prompt_id, attempts, number, prompt, extra_data, outputs"
                             " FROM queue WHERE state = 'running'").fetchall()
            alone = len(rows) == 1
            for prompt_id, attempts, number, prompt, extra, outputs in rows:
                files = [r[0] for r in c.execute("DELETE FROM attempt_files WHERE prompt_id = ?"
                                                 " RETURNING path", (prompt_id,))]
                for path in files if remove_file is not None else ():
                    try:
                        remove_file(path)
                    except OSError:
                        log.warning("Could not remove %s, written by the killed run of %s", path,
                                    prompt_id)
                if attempts + 1 >= MAX_CRASH_ATTEMPTS and alone:
                    message = (f"Loom stopped {attempts + 1} times while this prompt was running, "
                               "the last time with no other prompt running: it is the likely "
                               "cause, so it was not run again")
                    entry = {
                        "prompt": [number_json(number), prompt_id, json.loads(prompt),
                                   json.loads(extra), json.loads(outputs)],
                        "outputs": {},
                        "status": {"status_str": "error", "completed": False, "messages": [
                            ["execution_error", {"prompt_id": prompt_id, "node_id": None,
                                                 "node_type": None, "exception_message": message,
                                                 "exception_type": "loom.store.Crashed",
                                                 "traceback": [], "executed": [],
                                                 "timestamp": int(time.time() * 1000)}]]},
                        "meta": {},
                    }
                    c.execute("DELETE FROM queue WHERE prompt_id = ?", (prompt_id,))
                    write_entry(c, prompt_id, entry, "error")
                    given_up.append(prompt_id)
                    log.error("Prompt %s: %s", prompt_id, message)
                else:
                    # From now on it runs alone: if Loom stops again, the cause is clear.
                    c.execute("UPDATE queue SET state = 'pending', worker = NULL, claimed = NULL,"
                              " attempts = attempts + 1 WHERE prompt_id = ?", (prompt_id,))
            if rows:
                log.warning("Recovered %d prompt(s) that were running when Loom stopped; each "
                            "runs alone from now on", len(rows) - len(given_up))
        if rows:
            self._changed(work_added=True)
        return given_up

    # -- clients ----------------------------------------------------------------------------

    def count(self) -> int:
        """Prompts pending or running (ComfyUI's ``queue_remaining``)."""
        with self.db.read() as c:
            return c.execute("SELECT COUNT(*) FROM queue").fetchone()[0]

    def listing_json(self) -> tuple[list[str], list[str]]:
        """(running, pending) as JSON texts of ComfyUI's 5-element lists, in run order; built
        from the stored JSON without decoding it (prompts can be large)."""
        with self.db.read() as c:
            rows = c.execute("SELECT state, number, prompt_id, prompt, extra_data, outputs"
                             " FROM queue ORDER BY number, seq").fetchall()
        running, pending = [], []
        for state, number, prompt_id, prompt, extra, outputs in rows:
            text = f"[{dumps(number_json(number))},{dumps(prompt_id)},{prompt},{extra},{outputs}]"
            (running if state == "running" else pending).append(text)
        return running, pending

    def items(self, state: str | None = None) -> list[QueueItem]:
        query = ("SELECT prompt_id, number, prompt, extra_data, outputs, client_id, attempts"
                 " FROM queue")
        args: tuple = ()
        if state is not None:
            query += " WHERE state = ?"
            args = (state,)
        with self.db.read() as c:
            rows = c.execute(query + " ORDER BY number, seq", args).fetchall()
        return [QueueItem(r[0], r[1], json.loads(r[2]), json.loads(r[3]), json.loads(r[4]), r[5],
                          r[6]) for r in rows]

    def state_of(self, prompt_id: str) -> str | None:
        with self.db.read() as c:
            row = c.execute("SELECT state FROM queue WHERE prompt_id = ?", (prompt_id,)).fetchone()
        return row[0] if row else None

    def delete_pending(self, prompt_ids: list[str]) -> int:
        """Remove pending prompts (running ones are interrupted instead, by the caller)."""
        with self.db.tx() as c:
            n = 0
            for prompt_id in prompt_ids:
                deleted = c.execute("DELETE FROM queue WHERE prompt_id = ? AND state = 'pending'",
                                    (prompt_id,)).rowcount
                if deleted:
                    self._hot.pop(prompt_id, None)
                n += deleted
        if n:
            self._changed()
        return n

    def clear_pending(self) -> int:
        with self.db.tx() as c:
            n = c.execute("DELETE FROM queue WHERE state = 'pending'").rowcount
            self._hot.clear()  # running prompts were claimed: none of them is hot
        if n:
            self._changed()
        return n

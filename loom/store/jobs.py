"""The queue and the history seen as one list of jobs: ComfyUI's ``/jobs`` shape.

A job is a prompt in any state: ``pending`` or ``in_progress`` (queue rows), ``completed``,
``failed`` or ``cancelled`` (history rows whose status is success, error or interrupted). A list
item is small — ids, times in milliseconds, the error if any, output counts and one output to
preview — so a client can poll it; :meth:`Jobs.detail` adds the prompt, its extra data (where the
UI workflow is) and every output.

Order: newest first — pending prompts (the last to run first), running ones, then finished ones,
most recently finished first; ascending is the exact reverse. Only the requested page is
decoded, so a long history costs nothing per poll.
"""

from __future__ import annotations

import json
import time
from typing import Any

from loom.store.db import Database
from loom.store.queue import number_json

QUEUE_STATUSES = {"pending": "pending", "in_progress": "running"}
HISTORY_STATUSES = {"completed": "success", "failed": "error", "cancelled": "interrupted"}
JOB_STATUSES = (*QUEUE_STATUSES, *HISTORY_STATUSES)
_STATUS_OF_HISTORY = {v: k for k, v in HISTORY_STATUSES.items()}
# Output kinds a browser can show (the ``preview_output`` candidates).
PREVIEWABLE_KINDS = frozenset({"images", "gifs", "video", "videos", "audio", "3d"})
RESULT_TYPES = frozenset({"input", "output", "temp"})
TERMINAL_EVENTS = ("execution_success", "execution_error", "execution_interrupted")


class Jobs:
    def __init__(self, db: Database):
        self.db = db

    def listing(self, statuses: set[str] | None = None, limit: int | None = None,
                offset: int = 0, descending: bool = True) -> tuple[list[dict], int]:
        """One page of jobs with these statuses (all when None) and how many there are."""
        statuses = set(JOB_STATUSES) if statuses is None else statuses
        queue_states = sorted(QUEUE_STATUSES[s] for s in statuses if s in QUEUE_STATUSES)
        history_states = sorted(HISTORY_STATUSES[s] for s in statuses if s in HISTORY_STATUSES)
        with self.db.read() as c:
            n_queue = _count(c, "queue", "state", queue_states)
            n_history = _count(c, "history", "status", history_states)
            parts = [("queue", n_queue), ("history", n_history)]
            if not descending:
                parts.reverse()
            jobs: list[dict] = []
            skip, room = offset, limit if limit is not None else n_queue + n_history
            for source, size in parts:
                take = max(0, min(room, size - skip))
                if take:
                    fetch = _queue_rows if source == "queue" else _history_rows
                    states = queue_states if source == "queue" else history_states
                    jobs += fetch(c, states, take, skip, descending)
                    room -= take
                skip = max(0, skip - size)
        return jobs, n_queue + n_history

    def detail(self, job_id: str) -> dict | None:
        """A job with its prompt, extra data, outputs and status messages; None if unknown."""
        with self.db.read() as c:
            row = c.execute("SELECT prompt_id, state, number, created, claimed, prompt, extra_data"
                            " FROM queue WHERE prompt_id = ?", (job_id,)).fetchone()
            if row is not None:
                job = _queue_job(row[:5], json.loads(row[6]))
                return {**job, "workflow": {"prompt": json.loads(row[5]),
                                            "extra_data": json.loads(row[6])},
                        "outputs": {}, "update_time": job["create_time"]}
            row = c.execute("SELECT prompt_id, status, completed, entry FROM history"
                            " WHERE prompt_id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        entry = json.loads(row[3])
        job = _history_job(row[0], row[1], row[2], entry)
        prompt = entry.get("prompt") or []
        return {**job,
                "workflow": {"prompt": _at(prompt, 2, {}), "extra_data": _at(prompt, 3, {})},
                "outputs": entry.get("outputs") or {},
                "execution_status": entry.get("status"),
                "execution_meta": entry.get("meta"),
                "update_time": int(row[2] * 1000)}

    def status(self, job_id: str) -> str | None:
        """The job's status, or None when there is no such job."""
        with self.db.read() as c:
            row = c.execute("SELECT state FROM queue WHERE prompt_id = ?", (job_id,)).fetchone()
            if row is not None:
                return "in_progress" if row[0] == "running" else "pending"
            row = c.execute("SELECT status FROM history WHERE prompt_id = ?", (job_id,)).fetchone()
        return _STATUS_OF_HISTORY.get(row[0], "failed") if row else None


def _count(c, table: str, column: str, values: list[str]) -> int:
    if not values:
        return 0
    marks = ",".join("?" * len(values))
    return c.execute(f"SELECT COUNT(*) FROM {table} WHERE {column} IN ({marks})",  # noqa: S608
                     values).fetchone()[0]


def _queue_rows(c, states: list[str], limit: int, offset: int, descending: bool) -> list[dict]:
    # Newest first: pending before running, each in reverse run order.
    order = ("CASE state WHEN 'pending' THEN 0 ELSE 1 END, number DESC, seq DESC" if descending
             else "CASE state WHEN 'pending' THEN 1 ELSE 0 END, number, seq")
    marks = ",".join("?" * len(states))
    rows = c.execute("SELECT prompt_id, state, number, created, claimed, extra_data FROM queue"
                     f" WHERE state IN ({marks}) ORDER BY {order} LIMIT ? OFFSET ?",  # noqa: S608
                     (*states, limit, offset)).fetchall()
    return [_queue_job(r[:5], _loads(r[5])) for r in rows]


def _history_rows(c, states: list[str], limit: int, offset: int, descending: bool) -> list[dict]:
    marks = ",".join("?" * len(states))
    rows = c.execute("SELECT prompt_id, status, completed, entry FROM history"
                     f" WHERE status IN ({marks}) ORDER BY seq {'DESC' if descending else 'ASC'}"
                     " LIMIT ? OFFSET ?", (*states, limit, offset)).fetchall()  # noqa: S608
    return [_history_job(r[0], r[1], r[2], _loads(r[3])) for r in rows]


def _queue_job(row: tuple, extra: dict) -> dict:
    prompt_id, state, number, created, claimed = row
    return {
        "id": prompt_id,
        "status": "in_progress" if state == "running" else "pending",
        "priority": number_json(number),
        "create_time": _create_time(extra, created),
        "execution_start_time": int(claimed * 1000) if claimed else None,
        "execution_end_time": None,
        "execution_error": None,
        "outputs_count": 0,
        "previewable_outputs_count": 0,
        "preview_output": None,
        "workflow_id": _workflow_id(extra),
    }


def _history_job(prompt_id: str, status: str, completed: float, entry: dict) -> dict:
    prompt = entry.get("prompt") if isinstance(entry.get("prompt"), list) else []
    extra = _at(prompt, 3, {})
    messages = (entry.get("status") or {}).get("messages") or []
    started = ended = None
    error = None
    for message in messages:
        if not (isinstance(message, list) and len(message) == 2 and isinstance(message[1], dict)):
            continue
        event, data = message
        if event == "execution_start":
            started = _millis(data.get("timestamp"))
        elif event in TERMINAL_EVENTS:
            ended = _millis(data.get("timestamp"))
            if event == "execution_error":
                error = _execution_error(data)
    outputs = entry.get("outputs") if isinstance(entry.get("outputs"), dict) else {}
    count, previewable, preview = _outputs_summary(outputs)
    number = _at(prompt, 0, None)
    job = {
        "id": prompt_id,
        "status": _STATUS_OF_HISTORY.get(status, "failed"),
        "create_time": _create_time(extra, completed),
        "execution_start_time": started,
        "execution_end_time": ended if ended is not None else int(completed * 1000),
        "execution_error": error,
        "outputs_count": count,
        "previewable_outputs_count": previewable,
        "preview_output": preview,
        "workflow_id": _workflow_id(extra),
    }
    if _millis(number) is not None:  # optional, but never null
        job["priority"] = number
    return job


def _outputs_summary(outputs: dict) -> tuple[int, int, dict | None]:
    """(items, previewable files, the one to preview: the last saved file, else the last)."""
    count = previewable = 0
    last = last_saved = None
    for node_id, ui in outputs.items():
        if not isinstance(ui, dict):
            continue
        for kind, items in ui.items():
            if kind == "animated" or not isinstance(items, list):
                continue
            count += len(items)
            if kind not in PREVIEWABLE_KINDS:
                continue
            for item in items:
                if not (isinstance(item, dict) and isinstance(item.get("filename"), str)):
                    continue
                previewable += 1
                shown = {k: v for k, v in item.items() if k != "type" or v in RESULT_TYPES}
                last = {**shown, "nodeId": str(node_id), "mediaType": kind}
                if item.get("type", "output") == "output":
                    last_saved = last
    return count, previewable, last_saved or last


def _execution_error(data: dict) -> dict:
    """The error event, with the types ComfyUI's front end insists on (strings, never null)."""
    traceback = data.get("traceback")
    if isinstance(traceback, str):
        traceback = [traceback]
    error = {**data,
             "node_id": str(data.get("node_id") or ""),
             "node_type": str(data.get("node_type") or ""),
             "exception_message": str(data.get("exception_message") or ""),
             "exception_type": str(data.get("exception_type") or ""),
             "traceback": [str(t) for t in traceback] if isinstance(traceback, list) else [],
             "executed": [str(n) for n in data.get("executed") or []],
             "timestamp": _millis(data.get("timestamp"))}
    if error["timestamp"] is None:  # optional, but never null
        del error["timestamp"]
    return error


def _create_time(extra: Any, fallback_seconds: float) -> int:
    value = extra.get("create_time") if isinstance(extra, dict) else None
    millis = _millis(value)
    return millis if millis is not None else int((fallback_seconds or time.time()) * 1000)


def _workflow_id(extra: Any) -> str | None:
    try:
        workflow_id = extra["extra_pnginfo"]["workflow"]["id"]
    except (KeyError, TypeError):
        return None
    return workflow_id if isinstance(workflow_id, str) else None


def _millis(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value)


def _at(items: list, index: int, default: Any) -> Any:
    return items[index] if len(items) > index else default


def _loads(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}

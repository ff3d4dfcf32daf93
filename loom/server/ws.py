"""Websocket clients and the events sent to them.

Each browser tab (or script) connects to ``/ws?clientId=...`` and gets the events of the prompts
it queued with that ``client_id`` (events of prompts queued without one go to everybody), plus
``status`` broadcasts whenever the queue changes. Messages are ComfyUI's:
``{"type": event, "data": {...}}``, and its binary frames for images (see :mod:`.previews`,
which also says who gets step previews: only connections that ask).

Workers run in their own threads: they hand events over with :meth:`Hub.post_threadsafe`,
which batches them so a 1,000-node prompt costs a handful of loop wake-ups, not a thousand.
Queue changes (``status``) go through the same ordered batches, so a worker's
``execution_success`` → ``status`` → ``executing`` arrive in that order. Of the
``progress_state`` messages of one prompt waiting in a batch only the newest is sent: each holds
the whole state, so the older ones say nothing it does not. Each connection has its own outbox
and writer task, so one slow client cannot hold up the others and the messages of one prompt
arrive in order.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from aiohttp import web

from loom.server.previews import ImageFrame, asked_for_previews, wants_preview_metadata

log = logging.getLogger("loom.server")

# A client that does not read its socket is dropped once this many messages, or this many
# bytes, wait for it. Step previews are skipped instead once PREVIEW_BACKLOG bytes wait: a
# stale preview is worth nothing, and a slow tab must not hold the server's RAM. (Images a node
# sends on purpose, SaveImageWebsocket's, are never skipped: the client waits for them.)
MAX_OUTBOX = 100_000
MAX_OUTBOX_BYTES = 64 << 20
PREVIEW_BACKLOG = 4 << 20
# Posted in place of a status message: it is made when sent, from the queue as it is then.
_STATUS = object()


def server_features(settings: Any) -> dict:
    """What this server supports, as ComfyUI's feature flags (the websocket's answer to a
    client's ``feature_flags``, and ``GET /features``)."""
    return {"supports_preview_metadata": True,
            "max_upload_size": settings.max_upload_mb * 2**20}


def _json_default(value: Any) -> Any:
    to_json = getattr(value, "to_json", None)  # e.g. a progress_state snapshot
    return to_json() if callable(to_json) else str(value)


class Connection:
    def __init__(self, client_id: str, ws: web.WebSocketResponse):
        self.client_id = client_id
        self.ws = ws
        self.feature_flags: dict = {}  # what the client announced (ComfyUI's feature_flags)
        self._outbox: collections.deque[str | bytes] = collections.deque()
        self.outbox_bytes = 0
        self._ready = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._writer())

    def push(self, message: str | bytes, *, droppable: bool | None = None) -> None:
        """Queue ``message``; a ``droppable`` one (by default: a binary frame, i.e. a step
        preview) is skipped when the client is behind."""
        size = len(message)
        if droppable is None:
            droppable = isinstance(message, bytes)
        if droppable and self.outbox_bytes + size > PREVIEW_BACKLOG:
            return  # the client is behind: skip this preview, a newer one follows
        if len(self._outbox) >= MAX_OUTBOX or self.outbox_bytes + size > MAX_OUTBOX_BYTES:
            log.warning("websocket client %s is not reading; closing it", self.client_id)
            self._outbox.clear()
            self.outbox_bytes = 0
            asyncio.ensure_future(self.ws.close())
            return
        self._outbox.append(message)
        self.outbox_bytes += size
        self._ready.set()

    async def _writer(self) -> None:
        try:
            while True:
                await self._ready.wait()
                self._ready.clear()
                while self._outbox:
                    message = self._outbox.popleft()
                    self.outbox_bytes -= len(message)
                    if self.ws.closed:
                        return
                    if isinstance(message, bytes):
                        await self.ws.send_bytes(message)
                    else:
                        await self.ws.send_str(message)
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            pass  # the client went away; the reader side unregisters it

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass


class Hub:
    def __init__(self) -> None:
        self.clients: dict[str, set[Connection]] = {}
        # Guards changes of ``clients`` against the workers' reads (:meth:`wants_previews`).
        self._clients_lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._pending: collections.deque[tuple[str, Any, str | None]] = collections.deque()
        self._drain_scheduled = False
        self.status_source: Callable[[], dict] = lambda: {"exec_info": {"queue_remaining": 0}}

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    # -- connections ------------------------------------------------------------------------

    def add(self, conn: Connection) -> None:
        with self._clients_lock:
            self.clients[conn.client_id] = self.clients.get(conn.client_id, frozenset()) | {conn}
        conn.start()

    async def remove(self, conn: Connection) -> None:
        with self._clients_lock:
            conns = self.clients.get(conn.client_id, frozenset()) - {conn}
            if conns:
                self.clients[conn.client_id] = conns
            else:
                self.clients.pop(conn.client_id, None)
        await conn.stop()

    async def close_all(self) -> None:
        with self._clients_lock:
            everyone = [c for conns in self.clients.values() for c in conns]
            self.clients = {}
        for conn in everyone:
            await conn.stop()
            await conn.ws.close(code=1001, message=b"server shutting down")

    def _targets(self, client_id: str | None) -> list[Connection]:
        if client_id is None:
            return [c for conns in list(self.clients.values()) for c in conns]
        return list(self.clients.get(client_id, ()))

    def wants_previews(self, client_id: str | None, explicit: bool) -> bool:
        """Would any connection take the step previews of a prompt of ``client_id``? (Any
        thread: a worker asks before it runs a prompt, to skip making unwanted previews.)"""
        with self._clients_lock:
            targets = self._targets(client_id)
        return any(_takes_preview(c, client_id, explicit) for c in targets)

    # -- sending (event loop thread) --------------------------------------------------------

    def send(self, event: str, data: Any, client_id: str | None = None) -> None:
        """Send to the connections of ``client_id``, or to everybody when it is None."""
        if not self.clients:
            return
        targets = self._targets(client_id)
        if isinstance(data, ImageFrame):  # framed as each connection asked
            frames: dict[bool, bytes] = {}
            for conn in targets:
                if data.always or _takes_preview(conn, client_id, data.explicit):
                    meta = wants_preview_metadata(conn.feature_flags)
                    if meta not in frames:
                        frames[meta] = data.frame(meta)
                    conn.push(frames[meta], droppable=not data.always)
            return
        if isinstance(data, bytes):  # a binary frame, sent as it is
            message: str | bytes = data
        else:
            message = json.dumps({"type": event, "data": data}, ensure_ascii=False,
                                 default=_json_default)
        for conn in targets:
            conn.push(message)

    def send_status(self, client_id: str | None = None) -> None:
        data: dict[str, Any] = {"status": self.status_source()}
        if client_id is not None:
            data["sid"] = client_id
        self.send("status", data, client_id)

    # -- sending from other threads ---------------------------------------------------------

    def post_threadsafe(self, event: str, data: Any, client_id: str | None = None) -> None:
        """Queue an event from a worker thread; delivered in order, in batches. A ``status``
        event with data None is the queue's status as it is when sent, to everybody."""
        if event == "status" and data is None:
            self.status_changed_threadsafe()
            return
        self._pending.append((event, data, client_id))
        self._schedule_drain()

    def status_changed_threadsafe(self) -> None:
        """The queue changed (any thread): broadcast ``status``, in order with the events
        posted so far (one broadcast for several changes in a row)."""
        pending = self._pending
        try:
            if pending and pending[-1][1] is _STATUS:
                return
        except IndexError:  # drained meanwhile
            pass
        pending.append(("status", _STATUS, None))
        self._schedule_drain()

    def _schedule_drain(self) -> None:
        if not self._drain_scheduled and self.loop is not None:
            self._drain_scheduled = True
            try:
                self.loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # the loop is closed: the server is stopping
                self._drain_scheduled = False

    def _drain(self) -> None:
        self._drain_scheduled = False
        pending = self._pending
        batch = []
        while pending:
            batch.append(pending.popleft())
        newest: dict[tuple, int] = {}  # (client, prompt) -> index of its last progress_state
        for i, (event, data, client_id) in enumerate(batch):
            if event == "progress_state":
                newest[(client_id, data.get("prompt_id"))] = i
        for i, (event, data, client_id) in enumerate(batch):
            if event == "progress_state" and newest[(client_id, data.get("prompt_id"))] != i:
                continue
            try:
                if data is _STATUS:
                    self.send_status()
                else:
                    self.send(event, data, client_id)
            except Exception:
                log.exception("could not send %s event", event)


def _takes_preview(conn: Connection, client_id: str | None, explicit: bool) -> bool:
    """Whether ``conn`` gets the step previews of a prompt queued by ``client_id``."""
    if asked_for_previews(conn.feature_flags):
        return True
    return explicit and client_id is not None and conn.client_id == client_id

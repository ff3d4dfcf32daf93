"""Websocket clients and the events sent to them.

Each browser tab (or script) connects to ``/ws?clientId=...`` and gets the events of the prompts
it queued with that ``client_id`` (events of prompts queued without one go to everybody), plus
``status`` broadcasts whenever the queue changes. Messages are ComfyUI's:
``{"type": event, "data": {...}}``.

Workers run in their own threads: they hand events over with :meth:`Hub.post_threadsafe`,
which batches them so a 1,000-node prompt costs a handful of loop wake-ups, not a thousand.
Each connection has its own outbox and writer task, so one slow client cannot hold up the
others and the messages of one prompt arrive in order.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

log = logging.getLogger("loom.server")

# A client that does not read its socket is dropped once this many messages, or this many
# bytes, wait for it. Previews (binary frames) are skipped instead once PREVIEW_BACKLOG bytes
# wait: a stale preview is worth nothing, and a slow tab must not hold the server's RAM.
MAX_OUTBOX = 100_000
MAX_OUTBOX_BYTES = 64 << 20
PREVIEW_BACKLOG = 4 << 20


class Connection:
    def __init__(self, client_id: str, ws: web.WebSocketResponse):
        self.client_id = client_id
        self.ws = ws
        self._outbox: collections.deque[str | bytes] = collections.deque()
        self.outbox_bytes = 0
        self._ready = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._writer())

    def push(self, message: str | bytes) -> None:
        size = len(message)
        if isinstance(message, bytes) and self.outbox_bytes + size > PREVIEW_BACKLOG:
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
        self.loop: asyncio.AbstractEventLoop | None = None
        self._pending: collections.deque[tuple[str, dict, str | None]] = collections.deque()
        self._drain_scheduled = False
        self._status_scheduled = False
        self.status_source: Callable[[], dict] = lambda: {"exec_info": {"queue_remaining": 0}}

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    # -- connections ------------------------------------------------------------------------

    def add(self, conn: Connection) -> None:
        self.clients.setdefault(conn.client_id, set()).add(conn)
        conn.start()

    async def remove(self, conn: Connection) -> None:
        conns = self.clients.get(conn.client_id)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self.clients[conn.client_id]
        await conn.stop()

    async def close_all(self) -> None:
        for conns in list(self.clients.values()):
            for conn in list(conns):
                await conn.stop()
                await conn.ws.close(code=1001, message=b"server shutting down")
        self.clients.clear()

    # -- sending (event loop thread) --------------------------------------------------------

    def send(self, event: str, data: Any, client_id: str | None = None) -> None:
        """Send to the connections of ``client_id``, or to everybody when it is None."""
        if not self.clients:
            return
        if isinstance(data, bytes):  # a binary frame (previews), sent as it is
            message: str | bytes = data
        else:
            message = json.dumps({"type": event, "data": data}, ensure_ascii=False, default=str)
        if client_id is None:
            targets = [c for conns in self.clients.values() for c in conns]
        else:
            targets = self.clients.get(client_id, ())
        for conn in targets:
            conn.push(message)

    def send_status(self, client_id: str | None = None) -> None:
        data: dict[str, Any] = {"status": self.status_source()}
        if client_id is not None:
            data["sid"] = client_id
        self.send("status", data, client_id)

    # -- sending from other threads ---------------------------------------------------------

    def post_threadsafe(self, event: str, data: Any, client_id: str | None = None) -> None:
        """Queue an event from a worker thread; delivered in order, in batches."""
        self._pending.append((event, data, client_id))
        if not self._drain_scheduled and self.loop is not None:
            self._drain_scheduled = True
            try:
                self.loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # the loop is closed: the server is stopping
                self._drain_scheduled = False

    def _drain(self) -> None:
        self._drain_scheduled = False
        pending = self._pending
        while pending:
            event, data, client_id = pending.popleft()
            try:
                self.send(event, data, client_id)
            except Exception:
                log.exception("could not send %s event", event)

    def status_changed_threadsafe(self) -> None:
        """The queue changed (any thread): broadcast ``status`` once, soon."""
        if self._status_scheduled or self.loop is None:
            return
        self._status_scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._broadcast_status)
        except RuntimeError:
            self._status_scheduled = False

    def _broadcast_status(self) -> None:
        self._status_scheduled = False
        if self.clients:
            try:
                self.send_status()
            except Exception:
                log.exception("could not broadcast status")

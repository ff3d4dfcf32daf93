"""``/ws?clientId=``: the websocket each editor tab (or script) listens on."""

from __future__ import annotations

import json
import logging
import uuid

from aiohttp import WSMsgType, web

from loom import jsonsafe
from loom.server.state import get_state
from loom.server.ws import Connection, server_features

log = logging.getLogger("loom.server")

routes = web.RouteTableDef()

MAX_CLIENT_ID_LENGTH = 200


@routes.get("/ws")
async def websocket(request: web.Request) -> web.WebSocketResponse:
    state = get_state(request)
    client_id = request.query.get("clientId") or ""
    if not client_id or len(client_id) > MAX_CLIENT_ID_LENGTH:
        client_id = uuid.uuid4().hex
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=1 << 20)
    await ws.prepare(request)
    conn = Connection(client_id, ws)
    state.hub.add(conn)
    try:
        state.hub.send_status(client_id)
        # A reconnecting tab (a page reload) learns which of its nodes is running.
        for worker in state.workers.workers:
            prompt_id, node = worker.current, worker.current_node
            if prompt_id and node and worker.current_client == client_id:
                state.hub.send("executing", {"node": node, "display_node": node,
                                             "prompt_id": prompt_id}, client_id)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                _on_message(state, conn, msg.data)
            elif msg.type == WSMsgType.ERROR:
                log.debug("websocket %s closed with %s", client_id, ws.exception())
    finally:
        await state.hub.remove(conn)
    return ws


def _on_message(state, conn: Connection, text: str) -> None:
    """Clients may announce their features (ComfyUI's ``feature_flags``); we keep them (they
    decide, for one, whether the connection gets step previews) and answer with ours."""
    try:
        msg = jsonsafe.loads(text)
    except jsonsafe.JSONError:  # malformed or nested too deeply: ignored
        return
    if isinstance(msg, dict) and msg.get("type") == "feature_flags":
        flags = msg.get("data")
        conn.feature_flags = dict(flags) if isinstance(flags, dict) else {}
        conn.push(json.dumps({"type": "feature_flags", "data": server_features(state.settings)}))

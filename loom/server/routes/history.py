"""``/history``: finished prompts with their outputs, newest last."""

from __future__ import annotations

from aiohttp import web

from loom.server.routes._common import SMALL_BODY, field, json_body, query_int, raw_json, str_list
from loom.server.state import get_state

routes = web.RouteTableDef()


@routes.get("/history")
async def get_history(request: web.Request) -> web.Response:
    history = get_state(request).store.history
    max_items = query_int(request, "max_items")
    offset = query_int(request, "offset", minimum=None)
    if offset is not None and offset < 0:
        offset = None  # ComfyUI's -1: "the newest max_items"
    return raw_json(history.listing_json(max_items, offset))


@routes.get("/history/{prompt_id}")
async def get_history_item(request: web.Request) -> web.Response:
    return raw_json(get_state(request).store.history.get_json(request.match_info["prompt_id"]))


@routes.post("/history")
async def post_history(request: web.Request) -> web.Response:
    history = get_state(request).store.history
    data = await json_body(request, limit=SMALL_BODY)
    clear = field(data, "clear", bool, False)
    delete = str_list(data, "delete")
    removed = 0
    if clear:
        removed += history.count()
        history.clear()
    if delete:
        removed += history.delete(delete)
    return web.json_response({"removed": removed})

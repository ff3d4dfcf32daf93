"""``/queue``, ``/interrupt`` and ``/free``: what is queued and running, and stopping it."""

from __future__ import annotations

import asyncio

from aiohttp import web

from loom.engine import allocator
from loom.server.routes._common import SMALL_BODY, field, json_body, raw_json, str_list
from loom.server.state import get_state

routes = web.RouteTableDef()


@routes.get("/queue")
async def get_queue(request: web.Request) -> web.Response:
    running, pending = get_state(request).store.queue.listing_json()
    return raw_json('{"queue_running":[' + ",".join(running) + '],"queue_pending":['
                    + ",".join(pending) + "]}")


@routes.post("/queue")
async def post_queue(request: web.Request) -> web.Response:
    state = get_state(request)
    data = await json_body(request, limit=SMALL_BODY)
    clear = field(data, "clear", bool, False)
    delete = str_list(data, "delete")
    removed = 0
    if clear:
        removed += state.store.queue.clear_pending()
    if delete:
        removed += state.store.queue.delete_pending(delete)
        # ComfyUI deletes from the pending queue only; a running prompt is interrupted instead,
        # which is what a client deleting the item it sees running wants.
        for prompt_id in delete:
            state.workers.interrupt(prompt_id)
    return web.json_response({"removed": removed})


@routes.post("/interrupt")
async def post_interrupt(request: web.Request) -> web.Response:
    state = get_state(request)
    data = await json_body(request, allow_empty=True, limit=SMALL_BODY)
    prompt_id = field(data, "prompt_id", str)
    interrupted = state.workers.interrupt(prompt_id)
    return web.json_response({"interrupted": interrupted})


@routes.post("/free")
async def post_free(request: web.Request) -> web.Response:
    state = get_state(request)
    data = await json_body(request, allow_empty=True, limit=SMALL_BODY)
    unload_models = field(data, "unload_models", bool, False)
    free_memory = field(data, "free_memory", bool, False)
    if free_memory:
        state.workers.clear_caches()
    if (unload_models or free_memory) and state.models.created:
        # May wait for a node that is using a model: not on the event loop.
        await asyncio.to_thread(state.models.free)
    if free_memory or unload_models:
        # Unreachable objects freed, then the freed pages handed back to the OS (glibc keeps
        # them otherwise, and RSS would not move).
        await asyncio.to_thread(allocator.release)
    return web.json_response({"unload_models": unload_models, "free_memory": free_memory})

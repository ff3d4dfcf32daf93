"""``/prompt``: queue a prompt (validated first), and the queue length."""

from __future__ import annotations

import asyncio
import time
import uuid

from aiohttp import web

from loom.engine.validate import validate_prompt
from loom.graph.errors import PromptError
from loom.graph.workflow import convert_workflow, looks_like_api_prompt
from loom.server.previews import preview_method_error
from loom.server.routes._common import ApiError, field, json_body
from loom.server.state import AppState, get_state
from loom.server.worker import Prevalidated
from loom.store.queue import DuplicatePromptId, number_json

routes = web.RouteTableDef()

MAX_PROMPT_ID_LENGTH = 200


@routes.get("/prompt")
async def get_prompt(request: web.Request) -> web.Response:
    state = get_state(request)
    return web.json_response({"exec_info": {"queue_remaining": state.store.queue.count()}})


@routes.post("/prompt")
async def post_prompt(request: web.Request) -> web.Response:
    return web.json_response(await queue_prompt(get_state(request), await json_body(request)))


async def queue_prompt(state: AppState, data: dict) -> dict:
    """Validate and queue a ``POST /prompt`` body; the one place prompts enter the queue.
    Returns ComfyUI's answer (``prompt_id``, ``number``, ``node_errors``); a refused prompt
    raises :class:`PromptError` (or :class:`ApiError`), which the error middleware answers.

    Beyond ComfyUI's body, a UI workflow may stand in for the prompt (``{"workflow": {...}}``
    with no ``prompt``): it is converted here, and kept as ``extra_pnginfo.workflow`` so the
    images it makes carry it, as when the editor queues it.
    """
    if "prompt" not in data and isinstance(data.get("workflow"), dict):
        workflow = data["workflow"]
        if looks_like_api_prompt(workflow):
            prompt = workflow
        else:
            prompt = await asyncio.to_thread(
                convert_workflow, workflow, state.registry.object_info(state.node_ctx()))
            data = with_workflow_pnginfo(data, workflow)
        data = {**data, "prompt": prompt}
    if "prompt" not in data:
        raise PromptError("no_prompt", "No prompt provided",
                          "the body must have a 'prompt' object (or a UI 'workflow')")
    client_id = field(data, "client_id", str)
    extra_data = field(data, "extra_data", dict, {})
    if (problem := preview_method_error(extra_data)) is not None:
        raise ApiError(400, "invalid_request", problem)
    front = field(data, "front", bool, False)
    number = field(data, "number", (int, float))
    prompt_id = field(data, "prompt_id", str)
    if prompt_id is None:
        prompt_id = str(uuid.uuid4())
    if not prompt_id.strip() or len(prompt_id) > MAX_PROMPT_ID_LENGTH:
        raise ApiError(400, "invalid_request",
                       f"'prompt_id' must be a non-empty string of at most {MAX_PROMPT_ID_LENGTH} "
                       "characters")
    targets = field(data, "partial_execution_targets", list)
    if targets is not None and not all(isinstance(t, (str, int)) and not isinstance(t, bool)
                                       for t in targets):
        raise ApiError(400, "invalid_request", "'partial_execution_targets' must be a list of node ids")

    prompt = data["prompt"]
    # Always off the event loop: validation runs choices functions (folder listings) and
    # plugins' validators, which may be slow.
    validated = await asyncio.to_thread(validate_prompt, prompt, state.registry,
                                        state.node_ctx(), targets)

    extra_data = dict(extra_data)
    if client_id is not None:
        extra_data["client_id"] = client_id
    else:
        client_id = extra_data.get("client_id") if isinstance(extra_data.get("client_id"), str) \
            else None
    extra_data.setdefault("create_time", int(time.time() * 1000))
    try:
        number = state.store.queue.enqueue(
            prompt_id, validated.raw, extra_data, validated.outputs, client_id=client_id,
            front=front, number=number,
            payload=Prevalidated(validated, dict(state.registry.classes)))
    except DuplicatePromptId as e:
        raise ApiError(400, "duplicate_prompt_id", str(e)) from None
    return {"prompt_id": prompt_id, "number": number_json(number), "node_errors": {}}


def with_workflow_pnginfo(data: dict, workflow: dict) -> dict:
    """``data`` with ``workflow`` as ``extra_data.extra_pnginfo.workflow`` unless one is set."""
    extra_data = dict(field(data, "extra_data", dict, {}))
    pnginfo = extra_data.get("extra_pnginfo")
    pnginfo = dict(pnginfo) if isinstance(pnginfo, dict) else {}
    pnginfo.setdefault("workflow", workflow)
    extra_data["extra_pnginfo"] = pnginfo
    return {**data, "extra_data": extra_data}

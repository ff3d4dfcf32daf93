"""UI workflows on the server: convert one to an API prompt, queue one, load one from a PNG.

``POST /workflow/convert``
    Body: a UI workflow (what the editor saves), or ``{"workflow": {...}}``. Answers the API
    prompt (``{"<id>": {"class_type", "inputs", "_meta"}}``), or 400 with ComfyUI's error shape
    (``{"error": {...}, "node_errors": {...}}``, type ``invalid_workflow``). With ``?validate=1``
    the prompt is also checked against the node declarations, as ``POST /prompt`` would.

``POST /workflow/queue``
    Body: ``POST /prompt``'s, with ``workflow`` in place of ``prompt``: ``{"workflow": {...},
    "client_id": ..., "extra_data": ..., "front": ..., "prompt_id": ...,
    "partial_execution_targets": [...]}``. The workflow is converted, and also stored as
    ``extra_data.extra_pnginfo.workflow`` (so saved images carry it, as with the editor), then
    queued by ``POST /prompt``'s own handler: same validation, answer and errors. An API prompt
    given as ``workflow`` is queued as it is.

``POST /workflow/load``
    Body: a PNG (raw, ``Content-Type: image/png``, or a multipart file field) or a workflow JSON
    file. Answers ``{"workflow", "prompt", "prompt_source", ...}``: the prompt converted from the
    workflow the file carries; when it has none, or it cannot be converted, the API prompt that
    was embedded (``prompt_source`` says which, ``conversion_error`` why). With ``?queue=1`` (or
    a form field ``queue``) the prompt is queued too, answering ``queued`` with ``POST /prompt``'s
    answer; ``client_id`` goes in the query or a form field.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from loom import jsonsafe
from loom.engine.validate import validate_prompt
from loom.graph.errors import PromptError
from loom.graph.pnginfo import is_png, workflow_and_prompt_from_png
from loom.graph.workflow import convert_workflow, is_ui_workflow, looks_like_api_prompt
from loom.server.routes import prompt as prompt_routes
from loom.server.routes._common import bad_request, is_yes, json_body, query_bool, read_body
from loom.server.routes.files import _read_form
from loom.server.state import AppState, get_state

routes = web.RouteTableDef()


def _convert(state: AppState, workflow: Any) -> dict[str, dict]:
    """Convert against the nodes this server has (blocking: run it in a thread)."""
    node_defs = state.registry.object_info(state.node_ctx())
    return convert_workflow(workflow, node_defs)


async def convert(state: AppState, workflow: Any) -> dict[str, dict]:
    return await asyncio.to_thread(_convert, state, workflow)


async def queue_prompt(state: AppState, prompt: dict, body: dict,
                       workflow: dict | None) -> dict:
    """Queue ``prompt`` like ``POST /prompt`` with the other fields of ``body``."""
    forwarded = {k: v for k, v in body.items() if k not in ("workflow", "prompt", "queue")}
    if workflow is not None:
        forwarded = prompt_routes.with_workflow_pnginfo(forwarded, workflow)
    return await prompt_routes.queue_prompt(state, {**forwarded, "prompt": prompt})


def _workflow_from_body(data: dict) -> Any:
    if is_ui_workflow(data) or looks_like_api_prompt(data):
        return data
    if "workflow" in data:
        return data["workflow"]
    raise bad_request("send a UI workflow (an object with 'nodes' and 'links'), or "
                      "{\"workflow\": {...}}", "invalid_workflow")


@routes.post("/workflow/convert")
async def post_convert(request: web.Request) -> web.Response:
    state = get_state(request)
    workflow = _workflow_from_body(await json_body(request))
    prompt = await convert(state, workflow)
    if query_bool(request, "validate"):
        await asyncio.to_thread(validate_prompt, prompt, state.registry, state.node_ctx())
    return web.json_response(prompt)


@routes.post("/workflow/queue")
async def post_queue(request: web.Request) -> web.Response:
    state = get_state(request)
    data = await json_body(request)
    if "workflow" not in data or data["workflow"] is None:
        raise bad_request("'workflow' is required: the UI workflow to queue (or use POST /prompt "
                          "for an API prompt)", "invalid_workflow")
    workflow = data["workflow"]
    if looks_like_api_prompt(workflow):
        return web.json_response(await queue_prompt(state, workflow, data, None))
    if not isinstance(workflow, dict):
        raise bad_request("'workflow' must be an object (a UI workflow)", "invalid_workflow")
    prompt = await convert(state, workflow)
    return web.json_response(await queue_prompt(state, prompt, data, workflow))


# -- loading a PNG or a workflow file ---------------------------------------------------------

FILE_FIELDS = ("file", "image", "workflow")


async def _read_upload(request: web.Request, limit: int) -> tuple[bytes, dict[str, str]]:
    """The uploaded file's bytes and the form's text fields (none for a raw body)."""
    if request.content_type.startswith("multipart/"):
        fields, files = await _read_form(request, limit)
        name = next((n for n in FILE_FIELDS if n in files), next(iter(files), None))
        if name is None:
            raise bad_request("the form has no file: send the PNG or workflow JSON as a 'file' field")
        return files[name][1], fields
    return await read_body(request, limit), {}


def _parse_file(data: bytes) -> tuple[dict | None, dict | None]:
    """(workflow, embedded prompt) from PNG bytes or JSON text."""
    if not data.strip():
        raise bad_request("the upload is empty: send a PNG or a workflow JSON file", "invalid_file")
    if is_png(data):
        try:
            return workflow_and_prompt_from_png(data)
        except ValueError as e:
            raise bad_request(f"cannot read the PNG: {e}", "invalid_png") from None
    try:
        value = jsonsafe.loads(data)
    except jsonsafe.JSONError as e:
        raise bad_request(f"the upload is neither a PNG nor JSON ({e}): send a PNG saved by Loom "
                          "or ComfyUI, or a workflow .json file", "invalid_file") from None
    if isinstance(value, dict) and isinstance(value.get("workflow"), dict) and "nodes" not in value:
        value = value["workflow"]  # {"workflow": {...}} as some tools save it
    if is_ui_workflow(value):
        return value, None
    if looks_like_api_prompt(value):
        return None, value
    raise bad_request("the JSON file is neither a UI workflow (with 'nodes') nor an API prompt",
                      "invalid_file")


@routes.post("/workflow/load")
async def post_load(request: web.Request) -> web.Response:
    state = get_state(request)
    data, fields = await _read_upload(request, state.settings.max_upload_mb * 2**20)
    workflow, embedded = await asyncio.to_thread(_parse_file, data)
    if workflow is None and embedded is None:
        raise bad_request("the PNG carries no workflow and no prompt (it was not saved by Loom or "
                          "ComfyUI, or saved with metadata turned off)", "no_workflow")
    result: dict[str, Any] = {"workflow": workflow}
    if workflow is not None:
        try:
            result["prompt"] = await convert(state, workflow)
            result["prompt_source"] = "workflow"
        except PromptError as e:
            if embedded is None:
                raise
            result["conversion_error"] = e.to_json()
    if "prompt" not in result:
        result["prompt"], result["prompt_source"] = embedded, "embedded_prompt"

    queue_flag = fields.get("queue") or request.query.get("queue") or ""
    if is_yes(queue_flag):
        body: dict[str, Any] = {}
        client_id = fields.get("client_id") or request.query.get("client_id")
        if client_id:
            body["client_id"] = client_id
        result["queued"] = await queue_prompt(state, result["prompt"], body, workflow)
    return web.json_response(result)

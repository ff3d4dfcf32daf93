"""User files (saved workflows, ...), settings and users: ComfyUI's ``/userdata`` routes.

``{file}`` is a URL-encoded relative path, e.g. ``workflows%2Fportrait.json``. Files live in
SQLite (see :mod:`loom.store.userdata`), so a save is atomic.
"""

from __future__ import annotations

import mimetypes

from aiohttp import web

from loom.server.routes._common import (
    SMALL_BODY,
    bad_request,
    json_body,
    loads,
    missing_stylesheet,
    not_found,
    query_bool,
    read_body,
)
from loom.server.state import get_state
from loom.store.userdata import UserData

routes = web.RouteTableDef()


def _store(request: web.Request) -> UserData:
    return get_state(request).store.userdata


def _path(raw: str) -> str:
    from loom.store.userdata import clean_path

    return clean_path(raw)


@routes.get("/userdata")
async def list_userdata(request: web.Request) -> web.Response:
    directory = request.query.get("dir")
    if directory is None:
        raise bad_request("query parameter 'dir' is required")
    recurse = query_bool(request, "recurse", False)
    full_info = query_bool(request, "full_info", False)
    split = query_bool(request, "split", False)
    files = _store(request).list(directory, recurse=recurse)
    if full_info:
        return web.json_response([f.as_json() for f in files])
    if split:
        return web.json_response([[f.path, *f.path.split("/")] for f in files])
    return web.json_response([f.path for f in files])


@routes.get("/v2/userdata")
async def list_userdata_v2(request: web.Request) -> web.Response:
    return web.json_response(_store(request).entries(request.query.get("path", "")))


@routes.get("/userdata/{file}")
async def get_userdata(request: web.Request) -> web.Response:
    path = _path(request.match_info["file"])
    content = _store(request).get(path)
    ctype = mimetypes.guess_type(path)[0] or "application/octet-stream"
    if content is None:
        if ctype == "text/css":
            # A page's <link rel=stylesheet> (ComfyUI's app asks for user.css): a JSON 404
            # would be refused as a stylesheet and logged as an error.
            return missing_stylesheet(path)
        raise not_found(f"{path} does not exist")
    if ctype not in ("application/json", "text/plain", "text/csv", "text/markdown", "text/css"):
        ctype = "application/octet-stream"
    return web.Response(body=content, content_type=ctype,
                        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"})


@routes.post("/userdata/{file}")
async def post_userdata(request: web.Request) -> web.Response:
    state = get_state(request)
    path = _path(request.match_info["file"])
    overwrite = query_bool(request, "overwrite", True)
    full_info = query_bool(request, "full_info", False)
    body = await read_body(request, state.settings.max_upload_mb * 2**20)
    info = _store(request).put(path, body, overwrite=overwrite)
    return web.json_response(info.as_json() if full_info else info.path)


@routes.delete("/userdata/{file}")
async def delete_userdata(request: web.Request) -> web.Response:
    path = _path(request.match_info["file"])
    if not _store(request).delete(path):
        raise not_found(f"{path} does not exist")
    return web.Response(status=204)


@routes.post("/userdata/{file}/move/{dest}")
async def move_userdata(request: web.Request) -> web.Response:
    source = _path(request.match_info["file"])
    dest = _path(request.match_info["dest"])
    overwrite = query_bool(request, "overwrite", True)
    full_info = query_bool(request, "full_info", False)
    info = _store(request).move(source, dest, overwrite=overwrite)
    if info is None:
        raise not_found(f"{source} does not exist")
    return web.json_response(info.as_json() if full_info else info.path)


@routes.get("/settings")
async def get_settings(request: web.Request) -> web.Response:
    return web.json_response(_store(request).settings())


@routes.post("/settings")
async def post_settings(request: web.Request) -> web.Response:
    data = await json_body(request)
    _store(request).update_settings(data)
    return web.json_response({"ok": True})


@routes.get("/settings/{id}")
async def get_setting(request: web.Request) -> web.Response:
    return web.json_response(_store(request).setting(request.match_info["id"]))


@routes.post("/settings/{id}")
async def post_setting(request: web.Request) -> web.Response:
    raw = await read_body(request, SMALL_BODY)
    value = loads(raw) if raw.strip() else None
    _store(request).update_settings({request.match_info["id"]: value})
    return web.json_response({"ok": True})


@routes.get("/users")
async def get_users(request: web.Request) -> web.Response:
    # ComfyUI's single-user answer. A "users" key (even empty) makes its front end a multi-user
    # app that asks every new visitor to pick a user.
    return web.json_response({"storage": "server", "migrated": True})


@routes.post("/users")
async def post_users(request: web.Request) -> web.Response:
    # "error" is a string: ComfyUI's front end shows it as it is.
    return web.json_response({"error": "Loom runs single-user: there are no users to create",
                              "type": "single_user"}, status=400)

"""``/object_info`` (node descriptions for the editor), ``/node_packs``, ``/embeddings``,
``/extensions``, and what packs add to ComfyUI's front end (``/i18n``, ``/global_subgraphs``)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from aiohttp import web

from loom.paths import UnsafePathError, safe_join
from loom.server.routes._common import not_found
from loom.server.state import AppState, get_state

routes = web.RouteTableDef()


@routes.get("/object_info")
async def object_info(request: web.Request) -> web.Response:
    state = get_state(request)
    # Off the event loop: choices functions list folders and run plugins' code.
    return web.json_response(await asyncio.to_thread(state.registry.object_info, state.node_ctx()))


@routes.get("/object_info/{node_class}")
async def object_info_one(request: web.Request) -> web.Response:
    state = get_state(request)
    name = request.match_info["node_class"]
    if name not in state.registry:
        raise not_found(f"Unknown node class {name!r}")
    info = await asyncio.to_thread(state.registry.describe, name, state.node_ctx())
    return web.json_response({name: info})


@routes.get("/node_packs")
async def node_packs(request: web.Request) -> web.Response:
    """Every node pack (built-in and custom_nodes/), its nodes, load time and, for a pack that
    failed to import, the traceback: so a user sees why a plugin's nodes are missing."""
    packs = get_state(request).registry.packs
    return web.json_response([
        {"module": key, "name": info.name, "builtin": info.builtin, "path": info.path,
         "nodes": info.nodes, "seconds": round(info.seconds, 4), "error": info.error}
        for key, info in packs.items()])


@routes.get("/embeddings")
async def embeddings(request: web.Request) -> web.Response:
    folders = get_state(request).settings.folders
    names = [n.rsplit(".", 1)[0] for n in await asyncio.to_thread(folders.list_models, "embeddings")]
    return web.json_response(names)


def web_directories(state: AppState) -> dict[str, Path]:
    """Pack name -> its ``WEB_DIRECTORY`` (front-end extension files), for loaded packs."""
    out: dict[str, Path] = {}
    for key, info in state.registry.packs.items():
        if info.error:
            continue
        module = sys.modules.get(key)
        web_dir = getattr(module, "WEB_DIRECTORY", None) if module is not None else None
        if not isinstance(web_dir, str) or not web_dir:
            continue
        base = Path(info.path)
        base = base if base.is_dir() else base.parent
        try:
            folder = safe_join(base, web_dir.removeprefix("./"))
        except UnsafePathError:
            continue
        if folder.is_dir():
            out[info.name] = folder
    return out


@routes.get("/extensions")
async def extensions(request: web.Request) -> web.Response:
    """URLs of the JavaScript files node packs ship for the editor."""
    urls = []
    for name, folder in sorted(web_directories(get_state(request)).items()):
        for path in sorted(folder.rglob("*.js")):
            rel = path.relative_to(folder).as_posix()
            if not any(part.startswith(".") for part in rel.split("/")):
                urls.append(f"/extensions/{name}/{rel}")
    return web.json_response(urls)


@routes.get("/extensions/{pack}/{path:.+}")
async def extension_file(request: web.Request) -> web.StreamResponse:
    state = get_state(request)
    pack = request.match_info["pack"]
    folder = web_directories(state).get(pack)
    if folder is None and state.web_root is not None:
        # The app's own extensions (ComfyUI's front end ships extensions/core/ that plugins
        # import from).
        try:
            folder = safe_join(state.web_root / "extensions", pack)
        except UnsafePathError:
            folder = None
        if folder is not None and (not folder.is_dir() or pack.startswith(".")):
            folder = None
    if folder is None:
        raise not_found("Unknown extension")
    try:
        path = safe_join(folder, request.match_info["path"])
    except UnsafePathError as e:
        raise not_found(str(e)) from None
    if not path.is_file():
        raise not_found("Unknown extension file")
    return web.FileResponse(path, headers={"Cache-Control": "no-cache"})


@routes.get("/i18n")
async def i18n(request: web.Request) -> web.Response:
    """Translations node packs ship for the editor (``{locale: {...}}``): none yet."""
    return web.json_response({})


@routes.get("/global_subgraphs")
async def global_subgraphs(request: web.Request) -> web.Response:
    """Subgraph blueprints node packs ship (``{id: {"name", "info", "data"}}``): none yet."""
    return web.json_response({})


@routes.get("/global_subgraphs/{id}")
async def global_subgraph(request: web.Request) -> web.Response:
    raise not_found(f"No subgraph blueprint {request.match_info['id']!r}")

"""Workflow templates: ``/templates/...`` (Loom's own) and ``/workflow_templates`` (node packs').

``GET /templates/index.json`` lists the categories and templates (ComfyUI's front-end shape,
see :mod:`loom.server.template_catalog`); ``GET /templates/NAME.json`` is a template's UI
workflow (and puts the sample images it loads in the input folder) and
``GET /templates/NAME-1.svg`` its thumbnail. ``GET /workflow_templates`` maps
each node pack to the names of the workflows it ships, served at
``/workflow_templates/PACK/NAME.json``.
"""

from __future__ import annotations

import asyncio
import re

from aiohttp import web

from loom.server.routes._common import not_found
from loom.server.state import get_state
from loom.server.template_catalog import FILE_TYPES, TemplateCatalog, pack_file, pack_templates

routes = web.RouteTableDef()

# index.fr.json, index.zh-TW.json: the front end asks for its language's index first.
LOCALE_INDEX = re.compile(r"^index\.[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})?\.json$")
NO_CACHE = {"Cache-Control": "no-cache"}


def catalog(request: web.Request) -> TemplateCatalog:
    return TemplateCatalog(get_state(request).settings.templates_dir)


@routes.get("/templates/{file}")
async def template_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["file"]
    templates = catalog(request)
    if name == "index.json" or LOCALE_INDEX.match(name):
        # Titles are English only: every language gets the one index.
        return web.json_response(templates.index(), headers=NO_CACHE)
    path = templates.file(name)
    if path is not None and path.suffix == ".json":
        workflow = await asyncio.to_thread(templates.workflow, path.stem)
        if workflow is not None:
            input_dir = get_state(request).settings.folders.input_dir
            await asyncio.to_thread(templates.seed_inputs, workflow, input_dir)
    if path is not None:
        ctype = FILE_TYPES.get(path.suffix.lower(), "image/svg+xml")
        return web.FileResponse(path, headers={**NO_CACHE, "Content-Type": ctype})
    if name == "index_logo.json":  # provider logos of API-node templates: none here
        return web.json_response({}, headers=NO_CACHE)
    svg = templates.thumbnail(name)
    if svg is not None:
        return web.Response(text=svg, content_type="image/svg+xml", headers=NO_CACHE)
    raise not_found(f"No template file {name!r}; GET /templates/index.json lists the templates")


@routes.get("/workflow_templates")
async def workflow_templates(request: web.Request) -> web.Response:
    return web.json_response(pack_templates(get_state(request).registry))


@routes.get("/workflow_templates/{pack}/{file}")
async def pack_template_file(request: web.Request) -> web.StreamResponse:
    pack, name = request.match_info["pack"], request.match_info["file"]
    path = pack_file(get_state(request).registry, pack, name)
    if path is None:
        raise not_found(f"Node pack {pack!r} ships no template file {name!r}")
    return web.FileResponse(path, headers={**NO_CACHE,
                                           "Content-Type": FILE_TYPES[path.suffix.lower()]})

"""``GET /`` and the static files of the browser app: Loom's editor, or ComfyUI's front end with
``--front-end comfyui`` (see :mod:`loom.server.front_end`)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from loom.paths import UnsafePathError, safe_join
from loom.server.routes._common import missing_stylesheet, not_found
from loom.server.state import get_state

routes = web.RouteTableDef()


@routes.get("/")
async def index(request: web.Request) -> web.StreamResponse:
    root = get_state(request).web_root
    page = root / "index.html"
    if not page.is_file():
        return web.Response(text="Loom is running, but the editor is not built (no index.html in "
                                 f"{root}): run "
                                 "scripts/build_web.sh. The HTTP API is at /prompt, /queue, "
                                 "/history, /object_info.",
                            content_type="text/plain")
    return web.FileResponse(page, headers={"Cache-Control": "no-cache"})


@routes.get("/user.css")
async def user_css(request: web.Request) -> web.Response:
    # ComfyUI's app links a user.css next to its page; Loom keeps one (if any) in user data,
    # /userdata/user.css. A stylesheet 404 in CSS, not JSON, so the browser takes it quietly.
    return missing_stylesheet("user.css")


# What the editor is made of; nothing else under web/ (sources' configs, node_modules) is served.
WEB_SUFFIXES = {".html", ".js", ".mjs", ".css", ".map", ".json", ".png", ".jpg", ".jpeg", ".webp",
                ".gif", ".svg", ".ico", ".woff", ".woff2", ".ttf", ".eot", ".txt", ".webm"}


def static_route(root: Path):
    """A handler for the editor's files under ``root`` (registered last, at the root only).

    Our own rather than ``add_static``: a missing file must be a JSON 404 like every other, and
    nothing outside ``root`` (or hidden) may be reached."""

    async def static_file(request: web.Request) -> web.StreamResponse:
        rel = request.match_info["path"]
        try:
            path = safe_join(root, rel)
        except UnsafePathError:
            raise not_found(f"No such file: /{rel}") from None
        parts = rel.split("/")
        if (any(p.startswith(".") or p == "node_modules" for p in parts) or not path.is_file()
                or path.suffix.lower() not in WEB_SUFFIXES):
            raise not_found(f"No such file or route: /{rel}")
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    return static_file

"""``GET /`` and the editor's static files."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from loom.config import REPO_ROOT, Settings
from loom.server.state import get_state

routes = web.RouteTableDef()


def web_root(settings: Settings) -> Path:
    """The built editor (``settings.web_dir``) when there is one, else the sources in web/."""
    if (settings.web_dir / "index.html").is_file():
        return settings.web_dir
    return REPO_ROOT / "web"


@routes.get("/")
async def index(request: web.Request) -> web.StreamResponse:
    page = web_root(get_state(request).settings) / "index.html"
    if not page.is_file():
        return web.Response(text="Loom is running. The editor is not built (no web/index.html); "
                                 "the HTTP API is at /prompt, /queue, /history, /object_info.",
                            content_type="text/plain")
    return web.FileResponse(page, headers={"Cache-Control": "no-cache"})

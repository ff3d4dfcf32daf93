"""Response headers: nosniff and anti-framing on every response, CORS for the configured
origins, and the sandbox for file routes (types a browser could run go out as downloads)."""

from __future__ import annotations

import mimetypes
from pathlib import PurePosixPath
from typing import Any

from aiohttp import web

from loom.server.security.origins import _route_path

# Routes that serve files the user or a plugin wrote; prefix match after dropping "/api".
FILE_ROUTE_PREFIXES = ("/view", "/userdata")
# Types a browser displays without running anything (with nosniff + the sandbox CSP below).
INLINE_SAFE_TYPES = frozenset({
    "image/png", "image/jpeg", "image/webp", "image/gif", "image/avif", "image/bmp",
    "video/mp4", "video/webm", "audio/mpeg", "audio/wav", "audio/x-wav", "audio/flac",
    "audio/ogg", "audio/webm", "text/plain", "text/csv", "text/markdown", "application/json",
    "text/css",  # runs no script; a user.css saved in user data styles the editor
})
FILE_CSP = "default-src 'none'; img-src 'self' data:; media-src 'self'; style-src 'unsafe-inline'; sandbox"


def _is_file_route(path: str) -> bool:
    return path.startswith(FILE_ROUTE_PREFIXES)


def _declared_type(response: web.StreamResponse) -> str | None:
    if "Content-Type" in response.headers:
        return response.headers["Content-Type"].split(";", 1)[0].strip().lower()
    if isinstance(response, web.FileResponse):
        path = getattr(response, "_path", None)
        if path is not None:
            return (mimetypes.guess_type(str(path))[0] or "application/octet-stream").lower()
    return None


def _harden_file_response(request: web.Request, response: web.StreamResponse) -> None:
    """Never let a file route render active content in Loom's origin."""
    if response.prepared:
        return
    response.headers["Content-Security-Policy"] = FILE_CSP
    if response.status >= 300:
        return
    ctype = _declared_type(response)
    if ctype is None or ctype not in INLINE_SAFE_TYPES:
        response.headers["Content-Type"] = "application/octet-stream"
        name = PurePosixPath(request.query.get("filename", "") or request.path).name or "download"
        safe = "".join(c for c in name if c.isalnum() or c in "._-") or "download"
        response.headers["Content-Disposition"] = f'attachment; filename="{safe}"'


def _add_headers(request: web.Request, response: web.StreamResponse, policy: Any) -> None:
    if response.prepared:
        return
    h = response.headers
    origin = request.headers.get("Origin")
    if policy.explicitly_allowed(origin):
        # CORS for the configured origins only (never "*"), so a frontend served elsewhere can
        # read the answers; everybody else gets no CORS headers and the browser hides them.
        h["Access-Control-Allow-Origin"] = origin.strip()
        h.add("Vary", "Origin")
    h["X-Content-Type-Options"] = "nosniff"
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("Referrer-Policy", "same-origin")
    h.setdefault("Cross-Origin-Resource-Policy", "same-origin")
    h.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    if "Content-Security-Policy" not in h:
        h["Content-Security-Policy"] = "frame-ancestors 'none'"
    if _is_file_route(_route_path(request)):
        _harden_file_response(request, response)

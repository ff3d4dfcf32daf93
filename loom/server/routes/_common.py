"""Helpers shared by the route modules: JSON errors, typed body and query parsing.

Every client mistake becomes an :class:`ApiError`, which the app's error middleware turns into
``{"error": {"type", "message"}}`` with a 4xx status: malformed input never gives a 500.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from loom import jsonsafe


class ApiError(Exception):
    def __init__(self, status: int, type: str, message: str, extra: dict | None = None):
        super().__init__(message)
        self.status, self.type, self.message = status, type, message
        self.extra = extra or {}

    def response(self) -> web.Response:
        return error_response(self.status, self.type, self.message, self.extra)


def error_response(status: int, type: str, message: str, extra: dict | None = None) -> web.Response:
    body: dict[str, Any] = {"error": {"type": type, "message": message, **(extra or {})}}
    return web.json_response(body, status=status)


def missing_stylesheet(name: str) -> web.Response:
    """A 404 for a ``<link rel=stylesheet>``: in CSS, since browsers refuse (and log) a JSON one."""
    return web.Response(status=404, text=f"/* {name} does not exist */", content_type="text/css",
                        headers={"Cache-Control": "no-cache"})


def bad_request(message: str, type: str = "invalid_request") -> ApiError:
    return ApiError(400, type, message)


def not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message)


# Bodies of the control routes (/queue, /history, /interrupt, /free, /settings/{id}) are small;
# /prompt, /workflow/* and uploads may be as big as --max-upload-mb.
SMALL_BODY = 1 << 20
# Bigger JSON bodies are parsed in a thread: parsing 100 MB takes seconds.
INLINE_PARSE_BYTES = 256 << 10


def read_timeout(request: web.Request) -> float:
    """--request-timeout: a client that stops sending its body this long gets a 408."""
    from loom.server.state import get_state

    return get_state(request).settings.request_timeout_s


def timed_out(seconds: float) -> ApiError:
    return ApiError(408, "request_timeout", "The request body stopped arriving (nothing for "
                    f"{seconds:g} s, --request-timeout)")


async def read_body(request: web.Request, limit: int, timeout: float | None = None) -> bytes:
    """The whole body, refused with 413 past ``limit`` bytes (declared or streamed) and with
    408 when the client stalls for ``timeout`` seconds (default: --request-timeout)."""
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit)
    seconds = read_timeout(request) if timeout is None else timeout
    buf = bytearray()
    while True:
        try:
            async with asyncio.timeout(seconds):
                chunk = await request.content.readany()
        except TimeoutError:
            raise timed_out(seconds) from None
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > limit:
            raise too_large(limit)


def too_large(limit: int) -> ApiError:
    size = f"{limit // 2**20} MB" if limit >= 2**20 else f"{limit // 1024} KB"
    return ApiError(413, "too_large", f"The request body is larger than the limit of {size} "
                    "for this route")


def body_limit(request: web.Request) -> int:
    """The big-body limit: the server's --max-upload-mb."""
    from loom.server.state import get_state

    return get_state(request).settings.max_upload_mb * 2**20


async def json_body(request: web.Request, *, allow_empty: bool = False,
                    limit: int | None = None) -> dict:
    """The request body as a JSON object (400 when it is not valid JSON or not an object).
    ``limit`` defaults to --max-upload-mb; control routes pass ``SMALL_BODY``."""
    raw = await read_body(request, body_limit(request) if limit is None else limit)
    if not raw.strip():
        if allow_empty:
            return {}
        raise bad_request("The request body is empty; send a JSON object", "invalid_json")
    data = loads(raw) if len(raw) <= INLINE_PARSE_BYTES else await asyncio.to_thread(loads, raw)
    if not isinstance(data, dict):
        raise bad_request(f"The request body must be a JSON object, not {_json_type(data)}",
                          "invalid_json")
    return data


def loads(raw: bytes | str):
    """Strict JSON (:func:`loom.jsonsafe.loads`); ApiError 400 when malformed."""
    try:
        return jsonsafe.loads(raw)
    except jsonsafe.JSONError as e:
        raise bad_request(f"Malformed JSON in the request body: {e}", "invalid_json") from None


def field(data: dict, name: str, types: type | tuple[type, ...], default: Any = None, *,
          required: bool = False, what: str | None = None) -> Any:
    """``data[name]`` checked against ``types`` (bool is never accepted as a number)."""
    if name not in data or data[name] is None:
        if required:
            raise bad_request(f"'{name}' is required")
        return default
    value = data[name]
    ok = isinstance(value, types)
    if ok and isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        ok = False
    if not ok:
        raise bad_request(f"'{name}' must be {what or _type_names(types)}, not {_json_type(value)}")
    return value


def str_list(data: dict, name: str) -> list[str] | None:
    value = field(data, name, list, what="a list of strings")
    if value is None:
        return None
    if not all(isinstance(v, str) for v in value):
        raise bad_request(f"'{name}' must be a list of strings")
    return value


def query_int(request: web.Request, name: str, default: int | None = None, *,
              minimum: int | None = 0) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"query parameter '{name}' must be an integer, not {raw!r}") from None
    if minimum is not None and value < minimum:
        raise bad_request(f"query parameter '{name}' must be at least {minimum}")
    if abs(value) > 2**62:  # SQLite integers are 64-bit: a bigger one would be a 500
        raise bad_request(f"query parameter '{name}' is too large")
    return value


YES = frozenset({"1", "true", "yes", "on"})
NO = frozenset({"0", "false", "no", "off"})


def is_yes(raw: str | None) -> bool:
    """A yes/no form or query value: true for 1/true/yes/on (any case), false for anything else."""
    return (raw or "").strip().lower() in YES


def query_bool(request: web.Request, name: str, default: bool = False) -> bool:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in YES:
        return True
    if value in NO:
        return False
    raise bad_request(f"query parameter '{name}' must be true or false, not {raw!r}")


def raw_json(text: str, status: int = 200) -> web.Response:
    """A response from JSON text that is already encoded (stored history, queue rows)."""
    return web.Response(text=text, status=status, content_type="application/json")


_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number",
          bool: "true or false"}


def _type_names(types: type | tuple[type, ...]) -> str:
    types = types if isinstance(types, tuple) else (types,)
    if set(types) == {int, float}:
        return "a number"
    return " or ".join(_NAMES.get(t, t.__name__) for t in types)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__

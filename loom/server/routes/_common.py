"""Helpers shared by the route modules: JSON errors, typed body and query parsing.

Every client mistake becomes an :class:`ApiError`, which the app's error middleware turns into
``{"error": {"type", "message"}}`` with a 4xx status: malformed input never gives a 500.
"""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web


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


def bad_request(message: str, type: str = "invalid_request") -> ApiError:
    return ApiError(400, type, message)


def not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message)


async def json_body(request: web.Request, *, allow_empty: bool = False) -> dict:
    """The request body as a JSON object (400 when it is not valid JSON or not an object)."""
    raw = await request.read()
    if not raw.strip():
        if allow_empty:
            return {}
        raise bad_request("The request body is empty; send a JSON object", "invalid_json")
    data = loads(raw)
    if not isinstance(data, dict):
        raise bad_request(f"The request body must be a JSON object, not {_json_type(data)}",
                          "invalid_json")
    return data


def loads(raw: bytes | str):
    """Strict JSON (no NaN or Infinity); ApiError 400 when malformed."""
    try:
        return json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except UnicodeDecodeError as e:
        raise bad_request(f"The request body is not UTF-8 text: {e}", "invalid_json") from None
    except json.JSONDecodeError as e:
        raise bad_request(f"Malformed JSON in the request body: {e}", "invalid_json") from None
    except RecursionError:
        raise bad_request("The JSON in the request body is nested too deeply", "invalid_json") from None


def _reject_constant(name: str):
    # Python's json accepts NaN and Infinity; JSON (and browsers) do not, and a stored NaN
    # would make /queue and /history unreadable for every client.
    raise json.JSONDecodeError(f"{name} is not valid JSON", name, 0)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400
        raise json.JSONDecodeError(f"{text} is out of range", text, 0)
    return value


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


def query_bool(request: web.Request, name: str, default: bool = False) -> bool:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
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

"""The one JSON parser for text Loom did not write: request bodies, uploaded workflow files,
PNG metadata, websocket messages.

Python's ``json`` accepts things that break Loom later, far from the request that sent them:
``NaN``/``Infinity`` and ``1e400`` (not JSON; a stored one makes /queue unreadable), integers
of thousands of digits (``int()`` refuses them with a ValueError, SQLite with an
OverflowError), and lone UTF-16 surrogates such as ``"\\ud800"`` (valid JSON escapes, but not
text: SQLite and every UTF-8 encoder refuse them). :func:`loads` refuses all of these at parse
time with a :class:`JSONError`, so they never get past the door.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

# Seeds are u64 (20 digits); nothing Loom stores needs more than this.
MAX_INT_DIGITS = 50
# An escaped UTF-16 surrogate: the only way a surrogate gets into parsed JSON from UTF-8 text.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class JSONError(ValueError):
    """The text is not JSON Loom accepts; ``str()`` says why."""


def loads(raw: bytes | bytearray | str) -> Any:
    """Parse strict JSON (see the module docstring); raises :class:`JSONError`."""
    if isinstance(raw, str):
        text = raw
        try:
            data = raw.encode("utf-8")
        except UnicodeEncodeError:
            raise JSONError("the text holds a lone surrogate (not valid Unicode)") from None
    else:
        data = bytes(raw)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise JSONError(f"not UTF-8 text: {e}") from None
    try:
        value = json.loads(
            text, parse_constant=_reject_constant, parse_float=_finite_float, parse_int=_bounded_int
        )
    except json.JSONDecodeError as e:
        raise JSONError(str(e)) from None
    except RecursionError:
        raise JSONError("nested too deeply") from None
    except ValueError as e:  # raised by the hooks below
        raise JSONError(str(e)) from None
    if _SURROGATE_ESCAPE.search(data):  # rare (emoji escapes): only then walk the value
        _check_strings(value)
    return value


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def _bounded_int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS + 1:  # + a sign
        raise ValueError(f"an integer of {len(text)} digits is too large (at most {MAX_INT_DIGITS} digits)")
    return int(text)


def _check_strings(value: Any) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, dict):
            for key, child in item.items():
                _check_text(key)
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = text.encode("utf-8", "backslashreplace").decode("utf-8")[:60]
        raise JSONError(
            f'the string "{shown}" holds a lone UTF-16 surrogate (a \\ud800-\\udfff '
            "escape not in a pair), which is not text"
        ) from None

"""Prompt text -> weighted segments, the syntax ComfyUI and A1111 users write.

- ``(text)`` multiplies the weight of ``text`` by 1.1, ``[text]`` divides it by 1.1; they nest.
- ``(text:1.3)`` sets a factor of 1.3 (also nested: ``((a:2):1.5)`` is 3.0).
- ``\\(``, ``\\)``, ``\\[``, ``\\]`` and ``\\\\`` are literal characters.
- ``embedding:name`` (in any segment) names a textual-inversion embedding from models/embeddings/.

Unbalanced brackets are forgiving, as in A1111: an unclosed ``(`` weights up to the end, a stray
``)`` is kept as text.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"""
    \\[()\[\]\\]                      # escaped bracket or backslash
  | \\                                # a lone backslash
  | \(
  | \[
  | :\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*\)   # ":1.2)" closes a weighted group
  | \)
  | \]
  | [^\\()\[\]:]+
  | :
""", re.VERBOSE)

EMBEDDING = re.compile(r"embedding:([^\s,()\[\]]+)", re.IGNORECASE)


def parse_weights(text: str) -> list[tuple[str, float]]:
    """``text`` as ``[(segment, weight), …]``; neighbouring segments of equal weight are merged."""
    out: list[list] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def scale(start: int, factor: float) -> None:
        for i in range(start, len(out)):
            out[i][1] *= factor

    for m in _TOKEN.finditer(text):
        tok, weight = m.group(0), m.group(1)
        if tok.startswith("\\"):
            out.append([tok[1:] or "\\", 1.0])
        elif tok == "(":
            round_open.append(len(out))
        elif tok == "[":
            square_open.append(len(out))
        elif weight is not None:
            if round_open:
                scale(round_open.pop(), float(weight))
            else:
                out.append([tok, 1.0])
        elif tok == ")":
            if round_open:
                scale(round_open.pop(), 1.1)
            else:
                out.append([tok, 1.0])
        elif tok == "]":
            if square_open:
                scale(square_open.pop(), 1 / 1.1)
            else:
                out.append([tok, 1.0])
        else:
            out.append([tok, 1.0])
    for start in round_open:
        scale(start, 1.1)
    for start in square_open:
        scale(start, 1 / 1.1)

    merged: list[tuple[str, float]] = []
    for seg, w in out:
        if merged and abs(merged[-1][1] - w) < 1e-12:
            merged[-1] = (merged[-1][0] + seg, merged[-1][1])
        else:
            merged.append((seg, w))
    return [(s, w) for s, w in merged if s] or [("", 1.0)]


def split_embeddings(segment: str) -> list[tuple[str, bool]]:
    """``segment`` as ``[(text, False) | (embedding name, True), …]``."""
    parts: list[tuple[str, bool]] = []
    pos = 0
    for m in EMBEDDING.finditer(segment):
        if m.start() > pos:
            parts.append((segment[pos:m.start()], False))
        parts.append((m.group(1).rstrip(".:;!?"), True))
        pos = m.end()
    if pos < len(segment):
        parts.append((segment[pos:], False))
    return parts

"""Read the text chunks of a PNG: where a saved image keeps its ``prompt`` and ``workflow``.

SaveImage writes both as JSON text chunks (ComfyUI does the same), so dropping an image on the
server brings back the graph that made it. This is a small reader of PNG's chunk layout, with
no image decoding and no dependencies: it walks the chunks up to ``IEND`` and decodes ``tEXt``,
``zTXt`` and ``iTXt``. Anything that is not a well-formed PNG raises :class:`ValueError` with a
message that says what is wrong.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

from loom import jsonsafe

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A compressed text chunk may not inflate past this (a small file must not become gigabytes).
MAX_TEXT_BYTES = 64 * 2**20
MAX_CHUNK_BYTES = 2**31 - 1  # the PNG limit on one chunk's length


def is_png(data: bytes) -> bool:
    return data[:8] == PNG_SIGNATURE


def read_png_text(data: bytes) -> dict[str, str]:
    """Every text chunk of a PNG as ``{keyword: text}`` (the first one wins on repeats)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"expected PNG bytes, got {type(data).__name__}")
    data = bytes(data)
    if not is_png(data):
        raise ValueError("not a PNG file (the PNG signature is missing)")
    texts: dict[str, str] = {}
    pos = len(PNG_SIGNATURE)
    first = True
    while True:
        if pos + 8 > len(data):
            raise ValueError(f"the PNG is truncated: no chunk header at byte {pos} (and no IEND chunk)")
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if length > MAX_CHUNK_BYTES:
            raise ValueError(f"the PNG is corrupt: a chunk at byte {pos} claims {length} bytes")
        if not kind.isalpha():
            raise ValueError(f"the PNG is corrupt: invalid chunk type {kind!r} at byte {pos}")
        name = kind.decode("ascii")
        if first and name != "IHDR":
            raise ValueError(f"the PNG is corrupt: its first chunk is {name}, not IHDR")
        first = False
        end = pos + 8 + length
        if end + 4 > len(data):
            raise ValueError(f"the PNG is truncated inside its {name} chunk at byte {pos}")
        body = data[pos + 8:end]
        if name in ("tEXt", "zTXt", "iTXt"):
            (crc,) = struct.unpack(">I", data[end:end + 4])
            if zlib.crc32(kind + body) != crc:
                raise ValueError(f"the PNG is corrupt: the {name} chunk at byte {pos} fails its CRC check")
            keyword, text = _decode_text(name, body, pos)
            texts.setdefault(keyword, text)
        pos = end + 4
        if name == "IEND":
            return texts


def _decode_text(kind: str, body: bytes, pos: int) -> tuple[str, str]:
    where = f"{kind} chunk at byte {pos}"
    sep = body.find(b"\x00")
    if sep < 1 or sep > 79:
        raise ValueError(f"the PNG is corrupt: the {where} has no valid keyword")
    keyword = body[:sep].decode("latin-1")
    rest = body[sep + 1:]
    if kind == "tEXt":
        return keyword, rest.decode("latin-1")
    if kind == "zTXt":
        if not rest or rest[0] != 0:
            raise ValueError(f"the PNG is corrupt: the {where} uses an unknown compression method")
        return keyword, _inflate(rest[1:], where).decode("latin-1")
    # iTXt: compression flag, method, language tag\0, translated keyword\0, UTF-8 text
    if len(rest) < 2:
        raise ValueError(f"the PNG is corrupt: the {where} is too short")
    compressed, method = rest[0], rest[1]
    parts = rest[2:].split(b"\x00", 2)
    if len(parts) != 3:
        raise ValueError(f"the PNG is corrupt: the {where} lacks its language and translated keyword")
    raw = parts[2]
    if compressed:
        if method != 0:
            raise ValueError(f"the PNG is corrupt: the {where} uses an unknown compression method")
        raw = _inflate(raw, where)
    try:
        return keyword, raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"the PNG is corrupt: the {where} is not UTF-8 text ({e})") from None


def _inflate(raw: bytes, where: str) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(raw, MAX_TEXT_BYTES + 1)
    except zlib.error as e:
        raise ValueError(f"the PNG is corrupt: the {where} does not decompress ({e})") from None
    if len(out) > MAX_TEXT_BYTES or inflater.unconsumed_tail:
        raise ValueError(f"the {where} inflates to more than {MAX_TEXT_BYTES // 2**20} MiB of text")
    if not inflater.eof:
        raise ValueError(f"the PNG is corrupt: the {where} ends in the middle of its compressed text")
    return out


def workflow_and_prompt_from_png(data: bytes) -> tuple[dict | None, dict | None]:
    """The ``workflow`` (UI format) and ``prompt`` (API format) a PNG carries, JSON-decoded.

    Either is ``None`` when the PNG has no such chunk. A chunk that is there but does not hold a
    JSON object raises :class:`ValueError`.
    """
    texts = read_png_text(data)
    return _json_chunk(texts, "workflow"), _json_chunk(texts, "prompt")


def _json_chunk(texts: dict[str, str], key: str) -> dict | None:
    text = texts.get(key)
    if text is None:
        return None
    try:
        value: Any = jsonsafe.loads(text)
    except ValueError as e:
        raise ValueError(f"the PNG's '{key}' text is not valid JSON: {e}") from None
    if value is None:  # some writers store "null" for "none"
        return None
    if not isinstance(value, dict):
        raise ValueError(f"the PNG's '{key}' text is JSON but not an object")
    return value

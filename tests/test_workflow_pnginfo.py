"""PNG text chunks (loom.graph.pnginfo), and the PNG metadata round trip through the converter."""

from __future__ import annotations

import json
import struct
import zlib

import conftest
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL.PngImagePlugin import PngInfo
from test_workflow_fixtures import NODE_DEFS, load

from loom.graph.pnginfo import read_png_text, workflow_and_prompt_from_png
from loom.graph.workflow import convert_workflow


def png_bytes(info: PngInfo | None = None, size=(4, 3), mode="RGB") -> bytes:
    return conftest.png_bytes(size, 0, mode, info)


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def chunks_of(data: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        out.append((data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return out


def with_chunk_before_iend(data: bytes, extra: bytes) -> bytes:
    iend = data.rindex(b"IEND") - 4
    return data[:iend] + extra + data[iend:]


# -- the round trip ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["default_txt2img", "reroutes_bypass_mute", "primitives_widgets",
                                  "subgraph"])
def test_round_trip_through_pil_png_info_like_save_image(name):
    """Write a PNG the way SaveImage does (PngInfo, `prompt` and `workflow` as JSON text), read it
    back, convert its workflow: the result is the prompt that was embedded."""
    workflow = load(f"{name}.json")
    prompt = convert_workflow(workflow, NODE_DEFS)
    info = PngInfo()
    info.add_text("prompt", json.dumps(prompt))
    info.add_text("workflow", json.dumps(workflow))
    data = png_bytes(info)

    got_workflow, got_prompt = workflow_and_prompt_from_png(data)
    assert got_workflow == workflow and got_prompt == prompt
    assert convert_workflow(got_workflow, NODE_DEFS) == got_prompt


def test_round_trip_through_the_real_save_image_node(tmp_path):
    """The SaveImage node of nodes/image.py writes the file; this reader reads it back."""
    torch = pytest.importorskip("torch")
    from loom.nodeapi import RunContext
    from loom.paths import Folders
    from nodes.image import SaveImage

    folders = Folders.under(tmp_path)
    folders.create()
    workflow = load("primitives_widgets.json")
    prompt = convert_workflow(workflow, NODE_DEFS)
    result = SaveImage(RunContext(paths=folders)).run(
        images=torch.rand(1, 6, 5, 3), filename_prefix="roundtrip", prompt=prompt,
        extra_pnginfo={"workflow": workflow})
    saved = result.ui["images"][0]
    data = (folders.output_dir / saved["subfolder"] / saved["filename"]).read_bytes()

    texts = read_png_text(data)
    assert set(texts) >= {"prompt", "workflow"}
    got_workflow, got_prompt = workflow_and_prompt_from_png(data)
    assert got_prompt == prompt
    assert convert_workflow(got_workflow, NODE_DEFS) == prompt


# -- chunk kinds ------------------------------------------------------------------------------


def test_text_ztxt_and_itxt_chunks():
    info = PngInfo()
    info.add_text("plain", "hello")
    info.add_text("squeezed", "a" * 1000, zip=True)  # zTXt
    info.add_itxt("utf8", "ünïcödé ✓", lang="en", tkey="Unicode")  # iTXt, uncompressed
    info.add_itxt("utf8z", "多字节 " * 100, zip=True)  # iTXt, compressed
    texts = read_png_text(png_bytes(info))
    assert texts == {"plain": "hello", "squeezed": "a" * 1000, "utf8": "ünïcödé ✓",
                     "utf8z": "多字节 " * 100}
    kinds = [k for k, _ in chunks_of(png_bytes(info))]
    assert {b"tEXt", b"zTXt", b"iTXt"} <= set(kinds)


def test_non_latin1_text_added_with_add_text_round_trips():
    info = PngInfo()
    info.add_text("workflow", json.dumps({"nodes": [], "title": "猫"}, ensure_ascii=False))
    assert json.loads(read_png_text(png_bytes(info))["workflow"])["title"] == "猫"


def test_no_text_chunks_gives_nothing():
    data = png_bytes()
    assert read_png_text(data) == {}
    assert workflow_and_prompt_from_png(data) == (None, None)


def test_only_a_prompt():
    info = PngInfo()
    info.add_text("prompt", json.dumps({"1": {"class_type": "X", "inputs": {}}}))
    workflow, prompt = workflow_and_prompt_from_png(png_bytes(info))
    assert workflow is None and prompt == {"1": {"class_type": "X", "inputs": {}}}


def test_first_chunk_of_a_keyword_wins_and_chunks_after_idat_are_read():
    data = png_bytes()
    data = with_chunk_before_iend(data, chunk(b"tEXt", b"k\x00first") + chunk(b"tEXt", b"k\x00second"))
    assert read_png_text(data) == {"k": "first"}


def test_chunks_after_iend_are_ignored():
    data = png_bytes() + chunk(b"tEXt", b"late\x00x")
    assert read_png_text(data) == {}


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1,
                               max_size=20),
                       st.text(max_size=300), max_size=5),
       st.booleans())
def test_any_keywords_and_texts_round_trip(texts, zipped):
    info = PngInfo()
    for key, value in texts.items():
        info.add_itxt(key, value, zip=zipped)
    assert read_png_text(png_bytes(info)) == texts


# -- bad input --------------------------------------------------------------------------------


def _corrupt_cases() -> list[tuple[bytes, str]]:
    good = png_bytes()
    info = PngInfo()
    info.add_text("workflow", "{}")
    with_text = png_bytes(info)
    text_at = with_text.index(b"tEXt")
    flipped = bytearray(with_text)
    flipped[text_at + 6] ^= 0xFF  # a byte of the text body: the CRC no longer matches
    return [
        (b"", "not a PNG"),
        (b"GIF89a" + b"\x00" * 20, "not a PNG"),
        (b"\xff\xd8\xff\xe0 a jpeg", "not a PNG"),
        (good[:8], "truncated"),
        (good[:40], "truncated"),
        (good[:-12], "truncated"),  # no IEND
        (good[:8] + chunk(b"tEXt", b"k\x00v") + good[8:], "first chunk"),
        (good[:12] + b"I!DR" + good[16:], "chunk type"),
        (bytes(flipped), "CRC"),
        (with_chunk_before_iend(good, chunk(b"tEXt", b"\x00no keyword")), "keyword"),
        (with_chunk_before_iend(good, chunk(b"zTXt", b"k\x00\x00not zlib")), "decompress"),
        (with_chunk_before_iend(good, chunk(b"zTXt", b"k\x00\x07" + zlib.compress(b"x"))), "compression"),
        (with_chunk_before_iend(good, chunk(b"zTXt", b"k\x00\x00" + zlib.compress(b"x" * 100)[:-6])),
         "compressed text"),
        (with_chunk_before_iend(good, chunk(b"iTXt", b"k\x00\x00")), "too short"),
        (with_chunk_before_iend(good, chunk(b"iTXt", b"k\x00\x00\x00en")), "language"),
        (with_chunk_before_iend(good, chunk(b"iTXt", b"k\x00\x00\x00\x00\x00\xff\xfe")), "UTF-8"),
    ]


@pytest.mark.parametrize("data, words", _corrupt_cases())
def test_garbage_raises_a_clear_value_error(data, words):
    with pytest.raises(ValueError) as info:
        read_png_text(data)
    assert words in str(info.value)


def test_not_bytes_is_a_value_error():
    with pytest.raises(ValueError, match="PNG bytes"):
        read_png_text("a string")  # type: ignore[arg-type]


def test_decompression_bomb_is_refused(monkeypatch):
    from loom.graph import pnginfo

    monkeypatch.setattr(pnginfo, "MAX_TEXT_BYTES", 10_000)
    bomb = chunk(b"zTXt", b"k\x00\x00" + zlib.compress(b"\x00" * 1_000_000))
    with pytest.raises(ValueError, match="more than"):
        read_png_text(with_chunk_before_iend(png_bytes(), bomb))


@pytest.mark.parametrize("text, words", [("{not json", "not valid JSON"), ("[1, 2]", "not an object")])
def test_bad_json_in_the_chunks(text, words):
    info = PngInfo()
    info.add_text("workflow", text)
    with pytest.raises(ValueError, match="'workflow'.*" + words):
        workflow_and_prompt_from_png(png_bytes(info))


def test_null_json_counts_as_absent():
    info = PngInfo()
    info.add_text("workflow", "null")
    assert workflow_and_prompt_from_png(png_bytes(info)) == (None, None)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_random_damage_gives_value_error_or_texts(data):
    info = PngInfo()
    info.add_text("prompt", '{"1": {"class_type": "A", "inputs": {}}}')
    info.add_text("workflow", '{"nodes": []}', zip=True)
    raw = bytearray(png_bytes(info))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    try:
        texts = read_png_text(bytes(raw[:cut]))
    except ValueError:
        return
    assert isinstance(texts, dict)

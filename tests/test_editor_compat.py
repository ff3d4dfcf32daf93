"""Workflows saved by ComfyUI's own front ends (several versions) and its template packages load
into the editor and save back unchanged in meaning: the server converts the editor's re-saved
workflow to the same API prompt as the original file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from editor_helpers import nodes, open_editor

WORKFLOWS = Path(__file__).resolve().parent / "data" / "workflows"
FILES = sorted(p.name for p in (WORKFLOWS / "comfyui").glob("*.json")) + [
    "default_txt2img.json", "primitives_widgets.json", "reroutes_bypass_mute.json", "subgraph.json"]



def _path(name: str) -> Path:
    return WORKFLOWS / "comfyui" / name if (WORKFLOWS / "comfyui" / name).exists() else WORKFLOWS / name


@pytest.mark.parametrize("name", FILES)
def test_comfyui_workflows_round_trip_through_the_editor(editor_server, page, name):
    server = editor_server()
    open_editor(page, server)
    original = json.loads(_path(name).read_text())
    page.evaluate("(wf) => window.loom.app.tabs.open(wf, 'compat')", original)
    assert len(nodes(page)) == len(original["nodes"])
    # Only types this server really lacks are drawn as missing (notes, reroutes, primitives and
    # subgraphs are the editor's own).
    info = server.get("/object_info").json()
    missing = page.evaluate("() => window.loom.app.graph._nodes.filter(n => n.constructor.loomMissing)"
                            ".map(n => n.type)")
    assert all(t not in info for t in missing)
    assert not set(missing) & {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
    resaved = page.evaluate("() => window.loom.app.tabs.serialize()")
    expected = server.post("/workflow/convert", json={"workflow": original})
    got = server.post("/workflow/convert", json={"workflow": resaved})
    assert (got.status, got.json()) == (expected.status, expected.json())
    if not missing:
        assert expected.status == 200, expected.text

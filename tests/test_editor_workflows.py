"""Workflows in the editor: importing JSON, dropping a PNG with metadata, a node type the server
lacks surviving load and save, named workflows saved on the server and opened again, autosaved
tabs, undo/redo, copy and paste between tabs."""

from __future__ import annotations

import json

from editor_helpers import drop_file, node_of_type, nodes, open_editor, png_with_workflow, set_widget

# A small workflow as ComfyUI's editor saves it, with one node type no server has.
MISSING_WORKFLOW = {
    "last_node_id": 3, "last_link_id": 2,
    "nodes": [
        {"id": 1, "type": "EmptyImage", "pos": [50, 50], "size": [300, 130], "flags": {}, "order": 0,
         "mode": 0, "inputs": [], "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}],
         "properties": {}, "widgets_values": [32, 32, 1, 255]},
        {"id": 2, "type": "FancyUpscaler", "pos": [400, 50], "size": [260, 110], "flags": {}, "order": 1,
         "mode": 0, "title": "My upscaler",
         "inputs": [{"name": "image", "type": "IMAGE", "link": 1}],
         "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [2]}],
         "properties": {"Node name for S&R": "FancyUpscaler"}, "widgets_values": [2.5, "lanczos", True]},
        {"id": 3, "type": "SaveImage", "pos": [700, 50], "size": [300, 300], "flags": {}, "order": 2,
         "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": 2}], "outputs": [],
         "properties": {}, "widgets_values": ["kept"]},
    ],
    "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]],
    "groups": [], "config": {}, "extra": {}, "version": 0.4,
}


def _import_json(page, tmp_path, name: str, data: dict) -> None:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    page.click("[data-testid=menu-workflow]")
    with page.expect_file_chooser() as chooser:
        page.click("[data-testid=wf-import]")
    chooser.value.set_files(str(path))


def _save_as(page, name: str) -> None:
    page.keyboard.press("Control+s")
    box = page.locator("[data-testid=ask-input]")
    box.fill(name)
    box.press("Enter")
    page.wait_for_selector(f".tab.active >> text={name}")


def test_missing_node_type_is_kept_through_load_and_save(editor_server, page, tmp_path):
    server = editor_server()
    open_editor(page, server)
    _import_json(page, tmp_path, "missing.json", MISSING_WORKFLOW)
    page.wait_for_function("() => window.loom.app.graph._nodes.some(n => n.type === 'FancyUpscaler')")
    assert "FancyUpscaler" in page.locator("#toasts").inner_text()
    placeholder = node_of_type(page, "FancyUpscaler")
    assert placeholder["title"] == "My upscaler"
    assert placeholder["inputs"][0]["link"] == 1
    assert page.evaluate("() => window.loom.app.graph._nodes.find(n => n.type === 'FancyUpscaler')"
                         ".constructor.loomMissing") is True
    # Queueing names the missing type rather than failing silently.
    page.click("[data-testid=queue-button]")
    page.wait_for_function("() => document.getElementById('toasts').innerText.includes('FancyUpscaler')"
                           " && document.querySelectorAll('.toast.error').length > 0")
    # Move the placeholder (an edit), save on the server, read the file back.
    page.evaluate("() => { const n = window.loom.app.graph._nodes.find(n => n.type === 'FancyUpscaler');"
                  " n.pos = [420, 80]; window.loom.app.tabs.checkChanges(); }")
    _save_as(page, "with missing")
    saved = server.get("/userdata/workflows%2Fwith%20missing.json").json()
    [node] = [n for n in saved["nodes"] if n["id"] == 2]
    original = MISSING_WORKFLOW["nodes"][1]
    assert node["type"] == "FancyUpscaler" and node["title"] == "My upscaler"
    assert node["widgets_values"] == original["widgets_values"]
    assert node["properties"] == original["properties"]
    assert node["inputs"][0]["link"] == 1 and node["outputs"][0]["links"] == [2]
    assert list(node["pos"]) == [420, 80]
    assert "color" not in node and "bgcolor" not in node
    assert sorted(map(list, saved["links"])) == sorted(MISSING_WORKFLOW["links"])
    assert [n["widgets_values"] for n in saved["nodes"] if n["id"] == 3] == [["kept"]]


def test_save_a_named_workflow_and_open_it_again(editor_server, page):
    server = editor_server()
    open_editor(page, server)
    latent = node_of_type(page, "EmptyLatentImage")
    set_widget(page, latent["id"], "height", 640)
    _save_as(page, "portrait")
    assert server.get("/userdata?dir=workflows").json() == ["portrait.json"]
    # A change after saving marks the tab modified; close it without keeping the change.
    set_widget(page, latent["id"], "height", 320)
    page.wait_for_selector(".tab.active >> text=portrait •")
    page.once("dialog", lambda d: d.accept())
    page.click(".tab.active [data-testid=tab-close]")
    page.keyboard.press("Control+o")
    page.click("[data-testid=workflow-entry][data-name='portrait.json']")
    page.wait_for_selector(".tab.active >> text=portrait")
    assert node_of_type(page, "EmptyLatentImage")["widgets"]["height"] == 640
    # Saving again overwrites the same file (no "Save as" question).
    set_widget(page, node_of_type(page, "EmptyLatentImage")["id"], "height", 704)
    page.keyboard.press("Control+s")
    page.wait_for_function("() => !document.querySelector('.tab.active').innerText.includes('•')")
    saved = server.get("/userdata/workflows%2Fportrait.json").json()
    assert [n["widgets_values"][1] for n in saved["nodes"] if n["type"] == "EmptyLatentImage"] == [704]
    assert page.loom_errors == []


def test_import_json_and_drop_a_png_with_metadata(editor_server, page, tmp_path):
    server = editor_server()
    open_editor(page, server)
    _import_json(page, tmp_path, "imported.json", MISSING_WORKFLOW)
    page.wait_for_selector(".tab.active >> text=imported")
    assert sorted(n["type"] for n in nodes(page)) == ["EmptyImage", "FancyUpscaler", "SaveImage"]
    # A PNG made by Loom or ComfyUI carries its workflow: dropping it opens that workflow.
    workflow = json.loads(json.dumps(MISSING_WORKFLOW))
    workflow["nodes"] = [workflow["nodes"][0]]
    workflow["nodes"][0]["widgets_values"] = [24, 16, 1, 0]
    workflow["nodes"][0]["outputs"][0]["links"] = []
    workflow["links"] = []
    drop_file(page, "picture.png", png_with_workflow(workflow), "image/png")
    page.wait_for_selector(".tab.active >> text=picture")
    [only] = nodes(page)
    assert only["type"] == "EmptyImage" and only["widgets"]["width"] == 24
    assert len(page.locator("[data-testid=tab]").all()) == 3
    # A PNG without a workflow is refused with a message, and nothing else changes.
    drop_file(page, "plain.png", png_with_workflow({}).replace(b"workflow", b"xxxxxxxx"), "image/png")
    page.wait_for_function("() => document.getElementById('toasts').innerText.includes('plain.png')")
    assert len(page.locator("[data-testid=tab]").all()) == 3


def test_autosave_undo_redo_and_paste_into_another_tab(editor_server, page):
    server = editor_server()
    open_editor(page, server)
    latent = node_of_type(page, "EmptyLatentImage")
    set_widget(page, latent["id"], "batch_size", 3)
    set_widget(page, latent["id"], "batch_size", 4)
    page.keyboard.press("Control+z")
    assert node_of_type(page, "EmptyLatentImage")["widgets"]["batch_size"] == 3
    page.keyboard.press("Control+z")
    assert node_of_type(page, "EmptyLatentImage")["widgets"]["batch_size"] == 1
    page.keyboard.press("Control+y")
    assert node_of_type(page, "EmptyLatentImage")["widgets"]["batch_size"] == 3
    # Copy the sampler, paste it into a new tab.
    sampler = node_of_type(page, "KSampler")
    page.evaluate("(id) => { const app = window.loom.app; app.canvas.deselectAll();"
                  " app.canvas.selectNode(app.graph.getNodeById(id)); }", sampler["id"])
    page.locator("#graph-canvas").focus()
    page.keyboard.press("Control+c")
    page.click("[data-testid=tab-new]")
    page.wait_for_function("() => document.querySelectorAll('[data-testid=tab]').length === 2")
    page.evaluate("() => { const g = window.loom.app.graph; for (const n of [...g._nodes]) g.remove(n); }")
    page.locator("#graph-canvas").focus()
    page.mouse.move(300, 300)
    page.keyboard.press("Control+v")
    page.wait_for_function("() => window.loom.app.graph._nodes.length === 1")
    assert node_of_type(page, "KSampler")["widgets"]["steps"] == sampler["widgets"]["steps"]
    # Both tabs come back after a reload, with their contents.
    page.wait_for_timeout(300)
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    assert len(page.locator("[data-testid=tab]").all()) == 2
    assert [n["type"] for n in nodes(page)] == ["KSampler"]
    page.locator("[data-testid=tab]").first.click()
    assert node_of_type(page, "EmptyLatentImage")["widgets"]["batch_size"] == 3
    assert page.loom_errors == []


def test_drag_a_history_image_onto_the_canvas_reopens_its_workflow_and_export(editor_server, page):
    from editor_helpers import open_graph, wait_event, watch_events

    server = editor_server()
    open_editor(page, server)
    open_graph(page, [("EmptyImage", {"width": 12, "height": 10, "color": 255}), ("SaveImage", {})],
               [(0, 0, 1, "images")], name="Made it")
    watch_events(page)
    page.click("[data-testid=queue-button]")
    wait_event(page, "execution_success", timeout=60_000)
    page.click(".side-tabs button[data-panel=history]")
    page.wait_for_selector("[data-testid=history-image]")
    page.click("[data-testid=tab-new]")
    page.wait_for_function("() => document.querySelectorAll('[data-testid=tab]').length === 3")
    page.drag_and_drop("[data-testid=history-image] >> nth=0", "#canvas-wrap")
    page.wait_for_function("() => document.querySelectorAll('[data-testid=tab]').length === 4")
    assert sorted(n["type"] for n in nodes(page)) == ["EmptyImage", "SaveImage"]
    assert node_of_type(page, "EmptyImage")["widgets"]["width"] == 12
    # Export JSON downloads the active workflow.
    page.click("[data-testid=menu-workflow]")
    with page.expect_download() as download:
        page.click("[data-testid=wf-export]")
    exported = json.loads(download.value.path().read_text())
    assert sorted(n["type"] for n in exported["nodes"]) == ["EmptyImage", "SaveImage"]
    assert page.loom_errors == []

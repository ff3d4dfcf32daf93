"""Editing on the canvas: node search (double-click, fuzzy, by type, from a dropped link), typed
links, widgets turned into inputs and back, bypass/mute, groups, alignment, templates, image
upload into LoadImage, themes, the help panel, and the layout at 1280×720."""

from __future__ import annotations

import io

from editor_helpers import (
    convert,
    drag,
    drop_file,
    node_of_type,
    nodes,
    open_editor,
    open_graph,
    show_node,
    slot_point,
    to_screen,
    widget_point,
)
from PIL import Image


def _empty_point(page) -> tuple[float, float]:
    """A point of the canvas with no node under it."""
    for x in range(60, 900, 40):
        for y in range(80, 700, 40):
            if not page.evaluate("""([x, y]) => { const c = window.loom.app.canvas;
                const r = c.canvas.getBoundingClientRect();
                const [gx, gy] = c.ds.convertCanvasToOffset([x - r.left, y - r.top]);
                const near = [[0, 0], [-40, -40], [40, -40], [-40, 40], [40, 40]];
                return near.some(([dx, dy]) => !!c.graph.getNodeOnPos(gx + dx, gy + dy))
                  || !!c.graph.getGroupOnPos?.(gx, gy); }""", [x, y]):
                return (x, y)
    raise AssertionError("no empty point")


def test_search_by_name_and_type_from_a_double_click(editor_server, page):
    server = editor_server()
    open_editor(page, server)
    before = len(nodes(page))
    point = _empty_point(page)
    page.mouse.dblclick(*point)
    box = page.locator("[data-testid=search-input]")
    box.fill("ksmplr")  # fuzzy: letters in order
    first = page.locator("[data-testid=search-result]").first
    assert first.get_attribute("data-type") == "KSampler"
    box.fill("out:LATENT")
    types = [e.get_attribute("data-type") for e in page.locator("[data-testid=search-result]").all()]
    assert "EmptyLatentImage" in types and "KSampler" in types and "CLIPTextEncode" not in types
    box.fill("in:MASK")
    types = [e.get_attribute("data-type") for e in page.locator("[data-testid=search-result]").all()]
    assert "InvertMask" in types and "KSampler" not in types
    box.fill("empty latent")
    box.press("Enter")
    page.wait_for_selector("[data-testid=node-search]", state="detached")
    assert len(nodes(page)) == before + 1
    added = nodes(page)[-1]
    assert added["type"] == "EmptyLatentImage"
    # placed where the user double-clicked
    pos = page.evaluate("(id) => window.loom.app.graph.getNodeById(id).pos", added["id"])
    screen = to_screen(page, *pos)
    assert abs(screen[0] - point[0]) < 2 and abs(screen[1] - point[1]) < 2


def test_categorized_add_node_menu(editor_server, page):
    server = editor_server()
    open_editor(page, server)
    before = len(nodes(page))
    page.mouse.click(*_empty_point(page), button="right")
    page.click(".litecontextmenu .litemenu-entry:text-is('Add Node')")
    page.click(".litecontextmenu .litemenu-entry:text-is('sampling')")
    page.click(".litecontextmenu .litemenu-entry:text-is('KSampler')")
    assert len(nodes(page)) == before + 1 and nodes(page)[-1]["type"] == "KSampler"


def test_link_dropped_on_empty_canvas_offers_fitting_nodes_and_wires_one(editor_server, page):
    server = editor_server()
    open_editor(page, server)
    ckpt = node_of_type(page, "CheckpointLoaderSimple")
    show_node(page, ckpt["id"])
    start = slot_point(page, ckpt["id"], True, 1)  # CLIP
    drag(page, start, _empty_point(page))
    page.wait_for_selector("[data-testid=node-search]")
    assert "CLIP" in page.locator(".search-filter").inner_text()
    types = [e.get_attribute("data-type") for e in page.locator("[data-testid=search-result]").all()]
    assert "CLIPTextEncode" in types and "VAEDecode" not in types and "KSampler" not in types
    page.locator("[data-testid=search-input]").fill("clip set last")
    page.locator("[data-testid=search-input]").press("Enter")
    added = node_of_type(page, "CLIPSetLastLayer")
    assert added["inputs"][0]["link"] is not None
    link = page.evaluate("(id) => { const g = window.loom.app.graph; const n = g.getNodeById(id);"
                         " const l = g.links.get ? g.links.get(n.inputs[0].link) : g.links[n.inputs[0].link];"
                         " return [l.origin_id, l.origin_slot]; }", added["id"])
    assert link == [ckpt["id"], 1]


def test_typed_links_refuse_wrong_types_and_widgets_become_inputs(editor_server, page):
    server = editor_server()
    open_editor(page, server)
    ckpt = node_of_type(page, "CheckpointLoaderSimple")
    sampler = node_of_type(page, "KSampler")
    # Drag CLIP onto the sampler's "positive" socket (CONDITIONING): refused.
    page.evaluate("(id) => { const g = window.loom.app.graph, n = g.getNodeById(id);"
                  " n.disconnectInput(n.findInputSlot('positive')); }", sampler["id"])
    show_node(page, ckpt["id"])
    page.evaluate("([a, b]) => { const g = window.loom.app.graph; g.getNodeById(b).pos ="
                  " [g.getNodeById(a).pos[0] + 420, g.getNodeById(a).pos[1]]; }", [ckpt["id"], sampler["id"]])
    positive = page.evaluate("(id) => window.loom.app.graph.getNodeById(id).findInputSlot('positive')",
                             sampler["id"])
    drag(page, slot_point(page, ckpt["id"], True, 1), slot_point(page, sampler["id"], False, positive))
    page.keyboard.press("Escape")
    page.locator("[data-testid=node-search]").wait_for(state="detached")
    assert [i for i in node_of_type(page, "KSampler")["inputs"] if i["name"] == "positive"][0]["link"] is None
    # A right type connects: MODEL onto "model" after disconnecting it.
    # An INT output onto the "steps" widget turns the widget into an input.
    ids = page.evaluate("""(id) => { const {LiteGraph} = window.loom, g = window.loom.app.graph;
      const s = g.getNodeById(id); const p = LiteGraph.createNode('PrimitiveInt');
      p.pos = [s.pos[0] - 300, s.pos[1] + 300]; g.add(p);
      p.widgets.find(w => w.name === 'value').value = 17; return p.id; }""", sampler["id"])
    show_node(page, ids)
    steps_slot = page.evaluate("(id) => window.loom.app.graph.getNodeById(id).inputs.findIndex("
                               "i => i.widget?.name === 'steps')", sampler["id"])
    drag(page, slot_point(page, ids, True, 0), widget_point(page, sampler["id"], "steps", 0.5))
    steps_input = [i for i in node_of_type(page, "KSampler")["inputs"] if i["name"] == "steps"][0]
    assert steps_input["link"] is not None, "dropping on the widget wires its socket"
    assert page.evaluate("([id, i]) => window.loom.app.graph.getNodeById(id).inputs[i].link !== null",
                         [sampler["id"], steps_slot])
    prompt = convert(server, page)
    assert prompt[str(sampler["id"])]["inputs"]["steps"] == [str(ids), 0]
    # Disconnect: the widget is back, with its value.
    page.evaluate("([id, i]) => window.loom.app.graph.getNodeById(id).disconnectInput(i)",
                  [sampler["id"], steps_slot])
    prompt = convert(server, page)
    assert prompt[str(sampler["id"])]["inputs"]["steps"] == sampler["widgets"]["steps"]


def test_reroute_from_the_link_menu_keeps_the_connection(editor_server, page):
    server = editor_server()
    open_editor(page, server)
    ids = open_graph(page, [("EmptyImage", {"width": 8, "height": 8}), ("SaveImage", {})],
                     [(0, 0, 1, "images")])
    page.evaluate("() => window.loom.app.canvas.draw(true, true)")
    centre = page.evaluate("() => [...window.loom.app.canvas.renderedPaths].find(p => p._pos)._pos")
    page.mouse.click(*to_screen(page, centre[0], centre[1]))
    page.click(".litecontextmenu .litemenu-entry:text-is('Add Reroute')")
    assert page.evaluate("() => window.loom.app.graph.reroutes.size") == 1
    saved = page.evaluate("() => window.loom.app.tabs.serialize()")
    assert len(saved["extra"]["reroutes"]) == 1
    prompt = convert(server, page)
    assert prompt[str(ids[1])]["inputs"]["images"] == [str(ids[0]), 0]


def test_bypass_mute_group_and_align(editor_server, page):
    server = editor_server()
    open_editor(page, server)
    ids = open_graph(page, [("EmptyImage", {"width": 8, "height": 8}), ("ImageInvert", {}),
                            ("SaveImage", {})], [(0, 0, 1, "image"), (1, 0, 2, "images")])
    select = "(ids) => { const c = window.loom.app.canvas; c.deselectAll(); for (const id of ids) " \
             "c.selectNode(window.loom.app.graph.getNodeById(id), true); }"
    page.evaluate(select, [ids[1]])
    page.locator("#graph-canvas").focus()
    page.keyboard.press("Control+Alt+b")  # not the shortcut: a key matches only its own modifiers
    assert [n["mode"] for n in nodes(page)] == [0, 0, 0]
    page.keyboard.press("Control+b")
    assert [n["mode"] for n in nodes(page)] == [0, 4, 0]
    prompt = convert(server, page)
    assert str(ids[1]) not in prompt and prompt[str(ids[2])]["inputs"]["images"] == [str(ids[0]), 0]
    page.keyboard.press("Control+b")
    page.keyboard.press("Control+m")
    assert [n["mode"] for n in nodes(page)] == [0, 2, 0]
    page.keyboard.press("Control+m")
    # Group the first two.
    page.evaluate(select, [ids[0], ids[1]])
    page.keyboard.press("Control+g")
    groups = page.evaluate("() => window.loom.app.graph._groups.map(g => g._children ? [...g._children]"
                           ".filter(c => c.id !== undefined).map(c => c.id) : [])")
    assert len(groups) == 1
    saved = page.evaluate("() => window.loom.app.tabs.serialize()")
    assert len(saved["groups"]) == 1
    # Align: stagger the nodes, then align their tops through the node menu.
    page.evaluate("(ids) => ids.forEach((id, i) =>"
                  " window.loom.app.graph.getNodeById(id).pos = [80 + 320 * i, 60 + 70 * i])", ids)
    page.evaluate(select, ids)
    page.evaluate("() => window.loom.app.canvas.setDirty(true, true)")
    page.wait_for_timeout(50)
    pos = page.evaluate("(id) => window.loom.app.graph.getNodeById(id).pos", ids[2])
    x, y = to_screen(page, pos[0] + 60, pos[1] - 12)
    page.mouse.click(x, y, button="right")
    page.click(".litecontextmenu .litemenu-entry:has-text('Align Selected To')")
    page.click(".litecontextmenu .litemenu-entry:text-is('Top')")
    tops = page.evaluate("(ids) => ids.map(id => window.loom.app.graph.getNodeById(id).pos[1])", ids)
    assert len(set(tops)) == 1, tops


def test_templates_menu_opens_a_shipped_workflow(editor_server, page):
    server = editor_server()
    open_editor(page, server)
    page.click("[data-testid=menu-templates]")
    items = page.locator("[data-testid=template-item]")
    items.first.wait_for()
    labels = [i.inner_text() for i in items.all()]
    assert any("Text to image" in label for label in labels), labels
    page.click("[data-testid=template-item]:has-text('Inpaint')")
    page.wait_for_selector(".tab.active >> text=Inpaint")
    types = {n["type"] for n in nodes(page)}
    assert "LoadImage" in types and "KSampler" in types
    assert not any(n["type"] for n in nodes(page) if page.evaluate(
        "(t) => !!window.loom.LiteGraph.registered_node_types[t]?.loomMissing", n["type"]))


def test_upload_an_image_into_load_image(editor_server, page, tmp_path):
    server = editor_server()
    open_editor(page, server)
    [load] = open_graph(page, [("LoadImage", {})])
    path = tmp_path / "cat.png"
    Image.new("RGB", (40, 30), (10, 200, 30)).save(path)
    show_node(page, load)
    with page.expect_file_chooser() as chooser:
        page.mouse.click(*widget_point(page, load, "upload"))
    chooser.value.set_files(str(path))
    page.wait_for_function("(id) => window.loom.app.graph.getNodeById(id).loom.images?.imgs[0]"
                           "?.naturalWidth === 40",
                           arg=load)
    assert node_of_type(page, "LoadImage")["widgets"]["image"] == "cat.png"
    values = page.evaluate("(id) => window.loom.app.graph.getNodeById(id).widgets[0].options.values", load)
    assert "cat.png" in values, "the combo lists the upload"
    stored = server.settings.folders.input_dir / "cat.png"
    assert Image.open(io.BytesIO(stored.read_bytes())).size == (40, 30)
    # An image dropped onto the node uploads into it too (elsewhere it would be read as a workflow).
    out = io.BytesIO()
    Image.new("RGB", (20, 24), (0, 0, 255)).save(out, format="PNG")
    drop_file(page, "dog.png", out.getvalue(), "image/png", at=widget_point(page, load, "image"))
    page.wait_for_function("(id) => window.loom.app.graph.getNodeById(id).widgets[0].value === 'dog.png'",
                           arg=load)
    assert len(page.locator("[data-testid=tab]").all()) == 2


def test_themes_help_and_layout_at_1280x720(editor_server, page):
    server = editor_server()
    page.set_viewport_size({"width": 1280, "height": 720})
    open_editor(page, server)
    theme = page.evaluate("() => document.documentElement.dataset.theme")
    page.click("#theme-button")
    other = page.evaluate("() => document.documentElement.dataset.theme")
    assert {theme, other} == {"dark", "light"}
    bg = page.evaluate("() => window.loom.app.canvas.clear_background_color")
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    assert page.evaluate("() => document.documentElement.dataset.theme") == other
    assert page.evaluate("() => window.loom.app.canvas.clear_background_color") == bg
    # Every control of the top bar is on screen, and the canvas keeps most of the window.
    for sel in ("[data-testid=menu-workflow]", "[data-testid=menu-templates]",
                "[data-testid=queue-button]", "[data-testid=interrupt-button]",
                "[data-testid=batch-count]", "#theme-button", "#help-button", "[data-testid=connection]"):
        b = page.locator(sel).bounding_box()
        assert b and b["x"] >= 0 and b["x"] + b["width"] <= 1280 and b["y"] + b["height"] <= 720, sel
    canvas = page.locator("#graph-canvas").bounding_box()
    assert canvas["width"] >= 900 and canvas["height"] >= 600
    page.locator("#graph-canvas").focus()
    page.keyboard.press("?")
    help_text = page.locator("[data-testid=help-panel]").inner_text()
    for key in ("Ctrl+Enter", "Ctrl+Z", "Ctrl+B", "Ctrl+M", "Ctrl+G", "Ctrl+S"):
        assert key in help_text
    page.keyboard.press("Escape")
    page.wait_for_selector("[data-testid=help-panel]", state="detached")
    assert page.loom_errors == []


def test_high_dpi_screens_draw_sharp_and_map_clicks(editor_server, browser):
    server = editor_server()
    context = browser.new_context(viewport={"width": 1280, "height": 720}, device_scale_factor=2)
    try:
        page = context.new_page()
        open_editor(page, server)
        size = page.evaluate("() => { const c = window.loom.app.canvas.canvas;"
                             " return [c.width, c.clientWidth]; }")
        assert size[0] == 2 * size[1]
        point = _empty_point(page)
        page.mouse.dblclick(*point)
        page.locator("[data-testid=search-input]").fill("invert mask")
        page.locator("[data-testid=search-input]").press("Enter")
        pos = page.evaluate("() => window.loom.app.graph._nodes.at(-1).pos")
        screen = to_screen(page, *pos)
        assert abs(screen[0] - point[0]) < 2 and abs(screen[1] - point[1]) < 2
    finally:
        context.close()

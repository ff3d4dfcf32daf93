"""The editor in a real browser against the real server: the default workflow, editing a
widget, queueing (button and Ctrl+Enter), progress, the output image, a second run, validation
errors on the right node and input, interrupt and cancel, reconnecting after a restart.

The SD runs use the tiny SD 1.x checkpoint of ``sd_fixtures`` at 64×64 (seconds on a CPU).
"""

from __future__ import annotations

from editor_helpers import (
    CKPT,
    events,
    install_checkpoint,
    make_small,
    node_of_type,
    nodes,
    open_editor,
    open_graph,
    set_widget,
    show_node,
    wait_event,
    watch_events,
    widget_point,
)
from sd_fixtures import sd_cpu_only, sd_files  # noqa: F401  (fixtures)

DEFAULT_TYPES = sorted(["CheckpointLoaderSimple", "CLIPTextEncode", "CLIPTextEncode",
                        "EmptyLatentImage", "KSampler", "VAEDecode", "SaveImage"])


def test_default_workflow_appears_wired_and_survives_reload(editor_server, page):
    server = editor_server()
    open_editor(page, server)
    graph = nodes(page)
    assert sorted(n["type"] for n in graph) == DEFAULT_TYPES
    sampler = node_of_type(page, "KSampler")
    linked = {i["name"] for i in sampler["inputs"] if i["link"] is not None}
    assert {"model", "positive", "negative", "latent_image"} <= linked
    assert sampler["widgets"]["control_after_generate"] in ("fixed", "increment", "decrement", "randomize")
    # Widgets come from /object_info: numbers keep their declared range and step.
    opts = page.evaluate("""() => {
      const n = window.loom.app.graph._nodes.find(n => n.type === 'EmptyLatentImage');
      const w = n.widgets.find(w => w.name === 'width');
      return [w.options.min, w.options.max, w.options.step2]; }""")
    assert opts == [16, 16384, 8]
    # An edit is autosaved: a reload shows it.
    latent = node_of_type(page, "EmptyLatentImage")
    set_widget(page, latent["id"], "width", 768)
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    assert node_of_type(page, "EmptyLatentImage")["widgets"]["width"] == 768
    assert page.loom_errors == []


def test_edit_widget_queue_progress_and_image_then_second_run(editor_server, page, sd_files):  # noqa: F811
    server = editor_server()
    install_checkpoint(server, sd_files)
    open_editor(page, server)
    page.keyboard.press("r")  # refresh the model list: the checkpoint arrived after start-up
    page.wait_for_function("(name) => JSON.stringify(window.loom.app.info.CheckpointLoaderSimple"
                           ".input.required.ckpt_name[0]).includes(name)", arg=CKPT)
    make_small(page)
    sampler = node_of_type(page, "KSampler")

    # Change "steps" as a user does: click the number, type in the prompt box, Enter.
    show_node(page, sampler["id"])
    x, y = widget_point(page, sampler["id"], "steps")
    page.mouse.click(x, y)
    box = page.locator(".graphdialog input")
    box.fill("4")
    box.press("Enter")
    assert node_of_type(page, "KSampler")["widgets"]["steps"] == 4

    watch_events(page)
    page.locator("#graph-canvas").focus()
    page.keyboard.press("Control+Enter")
    wait_event(page, "execution_success")
    seen = events(page)
    steps = [(e["data"]["value"], e["data"]["max"]) for e in seen
             if e["type"] == "progress" and str(e["data"]["node"]) == str(sampler["id"])]
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]
    during = [e for e in seen if e["type"] == "progress" and str(e["data"]["node"]) == str(sampler["id"])]
    assert all(sampler["id"] in e["running"] for e in during), "the sampling node is outlined"
    assert any("step 4/4" in e["progressText"] for e in during)
    assert any("ETA" in e["progressText"] for e in during)
    # Live previews (the editor asks for them): JPEG frames drawn on the sampling node.
    previews = [e for e in seen if e["type"] == "preview"]
    assert previews and all(e["data"] == "image/jpeg" for e in previews)
    assert any(sampler["id"] in e["previewOn"] for e in seen if e["type"] == "progress")
    save = node_of_type(page, "SaveImage")
    page.wait_for_function("(id) => window.loom.app.graph.getNodeById(id).loom.images?.imgs[0]"
                           "?.naturalWidth === 64", arg=save["id"])
    src1 = page.evaluate("(id) => window.loom.app.graph.getNodeById(id).loom.images.urls[0]", save["id"])
    assert "filename=Loom_" in src1
    assert not any(n["running"] for n in nodes(page)), "outline cleared at the end"
    # Double-click the image on the node: full size. (litegraph times the two clicks itself; on
    # a busy machine the page may see them too far apart, so try again.)
    show_node(page, save["id"])
    point = page.evaluate("""(id) => {
      const app = window.loom.app, n = app.graph.getNodeById(id);
      const r = app.canvas.canvas.getBoundingClientRect(), {scale, offset} = app.canvas.ds;
      return [r.left + (n.pos[0] + n.size[0] / 2 + offset[0]) * scale,
              r.top + (n.pos[1] + n.size[1] - 60 + offset[1]) * scale]; }""", save["id"])
    for _ in range(3):
        page.mouse.dblclick(*point)
        try:
            page.wait_for_selector("[data-testid=full-image]", timeout=5000)
            break
        except Exception:
            continue
    page.wait_for_selector("[data-testid=full-image]")
    page.keyboard.press("Escape")

    # The history panel lists it, newest first, with the image.
    page.click(".side-tabs button[data-panel=history]")
    page.wait_for_selector("[data-testid=history-image]")
    # Click for full size.
    page.click("[data-testid=history-image] >> nth=0")
    page.wait_for_selector("[data-testid=full-image]")
    page.keyboard.press("Escape")

    # Second run: another seed through the widget, queued with the button.
    set_widget(page, sampler["id"], "seed", 12345)
    page.evaluate("() => window.__events.length = 0")
    page.click("[data-testid=queue-button]")
    wait_event(page, "execution_success")
    page.wait_for_function("([id, old]) => { const i = window.loom.app.graph.getNodeById(id).loom.images;"
                           " return i && i.urls[0] !== old && i.imgs[0].naturalWidth === 64; }",
                           arg=[save["id"], src1])
    page.wait_for_function("() => document.querySelectorAll('[data-testid=history-item]').length === 2")
    first = page.locator("[data-testid=history-item]").first.get_attribute("data-prompt-id")
    history = server.get("/history").json()
    assert first == list(history)[-1], "newest first"
    assert page.loom_errors == []


def test_validation_error_marks_the_node_and_input(editor_server, page):
    server = editor_server()
    open_editor(page, server)
    ckpt = node_of_type(page, "CheckpointLoaderSimple")
    latent = node_of_type(page, "EmptyLatentImage")
    set_widget(page, ckpt["id"], "ckpt_name", "missing-model.safetensors")
    set_widget(page, latent["id"], "width", 8)  # below the declared minimum of 16
    page.click("[data-testid=queue-button]")
    bubble = page.locator(f"[data-testid=node-error][data-node-id='{ckpt['id']}']")
    bubble.wait_for()
    text = bubble.inner_text()
    assert "missing-model.safetensors" in text and "models/checkpoints" in text
    by_id = {n["id"]: n for n in nodes(page)}
    assert [i["name"] for i in by_id[ckpt["id"]]["inputs"] if i["hasErrors"]] == ["ckpt_name"]
    assert [i["name"] for i in by_id[latent["id"]]["inputs"] if i["hasErrors"]] == ["width"]
    assert "width" in page.locator(f"[data-testid=node-error][data-node-id='{latent['id']}']").inner_text()
    others = [n for n in by_id.values() if n["id"] not in (ckpt["id"], latent["id"])]
    assert not any(n["error"] for n in others)
    # Fixing one input and queueing again leaves only the other error.
    set_widget(page, latent["id"], "width", 64)
    page.evaluate("() => { window.__answered = false;"
                  " window.loom.execution.queue(1).then(() => window.__answered = true); }")
    page.wait_for_function("() => window.__answered")
    assert page.locator(f"[data-testid=node-error][data-node-id='{ckpt['id']}']").count() == 1
    assert page.locator(f"[data-testid=node-error][data-node-id='{latent['id']}']").count() == 0
    assert server.get("/queue").json()["queue_pending"] == []


def test_interrupt_and_cancel_from_the_queue_panel(editor_server, page, sd_files):  # noqa: F811
    server = editor_server()
    install_checkpoint(server, sd_files)
    open_editor(page, server)
    page.keyboard.press("r")
    page.wait_for_timeout(300)
    make_small(page)
    sampler = node_of_type(page, "KSampler")
    set_widget(page, sampler["id"], "steps", 400)
    watch_events(page)
    page.click("[data-testid=queue-button]")
    # a second, pending prompt (another seed so it is not a cached copy)
    set_widget(page, sampler["id"], "seed", 7)
    page.click("[data-testid=queue-button]")
    page.wait_for_selector("[data-testid=queue-pending]")
    page.click("[data-testid=queue-cancel]")
    page.wait_for_selector("[data-testid=queue-pending]", state="detached")
    wait_event(page, "progress")
    page.click("[data-testid=queue-interrupt]")
    wait_event(page, "execution_interrupted", timeout=60_000)
    page.wait_for_selector("[data-testid=queue-running]", state="detached")
    assert not any(n["running"] for n in nodes(page))
    assert page.locator("#progress-text").inner_text() == ""
    assert server.get("/queue").json() == {"queue_running": [], "queue_pending": []}
    assert not [e for e in events(page) if e["type"] == "execution_success"]


def test_reconnects_after_a_server_restart(editor_server, page, tmp_path):
    base = tmp_path / "restarting"
    server = editor_server(base_dir=base)
    port = server.settings.port
    open_editor(page, server)
    server.stop()
    page.wait_for_selector("[data-testid=connection][data-state=reconnecting]")
    server2 = editor_server(base_dir=base, port=port)
    page.wait_for_selector("[data-testid=connection][data-state=open]", timeout=20_000)
    # The restarted server runs what the editor queues.
    open_graph(page, [("EmptyImage", {"width": 8, "height": 8}), ("SaveImage", {})], [(0, 0, 1, "images")])
    watch_events(page)
    page.click("[data-testid=queue-button]")
    wait_event(page, "execution_success", timeout=30_000)
    assert len(server2.get("/history").json()) == 1


def test_execution_error_shows_message_and_collapsible_traceback(editor_server, page):
    server = editor_server()
    damaged = b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all"  # a header length, then no JSON
    server.put_model("checkpoints", "damaged.safetensors", damaged)
    open_editor(page, server)
    page.keyboard.press("r")
    page.wait_for_function("() => JSON.stringify(window.loom.app.info.CheckpointLoaderSimple.input.required"
                           ".ckpt_name[0]).includes('damaged.safetensors')")
    ids = open_graph(page, [("CheckpointLoaderSimple", {"ckpt_name": "damaged.safetensors"}),
                            ("PreviewAny", {})], [(0, 0, 1, "source")])
    watch_events(page)
    page.click("[data-testid=queue-button]")
    wait_event(page, "execution_error", timeout=60_000)
    bubble = page.locator(f"[data-testid=node-error][data-node-id='{ids[0]}']")
    bubble.wait_for()
    assert "damaged.safetensors" in bubble.inner_text()
    details = bubble.locator("details.traceback")
    assert details.get_attribute("open") is None, "collapsed at first"
    details.locator("summary").click()
    assert details.get_attribute("open") is not None
    assert "File " in details.inner_text()
    assert not any(n["running"] for n in nodes(page))
    assert [n["error"] is not None for n in nodes(page)] == [True, False]


def test_batch_count_queues_several_prompts_stepping_the_seed(editor_server, page):
    server = editor_server()
    open_editor(page, server)
    # An INT with "control after generate" (a seed-like input) feeding an image size.
    ids = open_graph(page, [("PrimitiveInt", {"value": 8, "control_after_generate": "increment"}),
                            ("EmptyImage", {"height": 4}), ("SaveImage", {})],
                     [(0, 0, 1, "width"), (1, 0, 2, "images")])
    page.fill("[data-testid=batch-count]", "3")
    watch_events(page)
    page.click("[data-testid=queue-button]")
    page.wait_for_function("() => (window.__events || []).filter(e => e.type === 'execution_success')"
                           ".length === 3",
                           timeout=60_000)
    history = server.get("/history").json()
    widths = sorted(entry["prompt"][2][str(ids[0])]["inputs"]["value"] for entry in history.values())
    assert widths == [8, 9, 10]
    assert node_of_type(page, "PrimitiveInt")["widgets"]["value"] == 11

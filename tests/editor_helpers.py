"""Helpers for the editor's browser tests: open the editor, read and change its graph, put the
tiny test checkpoint where the server looks for it.

The editor exposes ``window.loom`` (``app``, ``execution``) for tests; the helpers read the graph
through it but act through the page (clicks, keys, file choosers) where the test is about the UI.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

CKPT = "tiny-sd1.safetensors"

# Graph nodes as plain data: id, type, title, widget values by name, mode, input links.
_NODES_JS = """() => window.loom.app.graph._nodes.map(n => ({
  id: n.id, type: n.type, title: n.title, mode: n.mode,
  widgets: Object.fromEntries((n.widgets ?? []).map(w => [w.name, w.value])),
  inputs: (n.inputs ?? []).map(i => ({name: i.name, link: i.link, hasErrors: !!i.hasErrors})),
  running: !!n.loom?.running, error: n.loom?.error?.message ?? null,
  images: (n.loom?.images?.imgs ?? []).filter(i => i.complete && i.naturalWidth).length,
}))"""


def open_editor(page, server, *, fresh: bool = True) -> None:
    """Load the editor and wait until it is drawn and connected."""
    page.set_default_timeout(60_000)  # a shared, busy CI machine can be slow; failures still show
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready='1']")
    page.wait_for_selector("[data-testid=connection][data-state=open]")


def nodes(page) -> list[dict[str, Any]]:
    return page.evaluate(_NODES_JS)


def node_of_type(page, type_: str) -> dict[str, Any]:
    found = [n for n in nodes(page) if n["type"] == type_]
    assert found, f"no {type_} node in {[n['type'] for n in nodes(page)]}"
    return found[0]


def set_widget(page, node_id: int, name: str, value: Any) -> None:
    page.evaluate("""([id, name, value]) => {
      const node = window.loom.app.graph.getNodeById(id);
      const w = node.widgets.find(w => w.name === name);
      w.value = value;
      node.onWidgetChanged?.(name, value, undefined, w);
      window.loom.app.graph.setDirtyCanvas(true, true);
      window.loom.app.tabs.checkChanges();
    }""", [node_id, name, value])


def widget_point(page, node_id: int, name: str, fx: float = 0.5) -> tuple[float, float]:
    """Page coordinates of a widget (``fx`` across its width)."""
    return tuple(page.evaluate("""([id, name, fx]) => {
      const app = window.loom.app, node = app.graph.getNodeById(id);
      const w = node.widgets.find(w => w.name === name);
      const {scale, offset} = app.canvas.ds;
      const rect = app.canvas.canvas.getBoundingClientRect();
      const gx = node.pos[0] + 15 + (node.size[0] - 30) * fx, gy = node.pos[1] + w.y + 10;
      return [rect.left + (gx + offset[0]) * scale, rect.top + (gy + offset[1]) * scale];
    }""", [node_id, name, fx]))


def show_node(page, node_id: int) -> None:
    """Pans the canvas so the node is on screen at zoom 1."""
    page.evaluate("""(id) => {
      const app = window.loom.app, node = app.graph.getNodeById(id);
      app.canvas.ds.scale = 1;
      app.canvas.ds.offset[0] = -node.pos[0] + 60;
      app.canvas.ds.offset[1] = -node.pos[1] + 60;
      app.canvas.setDirty(true, true);
    }""", node_id)
    page.wait_for_timeout(50)


def install_checkpoint(server, sd_files) -> None:
    folder = server.settings.folders.model_folder("checkpoints")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / CKPT
    if not target.exists():
        target.write_bytes(sd_files("sd1").read_bytes())


def make_small(page) -> None:
    """The default workflow at 64×64 with 3 steps and the tiny checkpoint (fast on a CPU)."""
    for n in nodes(page):
        for name, value in (("width", 64), ("height", 64), ("steps", 3), ("ckpt_name", CKPT),
                            ("control_after_generate", "fixed")):
            if name in n["widgets"]:
                set_widget(page, n["id"], name, value)


def watch_events(page) -> None:
    """Records websocket events (and the overall progress text at each) in ``window.__events``."""
    page.evaluate("""() => {
      window.__events = [];
      const conn = window.loom.app.conn;
      for (const t of ['execution_start','executing','progress','executed','execution_success',
                       'execution_error','execution_interrupted','execution_cached','preview']) {
        conn.on(t, d => window.__events.push({type: t, data: t === 'preview' ? d.type : d,
          progressText: document.getElementById('progress-text').textContent,
          running: window.loom.app.graph._nodes.filter(n => n.loom?.running).map(n => n.id),
          previewOn: window.loom.app.graph._nodes.filter(n => n.loom?.images?.preview).map(n => n.id)}));
      }
    }""")


def events(page) -> list[dict[str, Any]]:
    return page.evaluate("() => window.__events")


def wait_event(page, type_: str, timeout: float = 120_000) -> None:
    page.wait_for_function("(t) => (window.__events || []).some(e => e.type === t)", arg=type_,
                           timeout=timeout)


def png_with_workflow(workflow: dict, prompt: dict | None = None) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("workflow", json.dumps(workflow))
    if prompt is not None:
        info.add_text("prompt", json.dumps(prompt))
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 50, 50)).save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def drop_file(page, name: str, data: bytes, mime: str, at: tuple[float, float] = (400, 300)) -> None:
    """Drops a file on the canvas as a user dragging it from the desktop would."""
    page.evaluate("""([name, bytes, mime, x, y]) => {
      const file = new File([new Uint8Array(bytes)], name, {type: mime});
      const dt = new DataTransfer();
      dt.items.add(file);
      const target = document.getElementById('canvas-wrap');
      for (const type of ['dragover', 'drop']) {
        target.dispatchEvent(new DragEvent(type, {dataTransfer: dt, clientX: x, clientY: y,
                                                  bubbles: true, cancelable: true}));
      }
    }""", [name, list(data), mime, at[0], at[1]])


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def open_graph(page, spec: list[tuple], links: list[tuple] = (), name: str = "Test graph") -> dict:
    """Builds a workflow from ``spec`` [(type, {widget: value}), …] and ``links``
    [(from_index, out_slot, to_index, input_name), …] in a new tab; returns its node ids by index."""
    return page.evaluate("""([spec, links, name]) => {
      const {LiteGraph} = window.loom;
      const {LGraph} = window.loom;
      const graph = new (window.loom.app.graph.constructor)();
      const made = spec.map(([type, widgets], i) => {
        const node = LiteGraph.createNode(type);
        node.pos = [60 + 300 * i, 80];
        graph.add(node);
        for (const [k, v] of Object.entries(widgets)) node.widgets.find(w => w.name === k).value = v;
        return node;
      });
      for (const [a, slot, b, input] of links) made[a].connect(slot, made[b], input);
      window.loom.app.tabs.open(graph.serialize(), name);
      return made.map(n => n.id);
    }""", [list(map(list, spec)), list(map(list, links)), name])


def to_screen(page, gx: float, gy: float) -> tuple[float, float]:
    return tuple(page.evaluate("""([x, y]) => { const c = window.loom.app.canvas;
      const r = c.canvas.getBoundingClientRect(), {scale, offset} = c.ds;
      return [r.left + (x + offset[0]) * scale, r.top + (y + offset[1]) * scale]; }""", [gx, gy]))


def slot_point(page, node_id: int, output: bool, index: int) -> tuple[float, float]:
    """Page coordinates of a node's input or output socket."""
    g = page.evaluate("""([id, output, i]) => { const n = window.loom.app.graph.getNodeById(id);
      return output ? n.getOutputPos(i) : n.getInputPos(i); }""", [node_id, output, index])
    return to_screen(page, g[0], g[1])


def drag(page, start: tuple[float, float], end: tuple[float, float], steps: int = 8) -> None:
    page.mouse.move(*start)
    page.mouse.down()
    for i in range(1, steps + 1):
        t = i / steps
        page.mouse.move(start[0] + (end[0] - start[0]) * t, start[1] + (end[1] - start[1]) * t)
    page.mouse.up()


def convert(server, page) -> dict:
    """The API prompt the server makes of the active tab's workflow."""
    workflow = page.evaluate("() => window.loom.app.tabs.serialize()")
    r = server.post("/workflow/convert", json={"workflow": workflow})
    assert r.status == 200, r.text
    return r.json()["prompt"] if "prompt" in r.json() else r.json()

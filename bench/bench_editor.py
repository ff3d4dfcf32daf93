"""Editor benchmark in headless Chromium: load + first draw of big workflows, and panning.

Starts the real server (``main.py`` in a subprocess, built-in nodes) serving the committed
editor bundle, opens it in Debian's Chromium through Playwright, and in the page:

* builds workflows of 500 and 2,000 nodes (copies of the txt2img graph: 7 nodes, 9 links each,
  laid out in a grid) and serialises them to the saved JSON format;
* times opening each in a new tab (parse/configure, undo snapshot, autosave) plus the first full
  draw of the canvas (median of ``--repeat`` runs);
* pans the 2,000-node workflow by 8 px per frame for ``--frames`` frames at zoom 1, 0.5 and
  "fit all" (0.1, where litegraph draws nodes as plain boxes), timing each full redraw
  (``LGraphCanvas.draw``), and reports the median, the 95th percentile and the worst frame.

Wall-clock times suffer when other processes compete for the CPU, so each figure also comes with
the CPU time of the page's main thread (Chrome's ``ThreadTime``, where the canvas is drawn in
CPU rendering), which a busy machine inflates much less.

    .venv/bin/python bench/bench_editor.py [--repeat 5] [--frames 120]

Targets: 500 nodes load + first draw < 200 ms; pan frames < 16 ms. The browser renders on the
CPU (--disable-gpu), as on a machine without a GPU; a shared, busy machine adds noise.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.browser_fixture import CHROMIUM_ARGS, chromium_executable  # noqa: E402
from tests.server_fixture import free_port, wait_until_serving  # noqa: E402

BUILD_JS = """(n) => {
  const {LiteGraph} = window.loom;
  const graph = new (window.loom.app.graph.constructor)();
  const blocks = Math.ceil(n / 7);
  const cols = Math.ceil(Math.sqrt(blocks));
  for (let b = 0; b < blocks; b++) {
    const ox = (b % cols) * 1900, oy = Math.floor(b / cols) * 900;
    const add = (type, x, y) => { const node = LiteGraph.createNode(type);
      node.pos = [ox + x, oy + y]; graph.add(node); return node; };
    const ckpt = add('CheckpointLoaderSimple', 0, 200), pos = add('CLIPTextEncode', 380, 40);
    const neg = add('CLIPTextEncode', 380, 330), lat = add('EmptyLatentImage', 380, 620);
    const ks = add('KSampler', 820, 160), dec = add('VAEDecode', 1200, 160);
    const save = add('SaveImage', 1430, 160);
    ckpt.connect(0, ks, 'model'); ckpt.connect(1, pos, 'clip'); ckpt.connect(1, neg, 'clip');
    ckpt.connect(2, dec, 'vae'); pos.connect(0, ks, 'positive'); neg.connect(0, ks, 'negative');
    lat.connect(0, ks, 'latent_image'); ks.connect(0, dec, 'samples'); dec.connect(0, save, 'images');
  }
  while (graph._nodes.length > n) graph.remove(graph._nodes[graph._nodes.length - 1]);
  window.__bench = JSON.stringify(graph.serialize());
  return graph._nodes.length;
}"""

LOAD_JS = """() => {
  const app = window.loom.app;
  const t0 = performance.now();
  const workflow = JSON.parse(window.__bench);
  const t1 = performance.now();
  app.tabs.open(workflow, 'bench');
  const t2 = performance.now();
  app.canvas.ds.scale = 1; app.canvas.ds.offset[0] = 0; app.canvas.ds.offset[1] = 0;
  app.canvas.draw(true, true);
  const t3 = performance.now();
  const tab = app.tabs.active;
  app.tabs.close(tab);
  return {parse: t1 - t0, open: t2 - t1, draw: t3 - t2, total: t3 - t0};
}"""

PAN_JS = """([frames, scale]) => {
  const app = window.loom.app, c = app.canvas;
  c.ds.scale = scale; c.ds.offset[0] = 0; c.ds.offset[1] = 0;
  c.draw(true, true);
  const times = [];
  for (let i = 0; i < frames; i++) {
    c.ds.offset[0] -= 8 / scale; c.ds.offset[1] -= 3 / scale;
    const t0 = performance.now();
    c.setDirty(true, true);
    c.draw(true, true);
    times.push(performance.now() - t0);
  }
  return times;
}"""




def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


class ThreadClock:
    """CPU seconds of the renderer's main thread, from the DevTools protocol."""

    def __init__(self, page):
        self.cdp = page.context.new_cdp_session(page)
        self.cdp.send("Performance.enable", {"timeDomain": "threadTicks"})

    def __call__(self) -> float:
        metrics = self.cdp.send("Performance.getMetrics")["metrics"]
        return next(m["value"] for m in metrics if m["name"] == "ThreadTime")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of each load measurement (median)")
    parser.add_argument("--frames", type=int, default=120, help="frames per pan measurement (8 px each)")
    parser.add_argument("--width", type=int, default=1600, metavar="PX", help="browser viewport width (px)")
    parser.add_argument("--height", type=int, default=900, metavar="PX", help="browser viewport height (px)")
    args = parser.parse_args()
    exe = chromium_executable()
    if exe is None:
        sys.exit("Chromium is not installed (apt-get install -y chromium, or set $LOOM_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as base:
        proc = subprocess.Popen([sys.executable, str(REPO / "main.py"), "--port", str(port),
                                 "--base-dir", base, "--disable-custom-nodes", "--log-level", "WARNING"],
                                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until_serving(url, proc)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": args.width, "height": args.height})
                page.goto(url + "/")
                page.wait_for_selector("body[data-ready='1']")
                clock = ThreadClock(page)
                print(f"viewport {args.width}x{args.height}, Chromium {browser.version}, CPU rendering")
                for n in (500, 2000):
                    made = page.evaluate(BUILD_JS, n)
                    size_kb = page.evaluate("() => window.__bench.length") / 1024
                    page.evaluate(LOAD_JS)  # warm-up (JIT, fonts)
                    runs, cpu = [], []
                    for _ in range(args.repeat):
                        c0 = clock()
                        runs.append(page.evaluate(LOAD_JS))
                        cpu.append((clock() - c0) * 1000)
                    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                    snap = page.evaluate("""() => { const app = window.loom.app;
                      app.tabs.open(JSON.parse(window.__bench), 'snap'); const t0 = performance.now();
                      app.tabs.active.tracker.current; const t = performance.now() - t0;
                      app.tabs.close(app.tabs.active); return t; }""")
                    print(f"{made:5d} nodes ({size_kb:,.0f} KB JSON): load + first draw "
                          f"{med['total']:.0f} ms median (parse {med['parse']:.0f}, open tab "
                          f"{med['open']:.0f}, draw {med['draw']:.0f}); main-thread CPU "
                          f"{statistics.median(cpu):.0f} ms; then the undo/autosave snapshot "
                          f"{snap:.0f} ms")
                page.evaluate(BUILD_JS, 2000)
                page.evaluate("() => window.loom.app.tabs.open(JSON.parse(window.__bench), 'pan')")
                for scale, label in ((1.0, "zoom 1"), (0.5, "zoom 0.5"), (0.1, "fit all (0.1)")):
                    page.evaluate(PAN_JS, [10, scale])  # warm-up
                    c0 = clock()
                    times = page.evaluate(PAN_JS, [args.frames, scale])
                    cpu = (clock() - c0) * 1000 / args.frames
                    visible = page.evaluate("() => window.loom.app.canvas.visible_nodes.length")
                    print(f"pan 2000 nodes, {label:14s} ({visible:4d} visible): frame median "
                          f"{statistics.median(times):.1f} ms, p95 {pct(times, 0.95):.1f} ms, "
                          f"worst {max(times):.1f} ms; main-thread CPU {cpu:.1f} ms/frame")
                browser.close()
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()

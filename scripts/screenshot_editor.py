"""Make the README's screenshot of the editor: the default txt2img graph, run to completion.

Starts Loom (``main.py``) on a temporary base dir with one checkpoint in ``models/checkpoints``,
opens the editor in Debian's Chromium (headless, through Playwright), queues the default
workflow and, once its image is on the Save Image node, saves a screenshot.

    .venv/bin/python scripts/screenshot_editor.py [--checkpoint FILE] [--out docs/editor.png]
                                                  [--theme dark|light] [--size 1440x900]

The checkpoint: ``--checkpoint``, else the first file in the repository's
``models/checkpoints``, else the tiny random-weight SD 1.x model of the tests (its images are
coloured noise; a real checkpoint makes a real picture).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from tests.browser_fixture import CHROMIUM_ARGS, chromium_executable  # noqa: E402
from tests.server_fixture import free_port, wait_until_serving  # noqa: E402

MODEL_SUFFIXES = (".safetensors", ".ckpt")


def pick_checkpoint(explicit: str | None, workdir: Path) -> Path:
    if explicit:
        return Path(explicit)
    for path in sorted((REPO / "models" / "checkpoints").glob("*")):
        if path.suffix in MODEL_SUFFIXES:
            return path
    from sd_fixtures import save_single_file

    return save_single_file("sd1", workdir / "tiny-sd1.safetensors")




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="checkpoint to load (default: the shipped demo model)")
    parser.add_argument("--out", default=str(REPO / "docs" / "editor.png"), help="PNG written here")
    parser.add_argument("--theme", choices=("dark", "light"), default="dark", help="editor theme")
    parser.add_argument("--size", default="1440x900", help="browser window WIDTHxHEIGHT")
    parser.add_argument("--image-size", type=int, default=128,
                        help="EmptyLatentImage width and height (128: the demo model's size)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    exe = chromium_executable()
    if exe is None:
        sys.exit("Chromium is not installed (apt-get install -y chromium, or set $LOOM_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        ckpt = pick_checkpoint(args.checkpoint, base)
        (base / "models" / "checkpoints").mkdir(parents=True)
        shutil.copy(ckpt, base / "models" / "checkpoints" / ckpt.name)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen([sys.executable, str(REPO / "main.py"), "--port", str(port), "--base-dir",
                                 str(base), "--disable-custom-nodes", "--log-level", "WARNING"],
                                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until_serving(url, proc)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
                context = browser.new_context(viewport={"width": width, "height": height})
                page = context.new_page()
                page.add_init_script(f"localStorage.setItem('loom.theme', '{args.theme}')")
                page.goto(url + "/")
                page.wait_for_selector("body[data-ready='1']")
                page.wait_for_selector("[data-testid=connection][data-state=open]")
                page.evaluate("""([name, size]) => {
                  const app = window.loom.app;
                  for (const n of app.graph._nodes) for (const w of n.widgets ?? []) {
                    if (w.name === 'ckpt_name') w.value = name;
                    if (w.name === 'width' || w.name === 'height') w.value = size;
                    if (w.name === 'seed') w.value = 42;
                    if (w.name === 'control_after_generate') w.value = 'fixed';
                  }
                  app.tabs.checkChanges();
                }""", [ckpt.name, args.image_size])
                page.click("[data-testid=queue-button]")
                page.wait_for_function("""() => window.loom.app.graph._nodes.some(n => n.type === 'SaveImage'
                  && n.loom?.images?.imgs[0]?.naturalWidth > 0 && !n.loom.images.preview)""", timeout=600_000)
                page.click(".side-tabs button[data-panel=history]")
                page.wait_for_selector("[data-testid=history-image]")
                page.wait_for_timeout(500)
                out = Path(args.out)
                out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(out))
                browser.close()
                print(f"wrote {out} ({out.stat().st_size // 1024} KB) with {ckpt.name}")
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()

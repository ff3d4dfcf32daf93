"""Does the server's RAM stay within its cache budget over many distinct prompts?

Starts ``main.py`` (built-in nodes, ``--cache-max-ram-mb``), queues N distinct prompts of cheap
image nodes with sizeable outputs (EmptyImage -> ImageInvert -> ImageScale -> PreviewImage, a
new colour each time, so nothing is a cache hit), and prints the server's RSS and its cache
accounting every ``--every`` prompts, then what ``POST /free`` gives back.

    .venv/bin/python bench/bench_ram_plateau.py [--prompts 400] [--size 512] [--budget-mb 256]

A healthy server plateaus: RSS stops growing once the cache is full (budget + a fixed overhead).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.server_fixture import free_port, image_prompt  # noqa: E402


def call(url: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        text = r.read()
    return json.loads(text) if text else {}


def wait_done(url: str, prompt_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = call(url, f"/history/{prompt_id}")
        if prompt_id in entry:
            return entry[prompt_id]
        time.sleep(0.01)
    raise TimeoutError(prompt_id)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=400, help="distinct prompts queued, one after another")
    ap.add_argument("--size", type=int, default=512, metavar="PX", help="side of each prompt's image (px)")
    ap.add_argument("--budget-mb", type=int, default=256, metavar="MB", help="the server's cache budget")
    ap.add_argument("--every", type=int, default=50, help="print the server's RSS every N prompts")
    ap.add_argument("--workers", type=int, default=1, help="the server's --workers")
    args = ap.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as base:
        log = open(Path(base) / "server.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "main.py"), "--base-dir", base, "--port", str(port),
             "--disable-custom-nodes", "--cache-max-ram-mb", str(args.budget_mb),
             "--workers", str(args.workers), "--preview-method", "none"],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    call(url, "/queue")
                    break
                except OSError:
                    time.sleep(0.1)
            rss = psutil.Process(proc.pid)
            print(f"start: RSS {rss.memory_info().rss / 2**20:.0f} MB")
            t0 = time.perf_counter()
            for i in range(1, args.prompts + 1):
                pid = call(url, "/prompt", {"prompt": image_prompt(i, args.size)})["prompt_id"]
                entry = wait_done(url, pid)
                assert entry["status"]["status_str"] == "success", entry["status"]
                if i % args.every == 0:
                    stats = call(url, "/system_stats").get("loom", {}).get("memory", {})
                    print(f"{i:5d} prompts: RSS {rss.memory_info().rss / 2**20:6.0f} MB; cache "
                          f"{stats.get('cache_bytes', 0) / 2**20:6.1f} MB of "
                          f"{stats.get('cache_max_bytes', 0) / 2**20:.0f} MB "
                          f"({time.perf_counter() - t0:.0f} s)", flush=True)
            call(url, "/free", {"unload_models": True, "free_memory": True})
            time.sleep(1)
            print(f"after /free: RSS {rss.memory_info().rss / 2**20:.0f} MB")
        finally:
            proc.terminate()
            proc.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())

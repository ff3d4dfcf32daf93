"""RAM stays within the cache budget: every kept output is counted, freed memory goes back to
the OS, and a long run of distinct prompts plateaus (bench: bench/bench_ram_plateau.py)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import psutil
import pytest
import torch
from PIL import Image

from loom.engine.cache import OutputCache
from loom.engine.sizeof import modules_of, sizeof
from loom.server import ws as wsmod
from tests.server_fixture import LoomClient, free_port, image_prompt, start_main

MB = 2**20


# -- accounting ----------------------------------------------------------------------------------

class PluginLatent:
    """A plugin's own output type: a plain object holding a tensor."""

    def __init__(self, samples):
        self.samples = samples
        self.meta = {"note": "x"}


def test_sizeof_counts_what_an_output_keeps_alive():
    big = torch.zeros(1024, 1024)  # 4 MB
    assert sizeof(big[:1]) >= 4 * MB  # a slice keeps the whole storage
    assert sizeof(torch.zeros(3).expand(512, 512, 3)) < 1024  # an expand keeps 12 bytes
    assert 4 * MB <= sizeof((big, big[1:], [big])) < 4 * MB + 4096  # one storage, once
    assert sizeof(PluginLatent(torch.zeros(1024, 1024))) >= 4 * MB
    assert sizeof(Image.new("RGB", (1000, 1000))) >= 3 * MB
    arr = np.zeros((1000, 1000), dtype=np.float32)
    assert sizeof(arr[:10]) >= arr.nbytes
    module = torch.nn.Linear(512, 512)
    assert sizeof((module,)) < 1024  # weights are counted per module, not as output bytes
    assert list(modules_of((module,)).values())[0][1] == (512 * 512 + 512) * 4
    # ...also a module inside a plugin's own model wrapper.
    assert list(modules_of((PluginLatent(module),)).values())[0][0] is module


def test_the_cache_keeps_plugin_outputs_within_budget():
    cache = OutputCache(max_entries=1000, max_bytes=20 * MB)
    for i in range(20):
        cache.put(f"s{i}", (PluginLatent(torch.zeros(1024, 1024)),), None)  # 4 MB each
    stats = cache.stats()
    assert stats["bytes"] <= 20 * MB and stats["entries"] <= 5


def test_a_slow_websocket_client_cannot_hold_the_servers_ram():
    class NeverReads:
        closed = False
        close_calls = 0

        async def close(self, *args, **kwargs):
            self.close_calls += 1

    async def go():
        sock = NeverReads()
        conn = wsmod.Connection("c", sock)  # no writer task: nothing is ever sent
        preview = b"\x00" * 100_000
        for _ in range(200):  # 20 MB of previews
            conn.push(preview)
        assert conn.outbox_bytes <= wsmod.PREVIEW_BACKLOG
        text = "x" * 1_000_000
        for _ in range(80):  # 80 MB of events
            conn.push(text)
        await asyncio.sleep(0)
        assert conn.outbox_bytes <= wsmod.MAX_OUTBOX_BYTES and sock.close_calls == 1

    asyncio.run(go())


# -- a long run ------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.timeout(300)
def test_rss_plateaus_over_many_distinct_prompts_and_free_gives_it_back(tmp_path):
    budget_mb, size, prompts = 64, 512, 90
    port = free_port()
    builtin = str(__import__("loom.config", fromlist=["REPO_ROOT"]).REPO_ROOT / "nodes")
    proc = start_main(tmp_path, port, "--builtin-nodes-dir", builtin, "--cache-max-ram-mb",
                      str(budget_mb), "--preview-method", "none")
    client = LoomClient(f"http://127.0.0.1:{port}")
    rss = psutil.Process(proc.pid)
    try:
        samples = {}
        for i in range(1, prompts + 1):
            entry = client.run_prompt(image_prompt(i, size), timeout=60)
            assert entry["status"]["status_str"] == "success"
            if i in (1, 30, 60, prompts):
                time.sleep(0.2)  # the worker trims after answering
                memory = client.get("/system_stats").json()["loom"]["memory"]
                assert memory["cache_max_bytes"] == budget_mb * MB
                assert 0 < memory["cache_bytes"] <= budget_mb * MB
                samples[i] = rss.memory_info().rss
        # Each prompt leaves ~13 MB of images: ~1.2 GB went through a 64 MB cache. Once the
        # cache is full, RSS stays put (today's figure: +0-5 MB; before, it kept climbing).
        growth = (samples[prompts] - samples[30]) / MB
        assert growth < 24, {k: v // MB for k, v in samples.items()}
        assert samples[prompts] - samples[1] < (budget_mb + 48) * MB
        r = client.post("/free", json={"free_memory": True, "unload_models": True})
        assert r.status == 200
        time.sleep(0.3)
        after = rss.memory_info().rss
        assert client.get("/system_stats").json()["loom"]["memory"]["cache_bytes"] == 0
        # The cache's memory is handed back to the OS.
        assert samples[prompts] - after > budget_mb * MB // 2, (samples[prompts] // MB, after // MB)
    finally:
        client.close()
        proc.kill()
        proc.wait(10)

"""Models are loaded once per process: two workers on one checkpoint hold one copy, a re-run
with another prompt loads nothing, a changed file is loaded again."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from sd_fixtures import sd_cpu_only, sd_files  # noqa: F401  (fixtures)

from loom.runtime.loaded_models import LoadedModels
from loom.runtime.sd.types import DiffusionModel

WORKFLOWS = Path(__file__).resolve().parent / "data" / "workflows"


def txt2img(ckpt: str, seed: int, text: str = "a red square") -> dict:
    prompt = json.loads((WORKFLOWS / "default_txt2img.prompt.json").read_text())
    prompt["4"]["inputs"]["ckpt_name"] = ckpt
    prompt["5"]["inputs"].update(width=64, height=64)
    prompt["3"]["inputs"].update(steps=2, seed=seed)
    prompt["6"]["inputs"]["text"] = text
    return prompt


def unets_held(server) -> set[int]:
    """ids of the UNets the workers' output caches hold."""
    held = set()
    for worker in server.state.workers.workers:
        for entry in list(worker.executor.cache._entries.values()):
            for value in entry.outputs:
                if isinstance(value, DiffusionModel):
                    held.add(id(value.unet))
    return held


@pytest.mark.timeout(600)
def test_two_workers_share_one_copy_and_reruns_load_nothing(loom_server_factory, sd_files):  # noqa: F811
    server = loom_server_factory(builtin=True, workers=2)
    folder = server.settings.folders.model_folder("checkpoints")
    folder.mkdir(parents=True, exist_ok=True)
    ckpt = folder / "shared.safetensors"
    ckpt.write_bytes(sd_files("sd1", "safetensors").read_bytes())

    ids = [server.queue_prompt(txt2img("shared.safetensors", seed)) for seed in (1, 2, 3, 4)]
    ran_on = set()
    for pid in ids:
        entry = server.wait_history(pid, timeout=300)
        assert entry["status"]["status_str"] == "success", entry["status"]
    for worker in server.state.workers.workers:
        if worker.last_result is not None:
            ran_on.add(worker.worker_id)
    manager = server.state.models.get()
    loads = manager.loaded.loads
    assert loads[("checkpoint", "shared.safetensors")] == 1
    assert len(unets_held(server)) == 1  # one copy, whichever worker ran what
    assert len(ran_on) == 2, "both workers should have taken prompts"

    # One changed prompt: the text encoder runs again, no model is loaded.
    entry = server.run_prompt(txt2img("shared.safetensors", 1, "a blue circle"), timeout=300)
    assert entry["status"]["status_str"] == "success"
    assert loads[("checkpoint", "shared.safetensors")] == 1

    # The file changes on disk: loaded again.
    stat = ckpt.stat()
    os.utime(ckpt, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    entry = server.run_prompt(txt2img("shared.safetensors", 5), timeout=300)
    assert entry["status"]["status_str"] == "success"
    assert loads[("checkpoint", "shared.safetensors")] == 2
    stats = server.get("/system_stats").json()["loom"]["models"]
    assert stats["mode"] == "cpu"
    assert any(m["file"] == "shared.safetensors" for m in stats["loaded"])


class Box:  # weak-referenceable stand-in for a loaded model
    pass


def test_one_load_for_concurrent_requests_and_a_fresh_one_when_nobody_holds_it(tmp_path):
    path = tmp_path / "m.bin"
    path.write_bytes(b"x")
    registry = LoadedModels()
    started = threading.Event()
    calls = []

    def load():
        calls.append(1)
        started.set()
        threading.Event().wait(0.2)
        return Box(), None

    results = []
    threads = [
        threading.Thread(target=lambda: results.append(registry.get("k", path, load))) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(calls) == 1 and len({id(r[0]) for r in results}) == 1
    assert results[0][1] is None
    kept = results[0]
    assert registry.get("k", path, load) is not None and len(calls) == 1
    assert registry.get("k", path, load, options="fp16") and len(calls) == 2  # other options
    results.clear()
    del kept
    import gc

    gc.collect()
    registry.get("k", path, load)
    assert len(calls) == 3  # nobody held the first copy: loaded again

"""Model loading is safe under concurrency: two workers loading two checkpoints at the same
moment both succeed, and nothing is left patched for the loads and prompts that follow."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch
from sd_fixtures import sd_cpu_only, sd_files  # noqa: F401  (fixtures)

from loom.runtime.sd import loader
from loom.runtime.sd.empty import empty_parameters

WORKFLOWS = Path(__file__).resolve().parent / "data" / "workflows"


def test_empty_parameters_is_per_thread_and_leaves_nothing_behind():
    inside, done = threading.Event(), threading.Event()
    seen = {}

    def builder(name: str, wait_for: threading.Event | None, then: threading.Event | None):
        with empty_parameters():
            seen[name] = torch.nn.Linear(2, 2).weight.device.type
            if then is not None:
                then.set()
            if wait_for is not None:
                wait_for.wait(5)

    def bystander():
        inside.wait(5)
        seen["bystander"] = torch.nn.Linear(2, 2).weight.device.type
        done.set()

    # A enters, B enters, A leaves first, B last: the order that left accelerate's patch behind.
    b_in = threading.Event()
    a = threading.Thread(target=builder, args=("a", b_in, inside))
    b = threading.Thread(target=builder, args=("b", done, b_in))
    c = threading.Thread(target=bystander)
    for t in (a, b, c):
        t.start()
    for t in (a, b, c):
        t.join(10)
    assert seen == {"a": "meta", "b": "meta", "bystander": "cpu"}
    assert torch.nn.Linear(2, 2).weight.device.type == "cpu"
    other = {}
    t = threading.Thread(target=lambda: other.setdefault("d", torch.nn.Linear(2, 2).weight.device.type))
    t.start()
    t.join()
    assert other == {"d": "cpu"}


def test_one_file_is_loaded_by_one_thread_at_a_time(sd_files, monkeypatch):  # noqa: F811
    active, peak = [0], [0]
    lock = threading.Lock()
    real = loader.load_state_dict

    def counting(*args, **kwargs):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            threading.Event().wait(0.3)
            return real(*args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(loader, "load_state_dict", counting)
    path = sd_files("sd1", "safetensors")
    results = []
    threads = [threading.Thread(target=lambda: results.append(loader.load_checkpoint(path)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 2 and peak[0] == 1
    assert results[0][0].unet is not results[1][0].unet  # each worker owns its modules


def txt2img(ckpt: str, seed: int) -> dict:
    prompt = json.loads((WORKFLOWS / "default_txt2img.prompt.json").read_text())
    prompt["4"]["inputs"]["ckpt_name"] = ckpt
    prompt["5"]["inputs"].update(width=64, height=64)
    prompt["3"]["inputs"].update(steps=2, seed=seed)
    return prompt


@pytest.mark.timeout(600)
def test_two_workers_load_two_checkpoints_at_once(loom_server_factory, sd_files,  # noqa: F811
                                                   monkeypatch):
    from diffusers import UNet2DConditionModel

    # Make the two loads overlap while each is building its UNet (inside the empty-weights
    # context), the moment that used to leave torch patched.
    barrier = threading.Barrier(2, timeout=30)
    real_init = UNet2DConditionModel.__init__

    def meeting_init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        try:
            if barrier.wait() == 1:  # the later arrival (which entered later) leaves last
                threading.Event().wait(0.3)
        except threading.BrokenBarrierError:
            pass

    monkeypatch.setattr(UNet2DConditionModel, "__init__", meeting_init)
    server = loom_server_factory(builtin=True, workers=2)
    folder = server.settings.folders.model_folder("checkpoints")
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("a", "b", "c"):
        (folder / f"{name}.safetensors").write_bytes(sd_files("sd1", "safetensors").read_bytes())

    first = [server.queue_prompt(txt2img(f"{name}.safetensors", 1)) for name in ("a", "b")]
    for pid in first:
        entry = server.wait_history(pid, timeout=300)
        assert entry["status"]["status_str"] == "success", entry["status"]
    assert barrier.n_waiting == 0 and not barrier.broken  # the loads did meet
    monkeypatch.setattr(UNet2DConditionModel, "__init__", real_init)
    # Later prompts, with a model already loaded and with a fresh load, still work.
    later = [server.queue_prompt(txt2img("a.safetensors", 2)),
             server.queue_prompt(txt2img("c.safetensors", 3))]
    for pid in later:
        entry = server.wait_history(pid, timeout=300)
        assert entry["status"]["status_str"] == "success", entry["status"]
    assert torch.nn.Linear(2, 2).weight.device.type == "cpu"

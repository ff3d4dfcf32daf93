"""Placement against a simulated device with a byte budget: modes, eviction order, streaming,
the accounting never over budget, workers sharing modules, and the MPS path (mocked)."""

from __future__ import annotations

import random
import threading

import pytest
import torch

from loom.runtime import vram
from loom.runtime.devices import DevicePolicy
from loom.runtime.model_manager import ModelManager, module_bytes
from loom.runtime.sd.types import WeightPatch
from loom.runtime.vram import GiB, SimulatedMemory, VramMode, choose_mode

CPU = DevicePolicy(torch.device("cpu"), torch.float32, torch.float32)
MB = 1 << 20


class Blocks(torch.nn.Module):
    """A model shaped like the real ones for streaming: a stem and a list of blocks."""

    def __init__(self, n_blocks: int = 4, width: int = 128):
        super().__init__()
        self.stem = torch.nn.Linear(width, width)
        self.blocks = torch.nn.ModuleList(torch.nn.Linear(width, width) for _ in range(n_blocks))

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = torch.tanh(block(x))
        return x


def simulated(budget: int, mode: str | None = "normal") -> ModelManager:
    return ModelManager(CPU, memory=SimulatedMemory(budget), device_budget=budget, mode=mode)


@pytest.mark.parametrize(
    ("gb", "mode"),
    [
        (2, VramMode.LOW),
        (4, VramMode.LOW),
        (6, VramMode.LOW),
        (8, VramMode.NORMAL),
        (12, VramMode.NORMAL),
        (24, VramMode.HIGH),
        (1, VramMode.NONE),
    ],
)
def test_auto_mode_follows_the_free_vram(gb, mode):
    usable = gb * GiB - vram.DEFAULT_RESERVE_BYTES
    assert choose_mode(torch.device("cuda"), usable) == mode
    assert choose_mode(torch.device("cpu"), usable) == VramMode.CPU


def test_a_6_gb_gpu_runs_in_low_mode_unless_told_otherwise():
    manager = ModelManager(
        CPU,
        memory=SimulatedMemory(6 * GiB),
        device_budget=6 * GiB,
        mode="auto",
        reserve_bytes=vram.DEFAULT_RESERVE_BYTES,
    )
    assert manager.mode == VramMode.LOW
    assert manager.device_budget == 6 * GiB - vram.DEFAULT_RESERVE_BYTES
    forced = ModelManager(CPU, memory=SimulatedMemory(6 * GiB), device_budget=6 * GiB, mode="high")
    assert forced.mode == VramMode.HIGH
    assert ModelManager(CPU).mode == VramMode.CPU  # a real CPU: nothing moves


def test_eviction_is_least_recently_used_and_the_budget_holds():
    a, b, c = Blocks(), Blocks(), Blocks()
    size = module_bytes(a)
    manager = simulated(2 * size + size // 2)
    for m in (a, b, a):
        with manager.use(m):
            pass
    with manager.use(c):  # b is the least recently used
        pass
    assert manager.resident() == [a, c] and manager.offloads == 1
    assert manager.placement(b) == "cpu" and manager.placement(c) == "device"
    assert manager.peak_accounted <= manager.device_budget


def test_working_memory_makes_room_too():
    a, b = Blocks(), Blocks()
    size = module_bytes(a)
    manager = simulated(3 * size)
    with manager.use(a):
        pass
    with manager.use(b, working_bytes=size + size // 2):  # a must go for the activations
        assert manager.resident() == [b]
        assert manager.accounted_bytes() <= manager.device_budget
    assert manager.accounted_bytes() == size  # the working memory is released after


def test_a_model_bigger_than_the_budget_is_streamed_with_the_same_result():
    big = Blocks(n_blocks=8)
    x = torch.randn(3, 128)
    expected = big(x)
    manager = simulated(module_bytes(big) // 2)
    with manager.use(big):
        assert manager.placement(big) == "block"
        assert torch.allclose(big(x), expected)
    assert manager.peak_accounted <= manager.device_budget
    manager.free()
    assert manager.placement(big) == "cpu" and torch.allclose(big(x), expected)


def test_low_mode_streams_big_models_and_keeps_small_ones_warm():
    unet, vae = Blocks(n_blocks=8, width=256), Blocks(n_blocks=2, width=64)
    budget = module_bytes(unet) + module_bytes(vae) + MB  # both would fit whole
    low = simulated(budget, "low")
    with low.use(unet), low.use(vae):
        assert low.placement(unet) == "block" and low.placement(vae) == "device"
    normal = simulated(budget, "normal")
    with normal.use(unet), normal.use(vae):
        assert normal.placement(unet) == "device" and normal.placement(vae) == "device"


def test_none_mode_streams_everything_layer_by_layer():
    model = Blocks()
    x = torch.randn(2, 128)
    expected = model(x)
    manager = simulated(64 * MB, "none")
    with manager.use(model):
        assert manager.placement(model) == "leaf"
        assert torch.allclose(model(x), expected)


def test_random_sequences_never_exceed_the_budget_in_the_accounting():
    rng = random.Random(0)
    models = [Blocks(n_blocks=rng.randint(1, 6), width=rng.choice((64, 128, 256))) for _ in range(6)]
    biggest = max(module_bytes(m) for m in models)
    for mode in ("normal", "low", "none"):
        manager = simulated(int(biggest * 1.5), mode)
        for _ in range(40):
            chosen = rng.sample(models, rng.randint(1, 3))
            with manager.use(*chosen, working_bytes=rng.randint(0, biggest // 4)):
                assert manager.accounted_bytes() <= manager.device_budget
        assert manager.peak_accounted <= manager.device_budget, mode


def test_patches_survive_streaming_and_come_off_again():
    model = Blocks(n_blocks=2, width=4)
    original = model.blocks[0].weight.detach().clone()
    patch = WeightPatch(
        key="blocks.0.weight", up=torch.ones(4, 1), down=torch.ones(1, 4), scale=1.0, strength=0.5
    )
    manager = simulated(1, "low")  # nothing fits: streamed
    with manager.use((model, (patch,))):
        assert manager.placement(model) in ("block", "leaf")
        assert torch.allclose(model.blocks[0].weight, original + 0.5)
    with manager.use(model):
        assert torch.equal(model.blocks[0].weight, original)


def run_together(*workers) -> None:
    """Run each function in its own thread (as server workers do) and wait for all."""
    threads = [threading.Thread(target=w) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)


def test_two_workers_compute_with_one_module_at_the_same_time():
    """The lock guards placement, not compute: a second worker enters while the first is
    inside ``use`` with the same weights."""
    model = Blocks()
    manager = simulated(64 * MB)
    inside, overlap = threading.Event(), threading.Event()

    def first():
        with manager.use(model):
            inside.set()
            overlap.wait(5)

    def second():
        inside.wait(5)
        with manager.use(model):
            overlap.set()

    run_together(first, second)
    assert overlap.is_set() and manager.loads == 1  # one placement, shared


def test_another_patch_set_waits_for_the_worker_using_the_module():
    model = Blocks(n_blocks=1, width=4)
    original = model.blocks[0].weight.detach().clone()
    patch = WeightPatch(
        key="blocks.0.weight", up=torch.ones(4, 1), down=torch.ones(1, 4), scale=1.0, strength=1.0
    )
    manager = simulated(64 * MB)
    inside, release = threading.Event(), threading.Event()
    seen = {}

    def patched():
        with manager.use((model, (patch,))):
            inside.set()
            release.wait(5)
            seen["patched"] = model.blocks[0].weight.detach().clone()

    def plain():
        inside.wait(5)
        with manager.use(model):
            seen["plain"] = model.blocks[0].weight.detach().clone()

    a, b = threading.Thread(target=patched), threading.Thread(target=plain)
    a.start()
    b.start()
    b.join(0.5)
    assert b.is_alive()  # waiting: re-patching now would change the first worker's weights
    release.set()
    a.join(5)
    b.join(5)
    assert torch.allclose(seen["patched"], original + 1)
    assert torch.equal(seen["plain"], original)


def test_a_worker_that_does_not_fit_waits_for_the_other_to_finish():
    a, b = Blocks(), Blocks()
    size = module_bytes(a)
    manager = simulated(size + size // 2)
    inside, done = threading.Event(), threading.Event()
    order = []

    def first():
        with manager.use(a):
            inside.set()
            threading.Event().wait(0.3)
            order.append("first done")

    def second():
        inside.wait(5)
        with manager.use(b):
            order.append("second in")
            assert manager.placement(b) == "device"  # whole, once the first released a
        done.set()

    run_together(first, second)
    assert done.is_set() and order == ["first done", "second in"]
    assert manager.peak_accounted <= manager.device_budget


def test_mps_path_makes_no_cuda_call(monkeypatch):
    def no_cuda(*_a, **_k):
        raise AssertionError("CUDA-only call on the MPS path")

    for name in ("mem_get_info", "memory_reserved", "memory_allocated", "empty_cache", "synchronize"):
        monkeypatch.setattr(torch.cuda, name, no_cuda)
    calls = []
    monkeypatch.setattr(torch.mps, "recommended_max_memory", lambda: 8 * GiB, raising=False)
    monkeypatch.setattr(torch.mps, "driver_allocated_memory", lambda: 1 * GiB, raising=False)
    monkeypatch.setattr(torch.mps, "empty_cache", lambda: calls.append("empty"), raising=False)
    policy = DevicePolicy(torch.device("mps"), torch.float16, torch.float32)
    manager = ModelManager(policy, mode="auto")
    assert manager.device_budget == 7 * GiB - vram.DEFAULT_RESERVE_BYTES
    assert manager.mode == VramMode.LOW
    assert not manager.memory.supports_streams()  # group offloading without CUDA streams
    manager.free()
    assert calls == ["empty"]
    manager.stats()


def test_a_nested_use_that_does_not_fit_streams_at_once():
    """The thread's own outer use (and its working memory) is nothing to wait for."""
    import time

    a, b = Blocks(), Blocks()
    size = module_bytes(a)
    manager = simulated(2 * size)
    start = time.monotonic()
    with manager.use(a, working_bytes=size // 2):
        with manager.use(b):
            assert manager.placement(a) == "device" and manager.placement(b) in ("block", "leaf")
    assert time.monotonic() - start < 5
    assert manager.peak_accounted <= manager.device_budget

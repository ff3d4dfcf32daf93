"""Nodes declare their models and working memory; on an (injected) out-of-memory error the node
runs once more after everything idle left the device, in tiles where it can, and a second
failure is a clear error."""

from __future__ import annotations

import torch
from sd_fixtures import sd_cpu_only, tiny_components  # noqa: F401  (fixture)

from loom.engine.executor import Executor
from loom.engine.validate import validate_prompt
from loom.nodeapi import Int, ModelUse, Node, NodeRegistry, Output, RunContext
from loom.runtime.devices import DevicePolicy
from loom.runtime.model_manager import ModelManager, module_bytes
from loom.runtime.sd import vae as vae_ops
from loom.runtime.sd.types import Vae
from loom.runtime.vram import SimulatedMemory

CPU = DevicePolicy(torch.device("cpu"), torch.float32, torch.float32)
MODULE = torch.nn.Linear(256, 256)
IDLE = torch.nn.Linear(256, 256)
SEEN: list[dict] = []


def simulated(budget: int) -> ModelManager:
    return ModelManager(CPU, memory=SimulatedMemory(budget), device_budget=budget, mode="normal")


class Hungry(Node):
    """Runs out of memory ``fail`` times, then succeeds."""

    inputs = {"fail": Int(1, min=0, max=5)}
    outputs = (Output("INT"),)
    output_node = True
    attempts = 0

    def uses(self, fail):
        return ModelUse((MODULE,), working_bytes=module_bytes(MODULE))

    def run(self, fail):
        manager = self.ctx.models
        SEEN.append(
            {
                "low_memory": self.ctx.low_memory,
                "resident": manager.resident(),
                "accounted": manager.accounted_bytes(),
            }
        )
        Hungry.attempts += 1
        if Hungry.attempts <= fail:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return (Hungry.attempts,)


def run_hungry(manager: ModelManager, fail: int):
    registry = NodeRegistry()
    registry.register("Hungry", Hungry)
    SEEN.clear()
    Hungry.attempts = 0
    prompt = {"1": {"class_type": "Hungry", "inputs": {"fail": fail}}}
    return Executor(models=manager).execute(validate_prompt(prompt, registry), "p")


def test_an_out_of_memory_node_runs_again_after_everything_idle_left():
    manager = simulated(4 * module_bytes(MODULE))
    with manager.use(IDLE):
        pass
    assert manager.resident() == [IDLE]
    result = run_hungry(manager, fail=1)
    assert result.status == "success", result.error
    assert manager.oom_retries == 1
    first, second = SEEN
    # Declared before run: the module is placed and its working memory counted.
    assert MODULE in first["resident"] and first["accounted"] >= 2 * module_bytes(MODULE)
    assert not first["low_memory"] and second["low_memory"]  # the retry asks for tiles
    assert second["resident"] == [MODULE]  # the idle model was moved off for the retry
    assert manager.peak_accounted <= manager.device_budget


def test_a_second_out_of_memory_is_a_clear_error():
    manager = simulated(4 * module_bytes(MODULE))
    result = run_hungry(manager, fail=2)
    assert result.status == "error"
    message = result.error["exception_message"]
    assert "ran out of memory" in message and "twice" in message and "--vram low" in message
    assert result.error["exception_type"].endswith("OutOfDeviceMemory")
    assert len(SEEN) == 2  # once, then once more: no loop


def test_other_errors_are_not_retried():
    class Broken(Node):
        outputs = (Output("INT"),)
        output_node = True
        calls = 0

        def run(self):
            Broken.calls += 1
            raise RuntimeError("shape mismatch")

    manager = simulated(1 << 30)
    registry = NodeRegistry()
    registry.register("Broken", Broken)
    result = Executor(models=manager).execute(
        validate_prompt({"1": {"class_type": "Broken", "inputs": {}}}, registry), "p"
    )
    assert result.status == "error" and Broken.calls == 1 and manager.oom_retries == 0


def test_vae_decode_retries_in_tiles(monkeypatch):
    from nodes.sd_vae import VAEDecode

    vae = Vae(vae=tiny_components("sd1")["vae"], family="sd1", scaling_factor=0.18215)
    calls = []
    real_tiled = vae_ops.decode_tiled

    def failing_decode(*args, **kwargs):
        calls.append("whole")
        raise torch.OutOfMemoryError("CUDA out of memory")

    def tiled(*args, **kwargs):
        calls.append("tiled")
        return real_tiled(*args, **kwargs)

    monkeypatch.setattr(vae_ops, "decode", failing_decode)
    monkeypatch.setattr(vae_ops, "decode_tiled", tiled)
    manager = simulated(1 << 30)
    node = VAEDecode(RunContext(models=manager))
    latent = {"samples": torch.randn(1, 4, 8, 8)}
    (image,) = manager.run_node(node, {"samples": latent, "vae": vae}, "VAEDecode (node 8)")
    assert calls == ["whole", "tiled"] and image.shape == (1, 64, 64, 3)
    use = node.uses(samples=latent, vae=vae)
    assert use.models == (vae,) and use.working_bytes > 0

"""The model manager: placement by LRU within a device budget, patches, weak references."""

import gc

import torch

from loom.runtime.devices import DevicePolicy
from loom.runtime.model_manager import ModelManager, module_bytes
from loom.runtime.sd.types import WeightPatch

CPU = DevicePolicy(torch.device("cpu"), torch.float32, torch.float32)


def linear(n: int = 256) -> torch.nn.Linear:
    return torch.nn.Linear(n, n, bias=False)  # n*n*4 bytes


def test_least_recently_used_modules_make_room_never_the_ones_in_use():
    a, b, c = linear(), linear(), linear()
    size = module_bytes(a)
    manager = ModelManager(CPU, device_budget=2 * size)
    with manager.use(a):
        pass
    with manager.use(b):
        pass
    with manager.use(a):  # a is now more recent than b
        pass
    with manager.use(c):  # room for c: b (least recently used) goes
        pass
    assert manager.resident() == [a, c] and manager.offloads == 1
    with manager.use(b, c):  # both needed at once: a goes, c stays although older than b
        pass
    assert manager.resident() == [b, c]  # c was used last in that call


def test_patches_follow_the_patch_set_and_originals_come_back():
    layer = linear(4)
    original = layer.weight.detach().clone()
    up, down = torch.ones(4, 1), torch.ones(1, 4)
    patch = WeightPatch(key="weight", up=up, down=down, scale=1.0, strength=0.5)
    manager = ModelManager(CPU)
    with manager.use((layer, (patch,))):
        assert torch.allclose(layer.weight, original + 0.5)
    with manager.use((layer, (patch,))):  # same set: applied once, not twice
        assert torch.allclose(layer.weight, original + 0.5)
    with manager.use(layer):  # no patches: the original weights
        assert torch.equal(layer.weight, original)


def test_a_model_nobody_holds_is_freed_not_kept_alive():
    manager = ModelManager(CPU, device_budget=1 << 30)
    layer = linear()
    with manager.use(layer):
        pass
    assert manager.resident() == [layer]
    del layer
    gc.collect()
    assert manager.resident() == [] and manager._resident == {}

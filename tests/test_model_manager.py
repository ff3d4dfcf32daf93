"""The model manager: placement by LRU within a device budget, patches, weak references."""

import gc

import torch

from loom.runtime.devices import DevicePolicy
from loom.runtime.model_manager import ModelManager, module_bytes
from loom.runtime.sd.types import WeightPatch

CPU = DevicePolicy(torch.device("cpu"), torch.float32, torch.float32)


def linear(n: int = 256) -> torch.nn.Linear:
    return torch.nn.Linear(n, n, bias=False)  # n*n*4 bytes


def use_in_turn(manager: ModelManager, *modules) -> None:
    """Load and release each module, one after the other (each becomes the most recent)."""
    for m in modules:
        with manager.use(m):
            pass


def test_least_recently_used_modules_make_room_never_the_ones_in_use():
    a, b, c = linear(), linear(), linear()
    manager = ModelManager(CPU, device_budget=2 * module_bytes(a))
    use_in_turn(manager, a, b, a)  # a is now more recent than b
    use_in_turn(manager, c)  # room for c: b (least recently used) goes
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


def test_patch_sets_are_compared_by_identity_never_by_tensor_value():
    """Two patches from the same LoRA file (re-read when its strength changed) hold different
    tensors: comparing them must not ask a multi-element tensor for its truth value."""
    layer = linear(4)
    original = layer.weight.detach().clone()

    def patch(strength):
        return WeightPatch(key="weight", up=torch.ones(4, 1), down=torch.ones(1, 4), scale=1.0,
                           strength=strength)

    manager = ModelManager(CPU)
    for strength in (0.5, 0.6, 0.6, 0.5):
        with manager.use((layer, (patch(strength),))):
            assert torch.allclose(layer.weight, original + strength)
    with manager.use((layer, (patch(0.5), patch(0.25)))):  # stacked
        assert torch.allclose(layer.weight, original + 0.75)
    with manager.use(layer):
        assert torch.equal(layer.weight, original)


def test_nested_use_with_another_patch_set_is_refused():
    layer = linear(4)
    original = layer.weight.detach().clone()
    p = WeightPatch(key="weight", up=torch.ones(4, 1), down=torch.ones(1, 4), scale=1.0, strength=1.0)
    manager = ModelManager(CPU)
    with manager.use((layer, (p,))):
        with manager.use((layer, (p,))):  # the same set nests fine
            pass
        try:
            with manager.use(layer):
                raise AssertionError("nested use with other patches must be refused")
        except RuntimeError as e:
            assert "another set of weight patches" in str(e)
        assert torch.allclose(layer.weight, original + 1)  # the outer user's weights are intact
    with manager.use(layer):  # after the outer block, any set is fine again
        pass


def test_nested_use_never_evicts_a_module_in_use():
    """A ControlNet loaded while the sampler holds the UNet must not push the UNet out."""
    unet, controlnet, old = linear(), linear(), linear()
    manager = ModelManager(CPU, device_budget=2 * module_bytes(unet))
    use_in_turn(manager, old)
    with manager.use(unet):
        with manager.use(controlnet):  # room for it: the idle module goes, never the UNet
            assert manager.resident() == [unet, controlnet]
        other = linear()
        with manager.use(other):  # no room without the UNet: over budget, UNet kept
            assert unet in manager.resident() and other in manager.resident()
    assert not manager._in_use

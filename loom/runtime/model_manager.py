"""One owner of where model weights live.

Loaders build modules on the CPU and hand them over; nodes say which models they are about to
use with :meth:`ModelManager.use`, which moves them to the compute device, applies their weight
patches (LoRA) and, afterwards, keeps them resident while they fit. When the next model does
not fit in the device's free memory, the least recently used resident modules (never those the
current call needs) go back to the CPU first. Modules are held weakly: a model nobody uses any
more (the output cache dropped it) is freed, not kept alive here. The low-VRAM strategies of
the roadmap (streaming offload, budgets per device, OOM retry) plug in behind the same ``use``.

Patches live in the MODEL/CLIP wrappers, never in the modules: a LoRA node returns a new wrapper
with a longer patch list over the same module, so a cached upstream MODEL (another branch of the
graph, the next run) is untouched. The module's weights are patched in place only inside
``use``, for the patch list of the wrapper being used: before another list is applied the
originals are restored from backups, so any sequence of stacks equals a fresh load of each. Code
that reads weights must do it inside ``use`` with the patches it means (``()`` for none).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from loom.runtime.devices import DevicePolicy

log = logging.getLogger("loom.models")

# Left free on the device for activations when deciding whether a module fits.
DEVICE_RESERVE_BYTES = 1 << 30


@dataclass
class _Slot:
    ref: weakref.ref
    patches: tuple
    nbytes: int


class ModelManager:
    def __init__(self, policy: DevicePolicy | None = None, *, device_budget: int | None = None):
        """``device_budget``: bytes of weights allowed on the device at once (default: what
        the device reports free, less a reserve; unlimited on the CPU)."""
        self.policy = policy or DevicePolicy.detect()
        self.device_budget = device_budget
        self._lock = threading.RLock()
        # id(module) -> slot, least recently used first, for modules placed on the device.
        self._resident: OrderedDict[int, _Slot] = OrderedDict()
        # id(module) -> {param name: original tensor} for weights a patch changed.
        self._backups: dict[int, dict[str, torch.Tensor]] = {}
        self.offloads = 0  # modules moved back to the CPU to make room
        # id(module) -> (patches, depth) for modules inside a ``use`` block right now.
        self._in_use: dict[int, tuple[tuple, int]] = {}

    @property
    def device(self) -> torch.device:
        return self.policy.device

    @contextlib.contextmanager
    def use(self, *items: tuple[torch.nn.Module, tuple] | torch.nn.Module) -> Iterator[None]:
        """Make modules ready for compute: ``use(unet)`` or ``use((unet, patches), …)``.

        Patches are applied in place (originals backed up) and stay applied until the module is
        used with a different patch set, so back-to-back runs of one LoRA stack cost nothing.
        """
        pairs = [item if isinstance(item, tuple) else (item, ()) for item in items]
        with self._lock:
            needed = {id(module) for module, _ in pairs}
            for module, patches in pairs:
                active = self._in_use.get(id(module))
                if active is not None and not same_patches(active[0], tuple(patches)):
                    # Re-patching would change the weights under the outer user's feet.
                    raise RuntimeError(f"{type(module).__name__} is in use with another set of "
                                       "weight patches (LoRAs); nested use must use the same set")
            for module, patches in pairs:
                self._load(module, tuple(patches), needed)
            for module, patches in pairs:
                held = self._in_use.get(id(module))
                self._in_use[id(module)] = (tuple(patches), (held[1] if held else 0) + 1)
            try:
                yield
            finally:
                for module, _ in pairs:
                    patches, count = self._in_use[id(module)]
                    if count == 1:
                        del self._in_use[id(module)]
                    else:
                        self._in_use[id(module)] = (patches, count - 1)

    def resident(self) -> list[torch.nn.Module]:
        """Modules on the device, least recently used first."""
        with self._lock:
            return [m for slot in self._resident.values() if (m := slot.ref()) is not None]

    # -- placement ---------------------------------------------------------------------------

    def _load(self, module: torch.nn.Module, patches: tuple, needed: set[int]) -> None:
        key = id(module)
        slot = self._resident.get(key)
        if slot is not None and slot.ref() is module:
            self._resident.move_to_end(key)
            if not same_patches(slot.patches, patches):
                self._restore(module)
                if patches:
                    self._apply(module, patches)
                slot.patches = patches
            return
        nbytes = module_bytes(module)
        self._make_room(nbytes, needed)
        if _device_of(module) != self.device:
            module.to(self.device)
        self._restore(module)
        if patches:
            self._apply(module, patches)
        self._resident[key] = _Slot(weakref.ref(module, self._finalizer(key)), patches, nbytes)

    def _finalizer(self, key: int):
        def gone(_ref) -> None:  # the module was garbage-collected: forget it
            with self._lock:
                slot = self._resident.get(key)
                if slot is not None and slot.ref() is None:
                    del self._resident[key]
                self._backups.pop(key, None)

        return gone

    def _make_room(self, nbytes: int, needed: set[int]) -> None:
        """Offload least recently used modules (not ``needed`` now) until ``nbytes`` fit."""
        if self.device.type == "cpu" and self.device_budget is None:
            return
        while self._free_bytes() < nbytes:
            victim = next((k for k in self._resident if k not in needed), None)
            if victim is None:
                log.warning("%.1f GB of weights do not fit on %s with what this prompt needs "
                            "already there; trying anyway", nbytes / 2**30, self.device)
                return
            slot = self._resident.pop(victim)
            module = slot.ref()
            if module is not None:
                log.info("Offloading %s (%.2f GB) to the CPU to make room", type(module).__name__,
                         slot.nbytes / 2**30)
                module.to("cpu")  # patches stay applied (backups are kept) for its next use
                self.offloads += 1
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _free_bytes(self) -> int:
        used = sum(slot.nbytes for slot in self._resident.values())
        if self.device_budget is not None:
            return self.device_budget - used
        free, _total = torch.cuda.mem_get_info(self.device)
        return free - DEVICE_RESERVE_BYTES

    # -- patches -----------------------------------------------------------------------------

    @torch.no_grad()
    def _apply(self, module: torch.nn.Module, patches: tuple) -> None:
        params = dict(module.named_parameters())
        backups = self._backups.setdefault(id(module), {})
        for patch in patches:
            weight = params.get(patch.key)
            if weight is None:
                log.warning("patch for %s matches no weight of %s; skipped", patch.key,
                            type(module).__name__)
                continue
            if patch.key not in backups:
                backups[patch.key] = weight.detach().to("cpu", copy=True)
            weight.add_(patch_delta(patch, weight.shape).to(weight.device, weight.dtype))

    @torch.no_grad()
    def _restore(self, module: torch.nn.Module) -> None:
        backups = self._backups.pop(id(module), None)
        if not backups:
            return
        params = dict(module.named_parameters())
        for name, original in backups.items():
            params[name].copy_(original)

    def free(self) -> None:
        """Drop patches and move everything back to the CPU (the ``/free`` route)."""
        with self._lock:
            for slot in list(self._resident.values()):
                module = slot.ref()
                if module is None:
                    continue
                self._restore(module)
                if self.device.type != "cpu":
                    module.to("cpu")
            self._resident.clear()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def same_patches(a: tuple, b: tuple) -> bool:
    """Whether two patch lists are the same patches in the same order (by identity: patches
    hold tensors, and ``==`` on tensors has no single truth value)."""
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def module_bytes(module: torch.nn.Module) -> int:
    return sum(t.element_size() * t.nelement()
               for t in (*module.parameters(), *module.buffers()))


def _device_of(module: torch.nn.Module) -> torch.device:
    return next(module.parameters(), torch.empty(0)).device


def patch_delta(patch: Any, shape: torch.Size) -> torch.Tensor:
    """``strength * scale * up @ down`` reshaped to the weight (linear or conv)."""
    up = patch.up.float()
    down = patch.down.float()
    if up.dim() == 4 and down.dim() == 4 and down.shape[2:] != (1, 1):
        # conv with a spatial down kernel: combine over the rank dimension
        delta = torch.einsum("or,rikl->oikl", up.flatten(1), down)
    else:
        delta = up.flatten(1) @ down.flatten(1)
    return (delta * (patch.scale * patch.strength)).reshape(shape)

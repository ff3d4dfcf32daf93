"""One owner of where model weights live.

Loaders build modules on the CPU and hand them over; nodes say which models they are about to
use with :meth:`ModelManager.use`, which moves them to the compute device, applies their weight
patches (LoRA) and, afterwards, keeps them resident while they fit (least recently used first
out). This first version keeps everything on one device; the low-VRAM strategies of the
roadmap (streaming offload, budgets, OOM retry) plug in behind the same ``use`` call.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import torch

from loom.runtime.devices import DevicePolicy

log = logging.getLogger("loom.models")


class ModelManager:
    def __init__(self, policy: DevicePolicy | None = None):
        self.policy = policy or DevicePolicy.detect()
        self._lock = threading.RLock()
        # id(module) -> (module, applied patch set) for modules currently on the device.
        self._resident: OrderedDict[int, tuple[torch.nn.Module, tuple]] = OrderedDict()
        # id(module) -> {param name: original tensor} for weights a patch changed.
        self._backups: dict[int, dict[str, torch.Tensor]] = {}

    @property
    def device(self) -> torch.device:
        return self.policy.device

    @contextlib.contextmanager
    def use(self, *items: tuple[torch.nn.Module, tuple] | torch.nn.Module) -> Iterator[None]:
        """Make modules ready for compute: ``use(unet)`` or ``use((unet, patches), …)``.

        Patches are applied in place (originals backed up) and stay applied until the module is
        used with a different patch set, so back-to-back runs of one LoRA stack cost nothing.
        """
        with self._lock:
            for item in items:
                module, patches = item if isinstance(item, tuple) else (item, ())
                self._load(module, tuple(patches))
            yield

    def _load(self, module: torch.nn.Module, patches: tuple) -> None:
        key = id(module)
        current = self._resident.get(key)
        if current is not None and current[1] == patches:
            self._resident.move_to_end(key)
            return
        if next(module.parameters(), torch.empty(0)).device != self.device:
            module.to(self.device)
        self._restore(module)
        if patches:
            self._apply(module, patches)
        self._resident[key] = (module, patches)
        self._resident.move_to_end(key)

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
            for module, _ in self._resident.values():
                self._restore(module)
                if self.device.type != "cpu":
                    module.to("cpu")
            self._resident.clear()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


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

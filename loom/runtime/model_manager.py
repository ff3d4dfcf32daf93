"""One owner of where model weights live, shared by every worker of the process.

Loaders build modules on the CPU and hand them over; a node says which models it is about to
use, with an estimate of its working memory, through :meth:`ModelManager.use`. The manager
then places them by its VRAM mode (:mod:`loom.runtime.vram`): whole on the device, or streamed
block by block (:mod:`loom.runtime.offload`), evicting the least recently used idle models to
make room, and keeps them there afterwards while they fit. Its accounting (weights on the
device, streamed peaks, working memory of the nodes running now) never exceeds the budget in
``normal``/``low``/``none``: what does not fit is streamed. ``high`` trusts the user and only
warns.

Workers run at the same time: the lock guards placement only, never a node's compute. A module
in use is never evicted; two users of one module share it when they want the same weight
patches, and otherwise the second waits for the first (the same thread asking for another set
inside its own ``use`` is a bug and is refused). A user that does not fit while other threads
hold memory waits for them to finish, then streams what still does not fit.

Patches live in the MODEL/CLIP wrappers, never in the modules: a LoRA node returns a new wrapper
with a longer patch list over the same module, so a cached upstream MODEL (another branch of the
graph, the next run) is untouched. The module's weights are patched in place only inside
``use``, for the patch list of the wrapper being used: before another list is applied the
originals are restored from backups, so any sequence of stacks equals a fresh load of each. Code
that reads weights must do it inside ``use`` with the patches it means (``()`` for none).

Modules are held weakly: a model nobody uses any more (the output cache dropped it) is freed,
not kept alive here. Models loaded from files are shared through :attr:`ModelManager.loaded`
(:mod:`loom.runtime.loaded_models`): one copy per file and options in the process.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
import weakref
from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from loom.runtime import offload
from loom.runtime.devices import DevicePolicy
from loom.runtime.loaded_models import LoadedModels
from loom.runtime.vram import DEFAULT_RESERVE_BYTES, DeviceMemory, SimulatedMemory, VramMode, choose_mode

log = logging.getLogger("loom.models")

# Kept for callers of the old name: the default reserve left free on the device.
DEVICE_RESERVE_BYTES = DEFAULT_RESERVE_BYTES
# How long a user that does not fit waits for other workers to release memory, in total.
WAIT_FOR_ROOM_S = 30.0

DEVICE, BLOCK, LEAF = "device", "block", "leaf"  # placements on the device


@dataclass
class _Slot:
    ref: weakref.ref
    patches: tuple
    nbytes: int  # device bytes accounted: the whole module, or its streamed peak
    placement: str  # DEVICE, BLOCK (streamed by blocks) or LEAF (streamed layer by layer)


@dataclass
class _Use:
    patches: tuple
    threads: Counter = field(default_factory=Counter)  # thread id -> nesting depth


class ModelManager:
    def __init__(
        self,
        policy: DevicePolicy | None = None,
        *,
        device_budget: int | None = None,
        mode: str | VramMode | None = None,
        reserve_bytes: int | None = None,
        memory: DeviceMemory | None = None,
    ):
        """``device_budget``: bytes the manager may account on the device (default: its free
        memory at start, less ``reserve_bytes``). On a CPU policy a budget makes a simulated
        device (tests: "a 6 GB GPU"); without one the mode is ``cpu`` and nothing moves.
        ``mode``: a :class:`VramMode`, "auto" (from the budget), or None: auto on a real
        device, ``normal`` on a simulated one."""
        self.policy = policy or DevicePolicy.detect()
        if memory is None:
            memory = (
                SimulatedMemory(device_budget)
                if device_budget is not None and self.policy.device.type == "cpu"
                else DeviceMemory(self.policy.device)
            )
        self.memory = memory
        self.reserve_bytes = DEFAULT_RESERVE_BYTES if reserve_bytes is None else reserve_bytes
        self.device_budget = self._budget(device_budget, reserve_bytes is not None)
        self.mode = self._mode(mode)
        self._cond = threading.Condition(threading.RLock())
        # id(module) -> slot, least recently used first, for modules placed on the device.
        self._resident: OrderedDict[int, _Slot] = OrderedDict()
        # id(module) -> {param name: original tensor} for weights a patch changed.
        self._backups: dict[int, dict[str, torch.Tensor]] = {}
        # id(module) -> slot of the modules used in ``cpu`` mode (they stay where they are).
        self._cpu: dict[int, _Slot] = {}
        self._in_use: dict[int, _Use] = {}
        self._working: dict[int, tuple[int, int]] = {}  # token -> (thread, bytes) of a running use
        self._names: weakref.WeakKeyDictionary[torch.nn.Module, str] = weakref.WeakKeyDictionary()
        self._local = threading.local()
        self.loaded = LoadedModels(self)
        self.offloads = 0  # modules moved back to the CPU to make room
        self.loads = 0  # modules moved (or attached streaming) to the device
        self.peak_accounted = 0  # the most bytes ever accounted on the device at once
        self.oom_retries = 0  # nodes run again after an out-of-memory error
        log.info(
            "Model placement: %s mode on %s%s",
            self.mode.value,
            self.device,
            f", budget {self.device_budget / 2**30:.2f} GB"
            if self.device_budget is not None and self.mode != VramMode.CPU
            else "",
        )

    @property
    def device(self) -> torch.device:
        return self.policy.device

    def _budget(self, device_budget: int | None, reserve_given: bool) -> int | None:
        """The device bytes the manager may account: the free memory at start less the reserve,
        or a simulated device's budget (less the reserve only when one was given)."""
        if device_budget is None and self.policy.device.type != "cpu":
            return max(0, self.memory.info().free - self.reserve_bytes)
        if device_budget is not None and self._simulated and reserve_given:
            return max(0, device_budget - self.reserve_bytes)
        return device_budget

    def _mode(self, mode: str | VramMode | None) -> VramMode:
        if self.policy.device.type == "cpu" and not self._simulated:
            return VramMode.CPU  # nothing to move weights to
        if mode is None:
            # A simulated device's tests set the budget they mean: LRU placement in it.
            return VramMode.NORMAL if self._simulated else choose_mode(self.device, self.device_budget)
        if mode == "auto":
            return choose_mode(torch.device("cuda") if self._simulated else self.device, self.device_budget)
        return VramMode(mode)

    @property
    def _simulated(self) -> bool:
        return isinstance(self.memory, SimulatedMemory)

    # -- the contract nodes use ---------------------------------------------------------------

    @contextlib.contextmanager
    def use(
        self, *items: tuple[torch.nn.Module, tuple] | torch.nn.Module, working_bytes: int = 0
    ) -> Iterator[None]:
        """Make modules ready for compute: ``use(unet)`` or ``use((unet, patches), …)``, with
        ``working_bytes`` of activations the caller expects to need on the device meanwhile.

        Patches are applied in place (originals backed up) and stay applied until the module is
        used with a different patch set, so back-to-back runs of one LoRA stack cost nothing.
        """
        pairs: list[tuple[torch.nn.Module, tuple]] = []
        seen: set[int] = set()
        for item in items:
            module, patches = item if isinstance(item, tuple) else (item, ())
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                pairs.append((module, tuple(patches)))
        me = threading.get_ident()
        token = object()
        with self._cond:
            self._wait_for_patch_set(pairs, me)
            self._place(pairs, working_bytes, me)
            for module, patches in pairs:
                use = self._in_use.setdefault(id(module), _Use(patches))
                use.threads[me] += 1
            if working_bytes and self.mode != VramMode.CPU:
                self._working[id(token)] = (me, working_bytes)
            self._note_peak()
        try:
            yield
        finally:
            with self._cond:
                self._working.pop(id(token), None)
                for module, _ in pairs:
                    use = self._in_use[id(module)]
                    use.threads[me] -= 1
                    if use.threads[me] <= 0:
                        del use.threads[me]
                    if not use.threads:
                        del self._in_use[id(module)]
                self._cond.notify_all()

    def run_node(self, node: Any, inputs: dict, label: str) -> Any:
        """Run ``node.run(**inputs)`` with what it declares (``node.uses``) placed and room made
        for its working memory. On an out-of-memory error every idle model is moved off the
        device and the node runs once more with ``ctx.low_memory`` set (nodes that can tile
        do); a second failure is reported with what to try."""
        use = _declared(node, inputs, label)
        items = [pair for value in use.models for pair in uses_of(value)] if use else []
        working = use.working_bytes if use else 0
        try:
            with self.reason(label), self.use(*items, working_bytes=working):
                return node.run(**inputs)
        except BaseException as e:
            if not is_out_of_memory(e):
                raise
            first = e
        ctx = getattr(node, "ctx", None)
        log.warning(
            "%s ran out of device memory (%s); moving every idle model off the device and running it again%s",
            label,
            _first_line(first),
            " in tiles where it can" if ctx is not None else "",
        )
        del first  # its traceback holds the failed run's tensors
        gc.collect()
        self.free()
        self.oom_retries += 1
        if ctx is not None:
            ctx.low_memory = True
        try:
            with self.reason(f"{label}, retry"), self.use(*items, working_bytes=working):
                return node.run(**inputs)
        except BaseException as e:
            if not is_out_of_memory(e):
                raise
            raise OutOfDeviceMemory(
                f"{label} ran out of memory on {self.device} twice, the second time with every "
                f"other model moved off the device{' and in tiles' if ctx is not None else ''} "
                f"({_first_line(e)}). Try a smaller image or batch, --vram low (or none), or "
                f"--reserve-vram 0 if nothing else uses this GPU (mode now: {self.mode.value})."
            ) from e

    @contextlib.contextmanager
    def reason(self, text: str) -> Iterator[None]:
        """Name what the following loads are for in the log (e.g. "KSampler (node 3)")."""
        previous = getattr(self._local, "reason", None)
        self._local.reason = text
        try:
            yield
        finally:
            self._local.reason = previous

    def name(self, module: torch.nn.Module, label: str) -> None:
        """The name logs and ``/system_stats`` give a module (e.g. "v1-5.safetensors (UNet)")."""
        with contextlib.suppress(TypeError):
            self._names[module] = label

    def resident(self) -> list[torch.nn.Module]:
        """Modules on the device (whole or streamed), least recently used first."""
        with self._cond:
            return [m for slot in self._resident.values() if (m := slot.ref()) is not None]

    def placement(self, module: torch.nn.Module) -> str:
        """ "device", "block"/"leaf" (streamed) or "cpu"."""
        with self._cond:
            slot = self._resident.get(id(module))
            return slot.placement if slot is not None and slot.ref() is module else "cpu"

    def accounted_bytes(self) -> int:
        """Device bytes the manager counts now: placed weights and running nodes' working memory."""
        with self._cond:
            return sum(s.nbytes for s in self._resident.values()) + sum(b for _, b in self._working.values())

    def free(self) -> None:
        """Move every idle model back to the CPU and drop its patches (``/free``, and before
        an out-of-memory retry). Models in use by a running node stay."""
        with self._cond:
            for key, slot in list(self._resident.items()):
                module = slot.ref()
                if key in self._in_use:
                    continue
                del self._resident[key]
                if module is None:
                    continue
                self._evict(module, slot, "freed")
                self._restore(module)
                slot.patches = ()
            for key, slot in list(self._cpu.items()):
                module = slot.ref()
                if key not in self._in_use and module is not None:
                    self._restore(module)
                    slot.patches = ()
            self.memory.empty_cache()

    def stats(self) -> dict:
        """Mode, budget and where each model is (``/system_stats``)."""
        with self._cond:
            models = []
            for slot in self._resident.values():
                module = slot.ref()
                if module is None:
                    continue
                models.append(
                    {
                        "name": self._label(module),
                        "bytes": module_bytes(module),
                        "device_bytes": slot.nbytes,
                        "where": str(self.device)
                        if slot.placement == DEVICE
                        else f"cpu, streamed to {self.device} ({slot.placement} level)",
                        "patches": len(slot.patches),
                        "in_use": id(module) in self._in_use,
                    }
                )
            return {
                "mode": self.mode.value,
                "device": str(self.device),
                "budget_bytes": self.device_budget if self.mode != VramMode.CPU else None,
                "reserve_bytes": self.reserve_bytes,
                "accounted_bytes": self.accounted_bytes(),
                "peak_accounted_bytes": self.peak_accounted,
                "on_device": models,
                "loaded": self.loaded.describe(),
                "moves": {"loads": self.loads, "offloads": self.offloads},
            }

    # -- placement ----------------------------------------------------------------------------

    def _wait_for_patch_set(self, pairs, me: int) -> None:
        """Wait while another thread uses one of the modules with another patch set."""
        while True:
            conflict = None
            for module, patches in pairs:
                use = self._in_use.get(id(module))
                if use is not None and not same_patches(use.patches, patches):
                    if me in use.threads:
                        # Re-patching would change the weights under the outer user's feet.
                        raise RuntimeError(
                            f"{type(module).__name__} is in use with another set of weight "
                            "patches (LoRAs); nested use must use the same set"
                        )
                    conflict = module
            if conflict is None:
                return
            log.info("Waiting for another worker to finish with %s (other LoRAs)", self._label(conflict))
            self._cond.wait()

    def _place(self, pairs, working: int, me: int) -> None:
        if self.mode == VramMode.CPU:
            for module, patches in pairs:
                slot = self._cpu.get(id(module))
                if slot is None or slot.ref() is not module:
                    slot = _Slot(weakref.ref(module, self._finalizer(id(module))), (), 0, "cpu")
                    self._cpu[id(module)] = slot
                if not same_patches(slot.patches, patches):
                    self._repatch(module, patches)
                    slot.patches = patches
            return
        needed = {id(m) for m, _ in pairs}
        deadline = time.monotonic() + WAIT_FOR_ROOM_S
        while True:
            # While other workers hold memory, wait rather than stream what would fit whole
            # once they finish; after the deadline (or alone) stream what does not fit.
            patient = self._others_hold(me) and time.monotonic() < deadline
            plan = self._plan(pairs, working, needed, stream_if_it_would_fit=not patient)
            if plan is not None or not patient:
                break
            self._cond.wait(timeout=0.5)  # other workers' nodes hold the room; they will end
        if plan is None:
            plan = {id(m): LEAF for m, _ in pairs}
            log.warning(
                "%s: what this node needs does not fit in the %.2f GB budget even streamed; running anyway",
                self._why(),
                (self.device_budget or 0) / 2**30,
            )
        for module, patches in pairs:
            self._put(module, patches, plan[id(module)])

    def _plan(
        self, pairs, working: int, needed: set[int], *, stream_if_it_would_fit: bool = True
    ) -> dict[int, str] | None:
        """Placement of each needed module such that the accounting fits, evicting idle models
        (least recently used first) as needed; None when it cannot fit now. Without
        ``stream_if_it_would_fit``, models are streamed only when the mode's placement would
        not fit even in an empty device."""
        budget = self.device_budget if self.device_budget is not None else 1 << 62
        full = {id(m): module_bytes(m) for m, _ in pairs}
        plan, fixed = self._first_plan(pairs, full, budget)
        if self.mode == VramMode.HIGH:
            working = 0  # high: activations are the user's bet, not reserved

        def cost(module, placement) -> int:
            if placement == DEVICE:
                return full[id(module)]
            return offload.streamed_bytes(module, leaf=placement == LEAF)

        def shortfall() -> int:
            held = self.accounted_bytes()
            for module, _ in pairs:
                slot = self._resident.get(id(module))
                held -= slot.nbytes if slot is not None and slot.ref() is module else 0
            need = sum(cost(m, plan[id(m)]) for m, _ in pairs) + working
            return need - (budget - held)

        self._evict_idle(needed, shortfall)  # 1. idle models, least recently used first
        if shortfall() > 0 and self.mode == VramMode.HIGH:
            log.warning(
                "high VRAM mode: %s needs %.2f GB more than the budget; trying anyway",
                self._why(),
                shortfall() / 2**30,
            )
            return plan
        alone = sum(cost(m, plan[id(m)]) for m, _ in pairs) + working
        if shortfall() > 0 and not stream_if_it_would_fit and alone <= budget:
            return None
        # 2. stream the biggest needed models, by blocks, then layer by layer
        for level in (BLOCK, LEAF):
            for module, _ in sorted(pairs, key=lambda p: -full[id(p[0])]):
                if shortfall() <= 0:
                    return plan
                if id(module) not in fixed and plan[id(module)] in (DEVICE, BLOCK):
                    plan[id(module)] = level
        return plan if shortfall() <= 0 else None

    def _first_plan(self, pairs, full: dict[int, int], budget: int) -> tuple[dict[int, str], set[int]]:
        """The mode's placement of each module before anything is evicted or streamed, and the
        modules whose placement is fixed because another use is computing with them."""
        if self.mode == VramMode.NONE:
            plan = {id(m): LEAF for m, _ in pairs}
        elif self.mode == VramMode.LOW:
            # Big models never become resident: room stays for activations and the smaller
            # models (text encoders, VAE, ControlNets) that can stay warm.
            plan = {id(m): BLOCK if full[id(m)] > budget // 2 else DEVICE for m, _ in pairs}
        else:
            plan = {id(m): DEVICE for m, _ in pairs}
        fixed = set()
        for module, _ in pairs:
            slot = self._resident.get(id(module))
            if id(module) in self._in_use and slot is not None and slot.ref() is module:
                plan[id(module)] = slot.placement
                fixed.add(id(module))
        return plan, fixed

    def _evict_idle(self, needed: set[int], shortfall) -> None:
        """Move idle resident models back to the CPU, least recently used first, until
        ``shortfall()`` is no longer positive."""
        for key in list(self._resident):
            if shortfall() <= 0:
                break
            if key in needed or key in self._in_use:
                continue
            slot = self._resident.pop(key)
            module = slot.ref()
            if module is not None:
                self._evict(module, slot, f"making room for {self._why()}")
                self.offloads += 1

    def _others_hold(self, me: int) -> bool:
        return any(t != me for t, _ in self._working.values()) or any(
            any(t != me for t in use.threads) for use in self._in_use.values()
        )

    def _put(self, module: torch.nn.Module, patches: tuple, placement: str) -> None:
        key = id(module)
        slot = self._resident.get(key)
        if slot is not None and slot.ref() is not module:
            slot = None
        if slot is not None and slot.placement == placement:
            self._resident.move_to_end(key)
            if not same_patches(slot.patches, patches):
                if placement != DEVICE:
                    offload.unstream(module)
                self._repatch(module, patches)
                if placement != DEVICE:
                    self._stream(module, placement)
                slot.patches = patches
            return
        if slot is not None:  # placement changes: back to the CPU first
            self._resident.pop(key)
            self._evict(module, slot, "placement changes")
        if placement == DEVICE:
            self._repatch(module, patches)
            module.to(self.device)
        else:
            self._repatch(module, patches)
            self._stream(module, placement)
        nbytes = (
            module_bytes(module)
            if placement == DEVICE
            else offload.streamed_bytes(module, leaf=placement == LEAF)
        )
        self._resident[key] = _Slot(weakref.ref(module, self._finalizer(key)), patches, nbytes, placement)
        self.loads += 1
        verb = "Loading" if placement == DEVICE else f"Streaming ({placement} level)"
        log.info(
            "%s %s (%.2f GB) to %s for %s",
            verb,
            self._label(module),
            module_bytes(module) / 2**30,
            self.device,
            self._why(),
        )

    def _stream(self, module: torch.nn.Module, placement: str) -> None:
        offload.stream(
            module,
            self.device,
            leaf=placement == LEAF,
            use_stream=placement == BLOCK and self.memory.supports_streams(),
        )

    def _repatch(self, module: torch.nn.Module, patches: tuple) -> None:
        self._restore(module)
        if patches:
            self._apply(module, patches)

    def _evict(self, module: torch.nn.Module, slot: _Slot, why: str) -> None:
        if slot.placement != DEVICE:
            offload.unstream(module)
        elif self.device.type != "cpu":
            module.to("cpu")  # patches stay applied (backups are kept) for its next use
        log.info("Offloading %s (%.2f GB) to the CPU: %s", self._label(module), slot.nbytes / 2**30, why)

    def _note_peak(self) -> None:
        self.peak_accounted = max(self.peak_accounted, self.accounted_bytes())

    def _why(self) -> str:
        return getattr(self._local, "reason", None) or "a node"

    def _label(self, module: torch.nn.Module) -> str:
        try:
            return self._names.get(module) or type(module).__name__
        except TypeError:
            return type(module).__name__

    def _finalizer(self, key: int):
        def gone(_ref) -> None:  # the module was garbage-collected: forget it
            with self._cond:
                slot = self._resident.get(key)
                if slot is not None and slot.ref() is None:
                    del self._resident[key]
                slot = self._cpu.get(key)
                if slot is not None and slot.ref() is None:
                    del self._cpu[key]
                self._backups.pop(key, None)

        return gone

    # -- patches -----------------------------------------------------------------------------

    @torch.no_grad()
    def _apply(self, module: torch.nn.Module, patches: tuple) -> None:
        params = dict(module.named_parameters())
        backups = self._backups.setdefault(id(module), {})
        for patch in patches:
            weight = params.get(patch.key)
            if weight is None:
                log.warning("patch for %s matches no weight of %s; skipped", patch.key, type(module).__name__)
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


class OutOfDeviceMemory(RuntimeError):
    """A node ran out of device memory even after its retry with everything else freed."""


def is_out_of_memory(e: BaseException) -> bool:
    """CUDA's ``OutOfMemoryError``, or the RuntimeError MPS and the CPU allocator raise."""
    if isinstance(e, torch.OutOfMemoryError):
        return True
    return isinstance(e, RuntimeError) and "out of memory" in str(e).lower()


def uses_of(value: Any) -> tuple:
    """``(module, patches)`` pairs for a declared model: a MODEL/CLIP/VAE wrapper, an upscale
    model (``.module``), a module, or a pair already."""
    if value is None:
        return ()
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], torch.nn.Module):
        return (value,)
    if isinstance(value, torch.nn.Module):
        return ((value, ()),)
    uses = getattr(value, "loom_uses", None)
    if callable(uses):
        return tuple(uses())
    module = getattr(value, "module", None)
    if isinstance(module, torch.nn.Module):
        return ((module, ()),)
    return ()


def _declared(node: Any, inputs: dict, label: str) -> Any:
    try:
        return node.uses(**inputs)
    except Exception:  # a wrong estimate must not cost the run
        log.exception("%s: its uses() failed; running without declared models", label)
        return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def same_patches(a: tuple, b: tuple) -> bool:
    """Whether two patch lists are the same patches in the same order (by identity: patches
    hold tensors, and ``==`` on tensors has no single truth value)."""
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def module_bytes(module: torch.nn.Module) -> int:
    return sum(t.element_size() * t.nelement() for t in (*module.parameters(), *module.buffers()))


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

"""VRAM modes and what a compute device has: the inputs of the model manager's placement.

Modes (``--vram``), from most to least VRAM:

- ``high``: every model stays on the device after use; idle ones are evicted (least recently
  used first) only when the next one would not fit at all.
- ``normal``: what the next node needs is loaded, recently used models stay while there is
  room, the least recently used go back to the CPU when the next node's weights and working
  memory do not fit. A model bigger than the whole budget is streamed (as in ``low``).
- ``low``: as ``normal``, but a model whose weights and the node's working memory do not fit
  next to the models it runs with is streamed block by block (diffusers' group offloading, on
  CUDA with a side stream that prefetches the next block while one computes).
- ``none``: every model is streamed layer by layer (sequential offload): the least VRAM, slow.
- ``cpu``: everything computes on the CPU.

``auto`` picks one from the device's free memory when the server starts (:func:`choose_mode`).
Memory is probed per device kind; the MPS path makes no CUDA call.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch

GiB = 1 << 30
# Left free on the device by default: the CUDA context, other programs, fragmentation.
DEFAULT_RESERVE_BYTES = int(0.75 * GiB)


class VramMode(enum.StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"
    NONE = "none"
    CPU = "cpu"


def choose_mode(device: torch.device, usable_bytes: int) -> VramMode:
    """The mode ``auto`` means for a device with ``usable_bytes`` (free less the reserve).

    16 GB holds SDXL, its text encoders, a VAE and ControlNets at once; 7 GB holds SD 1.x/2.x
    with room to spare but not SDXL's UNet (5 GB in fp16) with 1024² activations next to it;
    below 1 GB streaming by blocks leaves no room for activations."""
    if device.type == "cpu":
        return VramMode.CPU
    if usable_bytes >= 16 * GiB:
        return VramMode.HIGH
    if usable_bytes >= 7 * GiB:
        return VramMode.NORMAL
    if usable_bytes >= GiB:
        return VramMode.LOW
    return VramMode.NONE


@dataclass(frozen=True)
class MemoryInfo:
    total: int
    free: int


class DeviceMemory:
    """What a torch device has and how to give cached blocks back, per device kind."""

    def __init__(self, device: torch.device):
        self.device = device

    def info(self) -> MemoryInfo:
        kind = self.device.type
        if kind == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
            # Blocks torch's caching allocator holds but does not use are free to us.
            cached = torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
            return MemoryInfo(total, free + cached)
        if kind == "mps":
            total = int(torch.mps.recommended_max_memory())
            return MemoryInfo(total, max(0, total - int(torch.mps.driver_allocated_memory())))
        import psutil

        mem = psutil.virtual_memory()
        return MemoryInfo(mem.total, mem.available)

    def empty_cache(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        elif self.device.type == "mps":
            torch.mps.empty_cache()

    def supports_streams(self) -> bool:
        """Whether transfers can overlap compute on a side stream (CUDA only)."""
        return self.device.type == "cuda"


class SimulatedMemory(DeviceMemory):
    """A device of ``total`` bytes for tests ("a 6 GB GPU"): computes on the CPU, reports the
    budget as its memory, and can be told to fail the next allocations (an injected OOM)."""

    def __init__(self, total: int, device: torch.device | None = None):
        super().__init__(device or torch.device("cpu"))
        self.total = total
        self.emptied = 0

    def info(self) -> MemoryInfo:
        return MemoryInfo(self.total, self.total)

    def empty_cache(self) -> None:
        self.emptied += 1

    def supports_streams(self) -> bool:
        return False


def parse_gb(value: float | None) -> int | None:
    return None if value is None else int(float(value) * GiB)

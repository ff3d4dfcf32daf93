"""Which device and dtypes Loom computes on, and what the machine has (for /system_stats)."""

from __future__ import annotations

import platform
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DevicePolicy:
    device: torch.device
    dtype: torch.dtype  # UNet / text encoders
    vae_dtype: torch.dtype  # VAEs (SDXL's overflows in fp16: kept in fp32 or bf16)

    @classmethod
    def detect(cls, force_cpu: bool = False) -> DevicePolicy:
        if not force_cpu and torch.cuda.is_available():
            dev = torch.device("cuda", torch.cuda.current_device())
            bf16 = torch.cuda.is_bf16_supported()
            return cls(dev, torch.float16, torch.bfloat16 if bf16 else torch.float32)
        if not force_cpu and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return cls(torch.device("mps"), torch.float16, torch.float32)
        return cls(torch.device("cpu"), torch.float32, torch.float32)


def describe_devices() -> list[dict]:
    """The ``devices`` list of ``/system_stats`` (ComfyUI's field names)."""
    devices = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            devices.append({
                "name": f"cuda:{i} {torch.cuda.get_device_name(i)}", "type": "cuda", "index": i,
                "vram_total": total, "vram_free": free,
                "torch_vram_total": torch.cuda.memory_reserved(i),
                "torch_vram_free": torch.cuda.memory_reserved(i) - torch.cuda.memory_allocated(i),
            })
    else:
        import psutil

        mem = psutil.virtual_memory()
        devices.append({"name": f"cpu ({platform.processor() or platform.machine()})", "type": "cpu",
                        "index": None, "vram_total": mem.total, "vram_free": mem.available,
                        "torch_vram_total": 0, "torch_vram_free": 0})
    return devices

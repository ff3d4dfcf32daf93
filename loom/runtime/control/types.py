"""``CONTROL_NET``: what ControlNetLoader, DiffControlNetLoader and T2IAdapterLoader return."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

KINDS = ("controlnet", "t2i_adapter")


@dataclass(frozen=True, eq=False)
class ControlModel:
    """A diffusers ``ControlNetModel`` (``kind="controlnet"``) or ``T2IAdapter``
    (``"t2i_adapter"``), built on the CPU; the model manager places it for sampling."""

    module: Any
    kind: str
    family: str  # "sd1" | "sd2" | "sdxl": the UNets it fits
    source: str = ""

    def loom_sizeof(self) -> int:
        return 0  # counted by module (loom_modules)

    def loom_modules(self) -> tuple:
        return (self.module,)

    @property
    def name(self) -> str:
        from pathlib import Path

        return Path(self.source).name or "control model"

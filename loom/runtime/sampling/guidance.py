"""GUIDER values: a model, its conditionings, and how their predictions are combined.

The loop evaluates the model once per conditioning ("side") — batched into as few UNet calls as
possible — and the guider mixes the per-side outputs into one prediction. Mixing weights sum to
one, so mixing noise (or v) predictions and mixing the clean-image estimates derived from them
agree.

* :class:`CFG` — classifier-free guidance, ``negative + cfg * (positive - negative)``, sides
  ``(negative, positive)``; at ``cfg == 1`` the negative side is not evaluated at all.
* :class:`Basic` — one conditioning, no guidance.
* :class:`DualCFG` — two positive conditionings and a negative (ComfyUI's DualCFGGuider):
  ``regular``: ``neg + cfg2 * (cond2 - neg) + cfg1 * (cond1 - cond2)``; ``nested``: guidance of
  ``cond1`` over ``cond2`` first, then of that over the negative:
  ``neg + cfg2 * ((cond2 + cfg1 * (cond1 - cond2)) - neg)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True, eq=False)
class Guider:
    """Base: ``sides`` are ``(name, CONDITIONING)`` pairs in UNet batch order."""

    model: Any  # DiffusionModel

    @property
    def sides(self) -> tuple[tuple[str, list], ...]:
        raise NotImplementedError

    @property
    def uncond_side(self) -> str | None:
        """The side whose prediction is "unconditional" (CFG++ samplers re-noise with it)."""
        return None

    def combine(self, preds: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class CFG(Guider):
    positive: list = ()
    negative: list = ()
    cfg: float = 8.0

    @property
    def sides(self):
        if self.cfg == 1.0:
            return (("positive", self.positive),)
        return (("negative", self.negative), ("positive", self.positive))

    @property
    def uncond_side(self):
        return None if self.cfg == 1.0 else "negative"

    def combine(self, preds):
        if len(preds) == 1:
            return preds[0]
        uncond, cond = preds
        return uncond + self.cfg * (cond - uncond)


@dataclass(frozen=True, eq=False)
class Basic(Guider):
    conditioning: list = ()

    @property
    def sides(self):
        return (("positive", self.conditioning),)

    def combine(self, preds):
        return preds[0]


DUAL_CFG_STYLES = ("regular", "nested")


@dataclass(frozen=True, eq=False)
class DualCFG(Guider):
    cond1: list = ()
    cond2: list = ()
    negative: list = ()
    cfg_conds: float = 8.0
    cfg_cond2_negative: float = 8.0
    style: str = "regular"

    @property
    def sides(self):
        return (("negative", self.negative), ("cond2", self.cond2), ("cond1", self.cond1))

    @property
    def uncond_side(self):
        return "negative"

    def combine(self, preds):
        neg, mid, pos = preds
        if self.style == "nested":
            inner = mid + self.cfg_conds * (pos - mid)
            return neg + self.cfg_cond2_negative * (inner - neg)
        return neg + self.cfg_cond2_negative * (mid - neg) + self.cfg_conds * (pos - mid)

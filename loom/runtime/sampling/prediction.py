"""One guided model prediction: every active conditioning entry evaluated, per side, mixed.

Shared by both loops (diffusers schedulers and sigma-space solvers). Given the scaled model
input at one step, :class:`GuidedPrediction` evaluates the UNet for the entries of each of the
guider's sides (batched, see :mod:`.conditioning`), averages each side's entries by weight and
area, and lets the guider mix the sides. Entries carrying a timestep range
(ConditioningSetTimestepRange's ``start_percent``/``end_percent``) take part only at the noise
levels inside it.
"""

from __future__ import annotations

from typing import Any

import torch

from loom.runtime.sampling.conditioning import build_groups, prepare_entries
from loom.runtime.sampling.guidance import Guider
from loom.runtime.sampling.hooks import SamplingHooks, UNetCall, merge_unet_kwargs


class GuidedPrediction:
    """``pred(model_in, t, sigma, step, fraction) -> (mixed, per_side)``: raw model outputs
    (noise or v, as the model predicts), ``per_side`` in the guider's side order."""

    def __init__(self, guider: Guider, *, batch: int, height: int, width: int,
                 device: torch.device, dtype: torch.dtype, unet: Any, hooks: list,
                 sigma_range=None):
        self.guider, self.unet, self.batch, self.dtype = guider, unet, batch, dtype
        self.side_names = [name for name, _ in guider.sides]
        uncond = guider.uncond_side
        self.entries = []
        for k, (name, cond) in enumerate(guider.sides):
            entries = prepare_entries(cond, is_uncond=name == uncond, batch=batch, height=height,
                                      width=width, device=device, dtype=dtype, unet=unet,
                                      side=k, sigma_range=sigma_range)
            if not entries:
                hint = " (connect a prompt, or set cfg to 1)" if name == uncond else ""
                raise ValueError(f"the {name} conditioning is empty{hint}")
            self.entries.extend(entries)
        self.unet_hooks = [h for h in hooks
                           if type(h).unet_kwargs is not SamplingHooks.unet_kwargs
                           or type(h).extra_channels is not SamplingHooks.extra_channels]
        self._groups: dict[tuple, list] = {}
        self.state = None  # the run's SamplingState, handed to hooks with each call

    def uncond_index(self) -> int | None:
        name = self.guider.uncond_side
        return self.side_names.index(name) if name in self.side_names else None

    def groups_at(self, sigma: float) -> list:
        active = tuple(i for i, e in enumerate(self.entries)
                       if e.sigma_range is None or e.sigma_range[0] <= sigma <= e.sigma_range[1])
        if not active:
            raise ValueError(f"no conditioning is active at noise level {sigma:.4g}: check the "
                             "timestep ranges (start/end percent) of the conditioning")
        if active not in self._groups:
            self._groups[active] = build_groups([self.entries[i] for i in active])
        return self._groups[active]

    def __call__(self, model_in: torch.Tensor, t, sigma: float, step: int, fraction: float,
                 fraction_next: float | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``fraction``/``fraction_next``: position in the whole schedule at the start of this
        step and after it (see :class:`UNetCall`)."""
        groups = self.groups_at(sigma)
        fraction = (fraction, fraction if fraction_next is None else fraction_next)
        n_sides = len(self.side_names)
        g = groups[0]
        if (len(groups) == 1 and g.area is None and g.sides == list(range(n_sides))
                and not any(isinstance(e.weight, torch.Tensor) for e in g.entries)):
            # The common case: one entry per side, one UNet call (a diffusers pipeline's batch).
            x_in = torch.cat([model_in] * n_sides) if n_sides > 1 else model_in
            out = self._call(g, x_in.to(self.dtype), t, step, sigma, fraction).float()
            preds = list(out.chunk(n_sides)) if n_sides > 1 else [out]
        else:
            preds = self._weighted(groups, model_in, t, step, sigma, fraction)
        return self.guider.combine(preds), preds

    def _weighted(self, groups, model_in, t, step, sigma, fraction) -> list[torch.Tensor]:
        """Several entries and/or areas: each entry's prediction, weight-averaged per side."""
        n_sides, batch = len(self.side_names), self.batch
        sums = [torch.zeros_like(model_in) for _ in range(n_sides)]
        weights = [torch.zeros_like(model_in[:, :1]) for _ in range(n_sides)]
        for g in groups:
            if g.area is None:
                part = model_in
            else:
                h, w, y, x = g.area
                part = model_in[:, :, y:y + h, x:x + w]
            n = len(g.entries)
            x_in = torch.cat([part] * n) if n > 1 else part
            out = self._call(g, x_in.to(self.dtype), t, step, sigma, fraction).float()
            for k, e in enumerate(g.entries):
                chunk = out[k * batch:(k + 1) * batch]
                if g.area is None:
                    sums[e.side] += chunk * e.weight
                    weights[e.side] += e.weight
                else:
                    h, w, y, x = g.area
                    sums[e.side][:, :, y:y + h, x:x + w] += chunk * e.weight
                    weights[e.side][:, :, y:y + h, x:x + w] += e.weight
        means = [s / w.clamp_min(1e-8) for s, w in zip(sums, weights, strict=True)]
        if n_sides == 1:
            return means
        # Where a side has no prediction (outside its areas, or its entries are out of their
        # timestep range), it borrows the mean of the sides that have one: no guidance there.
        present = [(w > 0).float() for w in weights]
        count = sum(present)
        fallback = sum(m * p for m, p in zip(means, present, strict=True)) / count.clamp_min(1.0)
        return [torch.where(p > 0, m, fallback) for m, p in zip(means, present, strict=True)]

    def _call(self, group, x_in, t, step, sigma, fraction) -> torch.Tensor:
        kwargs: dict = {"added_cond_kwargs": group.added_cond_kwargs}
        if group.control is not None or self.unet_hooks:
            call = UNetCall(step=step, timestep=t, sigma=sigma, sample=x_in,
                            encoder_hidden_states=group.context,
                            added_cond_kwargs=group.added_cond_kwargs, entries=group.raw,
                            is_uncond=group.is_uncond, batch_size=self.batch, area=group.area,
                            schedule_fraction=fraction[0], schedule_fraction_next=fraction[1],
                            state=self.state)
            if group.control is not None:
                merge_unet_kwargs(kwargs, group.control.unet_kwargs(call))
            extra = []
            for h in self.unet_hooks:
                merge_unet_kwargs(kwargs, h.unet_kwargs(call))
                channels = h.extra_channels(call)
                if channels is not None:
                    extra.append(channels)
            if extra:
                x_in = torch.cat([x_in, *extra], dim=1)
        return self.unet(x_in, t, encoder_hidden_states=group.context, return_dict=False,
                         **kwargs)[0]


def timestep_range(sampling):
    """``sigma_range`` for :func:`prepare_entries`: the noise levels where an entry with
    ComfyUI's ``start_percent``/``end_percent`` is active, or None when it has neither."""

    def sigma_range(d: dict):
        if "start_percent" not in d and "end_percent" not in d:
            return None
        high = sampling.percent_to_sigma(float(d.get("start_percent", 0.0)))
        low = sampling.percent_to_sigma(float(d.get("end_percent", 1.0)))
        return (low, high)

    return sigma_range

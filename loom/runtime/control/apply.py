"""The control on a CONDITIONING entry (``entry[1]["control"]``): a ControlNet's residuals or a
T2I-Adapter's features, added inside Loom's sampling loop.

A :class:`Control` is immutable and may be shared by cached conditionings and concurrent runs;
what one run prepares (the hint at the latent's size, an adapter's features) lives in the run's
``SamplingState.extras``. Applying a second control to a conditioning that has one makes a new
control whose ``previous`` is the old one: the sampler adds both (sums their residuals).

When it applies, per step, follows diffusers' ControlNet pipelines (``control_guidance_start``/
``control_guidance_end``): step ``i`` of ``N`` gets the control when
``start_percent <= i / N`` and ``(i + 1) / N <= end_percent``, with ``i / N`` the position in the
whole schedule (:class:`~loom.runtime.sampling.hooks.UNetCall`'s ``schedule_fraction``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from loom.runtime.control.hint import prepare_hint
from loom.runtime.control.types import ControlModel
from loom.runtime.sampling.hooks import SamplingHooks, SamplingState, UNetCall, merge_unet_kwargs
from loom.runtime.sd.detect import latent_space


@dataclass(frozen=True, eq=False)
class Control(SamplingHooks):
    model: ControlModel
    image: torch.Tensor  # IMAGE [B, H, W, C] in 0..1
    strength: float = 1.0
    start_percent: float = 0.0
    end_percent: float = 1.0
    previous: Any = None  # the control this one stacks on (any object with unet_kwargs)

    # -- lifecycle ---------------------------------------------------------------------------

    def models(self):
        return (self.model.module,)

    def setup(self, state: SamplingState) -> None:
        model = state.model
        family = getattr(model, "family", None)
        if family and self.model.family and latent_space(family) != latent_space(self.model.family):
            raise ValueError(f"{self.model.name} is a {self.model.family} "
                             f"{_what(self.model)} but the model is {family}: use one made for "
                             f"{family}")
        module = self.model.module
        dtype = _dtype(module)
        batch, _, h, w = state.latent_image.shape
        factor = 8
        hint = prepare_hint(self.image, batch=batch, height=h * factor, width=w * factor,
                            channels=_hint_channels(module, self.model.kind),
                            device=state.device, dtype=dtype)
        if self.model.kind == "t2i_adapter":
            unit = int(getattr(module, "total_downscale_factor", 8))
            if hint.shape[-2] % unit or hint.shape[-1] % unit:
                raise ValueError(f"{self.model.name}: this T2I-Adapter needs an image size that "
                                 f"is a multiple of {unit} pixels, not {hint.shape[-1]}x"
                                 f"{hint.shape[-2]}")
            with torch.no_grad():
                features = [f * self.strength for f in module(hint)]
            state.extras[self] = features
        else:
            state.extras[self] = hint

    def teardown(self, state: SamplingState) -> None:
        state.extras.pop(self, None)

    # -- per UNet call -----------------------------------------------------------------------

    def active(self, call: UNetCall) -> bool:
        return (self.strength != 0 and self.start_percent <= call.schedule_fraction
                and call.schedule_fraction_next <= self.end_percent)

    def unet_kwargs(self, call: UNetCall) -> dict | None:
        out = self.previous.unet_kwargs(call) if self.previous is not None else None
        if not self.active(call):
            return out
        mine = (self._adapter(call) if self.model.kind == "t2i_adapter"
                else self._controlnet(call))
        return merge_unet_kwargs(dict(out or {}), mine)

    def _prepared(self, call: UNetCall):
        if call.state is None or self not in call.state.extras:
            raise RuntimeError("a control was used outside its sampling run (no setup)")
        return call.state.extras[self]

    def _controlnet(self, call: UNetCall) -> dict:
        hint = self._prepared(call)
        if call.area is not None:
            h, w, y, x = call.area
            hint = hint[:, :, y * 8:(y + h) * 8, x * 8:(x + w) * 8]
        hint = _rows(hint, call.sample.shape[0])
        module = self.model.module
        dtype = _dtype(module)
        added = call.added_cond_kwargs
        if added is not None:
            added = {k: v.to(dtype) for k, v in added.items()}
        elif getattr(module.config, "addition_embed_type", None) == "text_time":
            raise ValueError(f"{self.model.name} is an SDXL ControlNet; the model is not SDXL")
        down, mid = module(call.sample.to(dtype), call.timestep,
                           encoder_hidden_states=call.encoder_hidden_states.to(dtype),
                           controlnet_cond=hint, conditioning_scale=float(self.strength),
                           added_cond_kwargs=added, return_dict=False)
        return {"down_block_additional_residuals": tuple(down),
                "mid_block_additional_residual": mid}

    def _adapter(self, call: UNetCall) -> dict:
        features = self._prepared(call)
        rows = call.sample.shape[0]
        out = []
        for f in features:
            if call.area is not None:
                f = _crop_scaled(f, call.area, call.state.latent_image.shape[-2:])
            out.append(_rows(f, rows))
        # a fresh list per call: diffusers' UNet pops from it
        return {"down_intrablock_additional_residuals": out}


def apply_control(conditioning: list, control_model: ControlModel, image: torch.Tensor,
                  strength: float, start_percent: float = 0.0, end_percent: float = 1.0,
                  made: dict | None = None) -> list:
    """A new CONDITIONING whose entries carry a control stacked on what they had. ``made``
    (previous control's id -> new control) shares one new control among entries (and among the
    positive and negative of ControlNetApplyAdvanced) that had the same one, so they are still
    evaluated in one UNet call."""
    if not isinstance(control_model, ControlModel):
        raise ValueError("control_net must be a CONTROL_NET from a ControlNet or T2I-Adapter "
                         "loader")
    if not 0.0 <= start_percent <= end_percent <= 1.0:
        raise ValueError(f"start_percent ({start_percent}) must not be greater than end_percent "
                         f"({end_percent}), both between 0 and 1")
    made = {} if made is None else made
    out = []
    for item in conditioning:
        tensor, d = item[0], (item[1] if len(item) > 1 else {}) or {}
        prev = d.get("control")
        key = id(prev) if prev is not None else None
        if key not in made:
            made[key] = Control(control_model, image, float(strength), float(start_percent),
                                float(end_percent), prev)
        new = dict(d)
        new["control"] = made[key]
        out.append([tensor, new])
    return out


def _what(model: ControlModel) -> str:
    return "T2I-Adapter" if model.kind == "t2i_adapter" else "ControlNet"


def _dtype(module) -> torch.dtype:
    return next(module.parameters()).dtype


def _hint_channels(module, kind: str) -> int:
    if kind == "t2i_adapter":
        conv_in = module.adapter.conv_in
        factor = module.adapter.unshuffle.downscale_factor
        return conv_in.in_channels // (factor * factor)
    return int(module.config.conditioning_channels)


def _rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    if t.shape[0] == rows:
        return t
    if rows % t.shape[0]:
        raise ValueError(f"control batch {t.shape[0]} does not divide the UNet batch {rows}")
    return t.repeat(rows // t.shape[0], *([1] * (t.dim() - 1)))


def _crop_scaled(f: torch.Tensor, area, latent_hw) -> torch.Tensor:
    """The part of a feature map (at any resolution) under a latent-pixel area."""
    h, w, y, x = area
    sy, sx = f.shape[-2] / latent_hw[0], f.shape[-1] / latent_hw[1]
    top, left = int(y * sy), int(x * sx)
    return f[:, :, top:top + max(1, round(h * sy)), left:left + max(1, round(w * sx))]

"""CONDITIONING lists turned into batched UNet calls.

A CONDITIONING value is a list of ``[hidden_states, dict]`` entries. Several entries on one side
(``ConditioningCombine``) each get a prediction, and the predictions are averaged, weighted by the
entry's ``strength`` and, for ``ConditioningSetArea`` entries, only over their area (with soft
edges inside the latent) or by a ``mask``. The common case of one positive and one negative entry
becomes a single UNet call on ``[negative rows, positive rows]``, exactly as a diffusers pipeline
batches classifier-free guidance.

Entries are grouped into as few UNet calls as possible: same area and same control object go
together; prompts of different token lengths (77 vs 154) are brought to a common length by
repeating their tokens, which leaves cross-attention unchanged (every key appears the same number
of times, so the softmax weights are the same).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

# Latent pixels over which an area's weight ramps up at edges inside the image.
AREA_FEATHER = 8
# Repeat tokens to a common length only up to this multiple of the longest prompt.
MAX_REPEAT_FACTOR = 4


@dataclass
class Entry:
    """One conditioning entry, on the device, expanded to the latent batch."""

    context: torch.Tensor  # [B, L, D]
    pooled: torch.Tensor | None  # [B, P]
    time_ids: torch.Tensor | None  # [B, k] (SDXL)
    weight: Any  # float, or tensor [B or 1, 1, h, w] over the area
    area: tuple[int, int, int, int] | None  # (h, w, y, x) latent pixels; None = whole latent
    control: Any
    is_uncond: bool
    raw: dict
    side: int = 0  # which of the guider's conditionings (e.g. 0 = negative, 1 = positive)
    # active while the noise level is within [low, high] (ConditioningSetTimestepRange)
    sigma_range: tuple[float, float] | None = None


@dataclass
class Group:
    """Entries evaluated together in one UNet call."""

    entries: list[Entry]
    area: tuple[int, int, int, int] | None
    control: Any
    context: torch.Tensor | None = None  # [n*B, L, D]
    added_cond_kwargs: dict | None = None
    raw: list[dict] = field(default_factory=list)
    is_uncond: list[bool] = field(default_factory=list)
    sides: list[int] = field(default_factory=list)


def _expand(t: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    if t.shape[0] == batch:
        return t
    if batch % t.shape[0] != 0:
        raise ValueError(f"{what} has batch {t.shape[0]}, which does not divide the latent "
                         f"batch {batch}")
    return t.repeat(batch // t.shape[0], *([1] * (t.dim() - 1)))


def _clip_area(area: Any, height: int, width: int) -> tuple[int, int, int, int] | None:
    if area is None:
        return None
    if len(area) != 4 or isinstance(area[0], str):
        raise ValueError(f"unsupported conditioning area {area!r} (expected (h, w, y, x) in "
                         f"latent pixels)")
    h, w, y, x = (int(v) for v in area)
    y, x = min(max(y, 0), height - 1), min(max(x, 0), width - 1)
    h, w = max(1, min(h, height - y)), max(1, min(w, width - x))
    if (h, w, y, x) == (height, width, 0, 0):
        return None
    return h, w, y, x


def _area_weight(area: tuple[int, int, int, int], height: int, width: int,
                 device: torch.device) -> torch.Tensor:
    """Weights over an area: 1 inside, ramping down toward edges that lie inside the image."""
    h, w, y, x = area
    weight = torch.ones((1, 1, h, w), device=device)
    ramp_h = min(AREA_FEATHER, h // 4)
    ramp_w = min(AREA_FEATHER, w // 4)
    for k in range(ramp_h):
        f = (k + 1) / (ramp_h + 1)
        if y != 0:
            weight[:, :, k] *= f
        if y + h < height:
            weight[:, :, h - 1 - k] *= f
    for k in range(ramp_w):
        f = (k + 1) / (ramp_w + 1)
        if x != 0:
            weight[:, :, :, k] *= f
        if x + w < width:
            weight[:, :, :, w - 1 - k] *= f
    return weight


def _time_ids(d: dict, n_values: int, height: int, width: int, is_uncond: bool) -> list[float]:
    """SDXL size conditioning, in the order of diffusers' ``_get_add_time_ids``:
    (orig_h, orig_w, crop_top, crop_left, target_h, target_w); the refiner's 5-value variant ends
    with the aesthetic score instead of the target size. Defaults: the latent's pixel size."""
    orig_w = d.get("width", width * 8)
    orig_h = d.get("height", height * 8)
    crop_w, crop_h = d.get("crop_w", 0), d.get("crop_h", 0)
    if n_values == 5:
        score = d.get("aesthetic_score", 2.5 if is_uncond else 6.0)
        return [orig_h, orig_w, crop_h, crop_w, score]
    target_w = d.get("target_width", orig_w if "width" in d else width * 8)
    target_h = d.get("target_height", orig_h if "height" in d else height * 8)
    return [orig_h, orig_w, crop_h, crop_w, target_h, target_w]


def is_sdxl_unet(unet: Any) -> bool:
    """SDXL-style UNets take pooled text embeddings and size conditioning ("text_time")."""
    return getattr(getattr(unet, "config", None), "addition_embed_type", None) == "text_time"


def time_id_count(unet: Any, pooled_dim: int) -> int:
    """How many size values an SDXL-style UNet takes: 6 (base) or 5 (refiner, with the
    aesthetic score), from the width of its added-embedding input."""
    in_features = unet.add_embedding.linear_1.in_features
    count, rest = divmod(in_features - pooled_dim, unet.config.addition_time_embed_dim)
    if rest or count not in (5, 6):
        raise ValueError(f"the pooled text embedding (width {pooled_dim}) does not fit this "
                         f"SDXL UNet (added embedding width {in_features})")
    return count


def prepare_entries(conditioning: list, *, is_uncond: bool, batch: int, height: int, width: int,
                    device: torch.device, dtype: torch.dtype, unet: Any, side: int = 0,
                    sigma_range: Any = None) -> list[Entry]:
    """``sigma_range(d)`` maps an entry's dict to the noise levels where it is active (or
    None: always)."""
    entries = []
    sdxl = is_sdxl_unet(unet)
    for item in conditioning or []:
        tensor, d = item[0], (item[1] if len(item) > 1 else {}) or {}
        context = _expand(tensor.to(device=device, dtype=dtype), batch, "conditioning")
        pooled = time_ids = None
        if sdxl:
            p = d.get("pooled_output")
            if p is None:
                raise ValueError("this SDXL model needs a pooled text embedding ('pooled_output') "
                                 "in its conditioning; encode the prompt with an SDXL CLIP")
            pooled = _expand(p.to(device=device, dtype=dtype), batch, "pooled_output")
        area = _clip_area(d.get("area"), height, width)
        ah, aw = (area[0], area[1]) if area else (height, width)
        if sdxl:
            ids = _time_ids(d, time_id_count(unet, pooled.shape[-1]), ah, aw, is_uncond)
            time_ids = torch.tensor([ids], device=device, dtype=dtype).repeat(batch, 1)
        strength = float(d.get("strength", 1.0))
        weight: Any = strength
        if area is not None:
            weight = _area_weight(area, height, width, device) * strength
        mask = d.get("mask")
        if mask is not None:
            m = mask.to(device=device, dtype=torch.float32)
            m = m.reshape(-1, 1, *m.shape[-2:])
            full = torch.nn.functional.interpolate(m, size=(height, width), mode="bilinear",
                                                   align_corners=False)
            if area is not None:
                h, w, y, x = area
                full = full[:, :, y:y + h, x:x + w]
            full = full * float(d.get("mask_strength", 1.0))
            weight = full * weight  # a number or an area weight map: both broadcast
        entries.append(Entry(context, pooled, time_ids, weight, area, d.get("control"),
                             is_uncond, d, side, sigma_range(d) if sigma_range else None))
    return entries


def build_groups(entries: list[Entry]) -> list[Group]:
    """Entries batched into UNet calls, in the order of their sides within a call (negative
    first: diffusers' order)."""
    groups: dict[tuple, Group] = {}
    for e in sorted(entries, key=lambda e: e.side):  # stable: keeps the given order
        key = (e.area, id(e.control) if e.control is not None else None)
        groups.setdefault(key, Group([], e.area, e.control)).entries.append(e)
    out: list[Group] = []
    for g in groups.values():
        out.extend(_split_by_length(g))
    for g in out:
        length = max(e.context.shape[1] for e in g.entries)
        contexts = [_repeat_tokens(e.context, length) for e in g.entries]
        g.context = contexts[0] if len(contexts) == 1 else torch.cat(contexts)
        if g.entries[0].pooled is not None:
            g.added_cond_kwargs = {
                "text_embeds": torch.cat([e.pooled for e in g.entries]),
                "time_ids": torch.cat([e.time_ids for e in g.entries]),
            }
        g.raw = [e.raw for e in g.entries]
        g.is_uncond = [e.is_uncond for e in g.entries]
        g.sides = [e.side for e in g.entries]
    return out


def _split_by_length(group: Group) -> list[Group]:
    lengths = sorted({e.context.shape[1] for e in group.entries})
    if len(lengths) == 1:
        return [group]
    common = math.lcm(*lengths)
    if common <= MAX_REPEAT_FACTOR * lengths[-1]:
        for e in group.entries:
            e.context = _repeat_tokens(e.context, common)
        return [group]
    return [Group([e for e in group.entries if e.context.shape[1] == n], group.area, group.control)
            for n in lengths]


def _repeat_tokens(context: torch.Tensor, length: int) -> torch.Tensor:
    n = context.shape[1]
    return context if n == length else context.repeat(1, length // n, 1)

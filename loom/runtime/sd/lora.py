"""LoRA files -> :class:`~loom.runtime.sd.types.WeightPatch` lists against diffusers parameter names.

Formats read (names are matched against the actual modules of the loaded model, so there is no
guessing how underscores split):

- kohya / sd-scripts: ``lora_unet_<module>`` with diffusers module names (SD 1.x/2.x) or original
  ones (SDXL: ``lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q``), ``lora_te_``
  (SD 1.x/2.x text encoder), ``lora_te1_``/``lora_te2_`` (SDXL), each with ``.lora_down.weight``,
  ``.lora_up.weight`` and optional ``.alpha`` (scale = alpha / rank, else 1).
- diffusers / PEFT: ``unet.<module>.lora_A.weight``/``lora_B.weight`` (also ``.lora.down/up``,
  the older ``processor.to_q_lora.down``, ``lora_linear_layer.down``), ``text_encoder.*``,
  ``text_encoder_2.*``, with optional ``.alpha``.

Unsupported variants (LoHa, LoKr, DoRA, Tucker ``lora_mid``) are reported, not silently mixed in.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import torch

from loom.runtime.sd.keymap import unet_to_ldm
from loom.runtime.sd.reader import ModelFileError
from loom.runtime.sd.types import WeightPatch

log = logging.getLogger("loom.models")

_SUFFIXES = [
    (".lora_down.weight", "down"), (".lora_up.weight", "up"), (".lora_mid.weight", "mid"),
    (".lora_A.weight", "down"), (".lora_B.weight", "up"),
    (".lora.down.weight", "down"), (".lora.up.weight", "up"),
    (".lora_linear_layer.down.weight", "down"), (".lora_linear_layer.up.weight", "up"),
    ("_lora.down.weight", "down"), ("_lora.up.weight", "up"),
    (".alpha", "alpha"), (".dora_scale", "dora"),
    (".hada_w1_a", "hada"), (".hada_w1_b", "hada"), (".hada_w2_a", "hada"), (".hada_w2_b", "hada"),
    (".lokr_w1", "lokr"), (".lokr_w2", "lokr"), (".lokr_w1_a", "lokr"), (".lokr_w1_b", "lokr"),
    (".lokr_w2_a", "lokr"), (".lokr_w2_b", "lokr"),
]


@dataclass
class LoraPatches:
    unet: list[WeightPatch] = field(default_factory=list)
    text: list[tuple[int, WeightPatch]] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)


def _split(key: str) -> tuple[str, str] | None:
    for suffix, part in _SUFFIXES:
        if key.endswith(suffix):
            module = key[: -len(suffix)]
            if suffix.startswith("_lora."):  # old diffusers attention processors: attn1.processor.to_q_lora
                module = module.replace(".processor.", ".").replace("to_out", "to_out.0")
            return module, part
    return None


def _targets(module: torch.nn.Module) -> dict[str, tuple[str, torch.Size]]:
    """{module name: (weight parameter name, weight shape)} of the layers a LoRA may patch."""
    out = {}
    for name, sub in module.named_modules():
        if isinstance(sub, torch.nn.Linear | torch.nn.Conv2d):
            out[name] = (f"{name}.weight", sub.weight.shape)
    return out


def unet_names(unet: torch.nn.Module, unet_config: dict) -> dict[str, tuple[str, torch.Size]]:
    """LoRA module names (every accepted spelling) -> UNet weight (name, shape)."""
    targets = _targets(unet)
    names = {}
    for m, target in targets.items():
        spellings = [m]
        try:
            (ldm_key,) = unet_to_ldm({f"{m}.weight": None}, unet_config)
            spellings.append(ldm_key.removeprefix("model.diffusion_model.").removesuffix(".weight"))
        except KeyError:
            pass
        for spelled in spellings:
            names["lora_unet_" + spelled.replace(".", "_")] = target
        for prefix in ("unet.", "base_model.model.", ""):
            names[prefix + m] = target
    return names


def text_names(encoder: torch.nn.Module, index: int, family: str) -> dict[str, tuple[str, torch.Size]]:
    targets = _targets(encoder)
    names = {}
    kohya = ("lora_te1_", "lora_te2_")[index] if family == "sdxl" else "lora_te_"
    diffusers = ("text_encoder.", "text_encoder_2.")[index]
    for m, target in targets.items():
        full = m if m.startswith("text_model.") or m == "text_projection" else "text_model." + m
        names[kohya + full.replace(".", "_")] = target
        if family == "sdxl" and index == 0:
            names["lora_te_" + full.replace(".", "_")] = target  # some SDXL trainers write te for te1
        names[diffusers + full] = target
        names[diffusers + full.removeprefix("text_model.")] = target
    return names


def parse(sd: dict, *, unet: torch.nn.Module | None, unet_config: dict | None,
          encoders: tuple = (), family: str = "sd1", strength_model: float = 1.0,
          strength_clip: float = 1.0, name: str = "LoRA") -> LoraPatches:
    """Patches for the UNet and each text encoder from a LoRA state dict."""
    groups, other = _group(sd, name)
    lookup = _lookup(unet, unet_config, encoders, family)
    out = LoraPatches(unmatched=list(other))
    for module, parts in groups.items():
        if "up" not in parts or "down" not in parts:
            out.unmatched.append(module)
            continue
        hit = lookup.get(module)
        if hit is None:
            out.unmatched.append(module)
            continue
        where, param, shape = hit
        up, down = parts["up"], parts["down"]
        rank = down.shape[0]
        fits = (up.shape[0] == shape[0] and up.flatten(1).shape[1] == rank
                and down.flatten(1).shape[1] == torch.Size(shape[1:]).numel())
        if not fits:
            raise ModelFileError(
                f"{name} does not fit this {family} model: {module} has shape {tuple(up.shape)} x "
                f"{tuple(down.shape)} but the model's layer is {tuple(shape)}. The LoRA was made for "
                f"a different base model (e.g. SD 1.x vs SDXL).")
        alpha = parts.get("alpha")
        scale = float(alpha) / rank if alpha is not None else 1.0
        if where == "unet":
            out.unet.append(WeightPatch(param, up, down, scale, strength_model))
        else:
            out.text.append((int(where[2:]), WeightPatch(param, up, down, scale, strength_clip)))
    matched = len(out.unet) + len(out.text)
    if matched == 0:
        sample = ", ".join(sorted(groups)[:3])
        raise ModelFileError(f"{name}: none of its {len(groups)} layers match this {family} model (e.g. "
                             f"{sample}). It was probably made for a different base model.")
    if out.unmatched:
        log.warning("%s: %d of %d LoRA layers matched nothing in this %s model and were skipped "
                    "(e.g. %s)", name, len(out.unmatched), len(groups), family,
                    ", ".join(out.unmatched[:3]))
    return out


def _group(sd: dict, name: str) -> tuple[dict[str, dict[str, torch.Tensor]], list[str]]:
    """The LoRA's tensors by module (``{module: {"up", "down", "alpha"}}``) and the keys that are
    not LoRA weights; a file with no LoRA weights, or of a variant Loom cannot apply, is refused."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    other = []
    for key, value in sd.items():
        split = _split(key)
        if split is None:
            other.append(key)
            continue
        module, part = split
        groups.setdefault(module, {})[part] = value
    if not groups:
        from loom.runtime.sd.detect import describe

        raise ModelFileError(f"{name} is not a LoRA: {describe(sd)}.")
    unsupported = sorted({p for g in groups.values() for p in g if p in ("hada", "lokr", "dora", "mid")})
    if unsupported:
        raise ModelFileError(f"{name} is a LoRA variant Loom does not apply yet ({', '.join(unsupported)} "
                             "weights: LoHa/LoKr/DoRA/Tucker); plain LoRA/LoCon files work.")
    return groups, other


def _lookup(unet: torch.nn.Module | None, unet_config: dict | None, encoders: tuple,
            family: str) -> dict[str, tuple[str, str, torch.Size]]:
    """Every LoRA module name the model answers to -> (``unet``/``teN``, parameter, shape)."""
    lookup: dict[str, tuple[str, str, torch.Size]] = {}
    if unet is not None:
        for k, (param, shape) in unet_names(unet, unet_config or dict(unet.config)).items():
            lookup[k] = ("unet", param, shape)
    for i, enc in enumerate(encoders):
        for k, (param, shape) in text_names(enc, i, family).items():
            lookup[k] = (f"te{i}", param, shape)
    return lookup


_KOHYA = re.compile(r"^lora_(unet|te\d?)_")


def looks_like_lora(sd: dict) -> bool:
    return any(_KOHYA.match(k) or _split(k) for k in list(sd)[:50])

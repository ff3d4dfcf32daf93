"""The values that flow between Stable Diffusion nodes (ComfyUI's conventions, Loom's classes).

Socket type -> Python value:

- ``MODEL``        :class:`DiffusionModel` (a UNet plus what sampling needs to know about it)
- ``CLIP``         :class:`TextEncoder` (tokenizer(s) + text encoder(s))
- ``VAE``          :class:`Vae`
- ``CONDITIONING`` ``list[[tensor, dict]]``: per prompt chunk, the hidden states
                   ``[B, 77*k, D]`` and a dict with at least ``pooled_output`` (SDXL: ``[B, 1280]``,
                   else may be None); SDXL size conditioning under ``width``, ``height``,
                   ``crop_w``, ``crop_h``, ``target_width``, ``target_height``; optional
                   ``area``/``strength``/``mask``; ControlNet issues add ``control``.
- ``LATENT``       ``{"samples": tensor [B, 4, H/8, W/8]}`` in the VAE's raw latent space, as
                   ComfyUI keeps it: *not* multiplied by the scaling factor (sampling multiplies by
                   ``DiffusionModel.latent_scaling_factor`` on the way in and divides on the way out),
                   optional ``"noise_mask"`` ``[B or 1, 1, H, W]`` and ``"batch_index"`` ``list[int]``
- ``IMAGE``        float32 tensor ``[B, H, W, C]`` in 0..1 on the CPU (ComfyUI's layout)
- ``MASK``         float32 tensor ``[B, H, W]`` in 0..1

Wrappers are immutable from a node's point of view: LoraLoader and CLIPSetLastLayer return a
*new* wrapper (``with_patches`` / ``replace``) sharing the underlying module, so cached outputs of
upstream nodes are never changed behind the cache's back. Patches are applied to the weights
in place by the model manager inside ``use`` and stay there while the same patch set is used
again; they are undone only when another patch set (or none) is used, or at ``/free``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from loom.frozen import freeze

# Model families Loom recognises. "sd2" covers 512 eps and 768 v-prediction models.
FAMILIES = ("sd1", "sd2", "sdxl")


@dataclass(frozen=True, eq=False)
class WeightPatch:
    """A LoRA (or similar) delta for one module's weight: ``W += strength * scale * up @ down``.

    ``key`` is the diffusers parameter name in the patched module (e.g.
    ``down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight``).
    Compared by identity (``eq=False``): a value comparison would compare the tensors, which
    has no single truth value, and two patches made from the same file are still two patches.
    """

    key: str
    up: Any  # tensor [out, rank] (or conv [out, rank, 1, 1] / [out, rank, k, k])
    down: Any  # tensor [rank, in] (or conv)
    scale: float  # alpha / rank
    strength: float
    mid: Any = None  # LoCon/“mid” tensor, if present


@dataclass(frozen=True)
class DiffusionModel:
    """``MODEL``: a diffusers ``UNet2DConditionModel`` and how to sample it."""

    unet: Any
    family: str  # one of FAMILIES
    prediction_type: str  # "epsilon" | "v_prediction"
    # diffusers scheduler config (num_train_timesteps, beta_start, beta_end, beta_schedule, …)
    scheduler_config: dict = field(default_factory=dict)
    latent_scaling_factor: float = 0.18215  # SDXL: 0.13025
    patches: tuple[WeightPatch, ...] = ()
    source: str = ""  # file it came from, for messages
    # Extra per-model options other issues hang here (e.g. inpaint channels, model sampling).
    # Read-only (a MODEL is shared through the output cache): derive a new MODEL with
    # ``dataclasses.replace(model, options=dict(model.options, key=value))``.
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "options", freeze(self.options))

    def with_patches(self, patches: tuple[WeightPatch, ...]) -> DiffusionModel:
        return dataclasses.replace(self, patches=self.patches + tuple(patches))

    def loom_sizeof(self) -> int:
        return 0  # weights are counted by module (loom_modules), once however many share them

    def loom_modules(self) -> tuple:
        return (self.unet,)

    def loom_uses(self) -> tuple:
        """``(module, patches)`` pairs, as the model manager's ``use`` takes them."""
        return ((self.unet, self.patches),)


@dataclass(frozen=True)
class TextEncoder:
    """``CLIP``: tokenizer(s) and text encoder(s). SDXL has two (CLIP-L and OpenCLIP bigG)."""

    tokenizers: tuple  # transformers CLIPTokenizer(s)
    encoders: tuple  # transformers CLIPTextModel / CLIPTextModelWithProjection
    family: str
    layer_idx: int | None = None  # CLIPSetLastLayer: -1 = last, -2 = penultimate, …
    patches: tuple[tuple[int, WeightPatch], ...] = ()  # (encoder index, patch)
    embeddings_dir: str | None = None
    source: str = ""

    def replace(self, **changes) -> TextEncoder:
        return dataclasses.replace(self, **changes)

    def loom_sizeof(self) -> int:
        return 0

    def loom_modules(self) -> tuple:
        return tuple(self.encoders)

    def loom_uses(self) -> tuple:
        return tuple((enc, tuple(p for j, p in self.patches if j == i))
                     for i, enc in enumerate(self.encoders))


@dataclass(frozen=True)
class Vae:
    """``VAE``: a diffusers ``AutoencoderKL`` and its latent scaling."""

    vae: Any
    family: str
    scaling_factor: float
    shift_factor: float = 0.0
    latent_channels: int = 4
    source: str = ""

    def loom_sizeof(self) -> int:
        return 0

    def loom_modules(self) -> tuple:
        return (self.vae,)

    def loom_uses(self) -> tuple:
        return ((self.vae, ()),)

"""Extension points of the sampling loop (ControlNet residuals, inpaint masks, …).

Two ways in, both used by :func:`loom.runtime.sampling.sample`:

* **Per conditioning entry** (ComfyUI's way for ControlNet): a CONDITIONING entry's dict may hold
  ``"control"``: any object with ``unet_kwargs(call: UNetCall) -> dict | None``. The loop batches
  entries that share a control object into one UNet call and merges what it returns into the
  call's keyword arguments, e.g. ``down_block_additional_residuals`` /
  ``mid_block_additional_residual`` for diffusers' ``UNet2DConditionModel``. Entries without a
  control (often the negative prompt) go into a separate call.
* **Per run**: :class:`SamplingHooks` objects passed to ``sample(hooks=…)`` or attached to a model
  as ``DiffusionModel.options["sampling_hooks"]`` (a tuple). They see the run's
  :class:`SamplingState` at the start, may add UNet kwargs or extra input channels to every
  call, and may rewrite the latents after every solver step. Built in: :class:`NoiseMaskHook`
  (a LATENT's ``noise_mask``) and :class:`InpaintConcatHook` (9-channel inpainting UNets).

Lifecycle (both kinds; a control object may implement any of it): before the loop the sampler
asks every hook and every control on the conditioning for :meth:`SamplingHooks.models` and
loads them in *one* ``ModelManager.use`` together with the UNet, so nothing a hook needs is
loaded (or evicts the UNet) mid-run. Then :meth:`~SamplingHooks.setup` runs for each, in order,
and :meth:`~SamplingHooks.teardown` for each whose setup ran, in reverse order, when the loop
ends, also on an interrupt or an error (:func:`hook_session`). A hook that changes shared state
(an attention processor on the UNet, say) must undo it in ``teardown``; the loop's values
(MODEL, CONDITIONING) are shared with the output cache and are never to be changed.

When several sources return the same UNet kwarg, tensors (and tuples or lists of tensors,
elementwise) are summed, which is how stacked ControlNets and T2I-Adapters combine; the dicts
``added_cond_kwargs`` and ``cross_attention_kwargs`` are merged key by key with the same rule,
into a copy of what the call already has.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class UNetCall:
    """One UNet evaluation, as a hook sees it (before the call)."""

    step: int  # index of the solver iteration in this run (0-based)
    timestep: torch.Tensor  # the diffusers timestep passed to the UNet (0..num_train_timesteps)
    sigma: float  # noise level of the current sample (x0 + sigma * eps form)
    sample: torch.Tensor  # the UNet input [n*B, C, h, w], already scaled by the scheduler
    encoder_hidden_states: torch.Tensor  # [n*B, L, D]
    added_cond_kwargs: dict | None  # SDXL: text_embeds, time_ids
    entries: list[dict]  # the CONDITIONING dicts, one per chunk of B rows, in batch order
    is_uncond: list[bool]  # per chunk: negative prompt?
    batch_size: int  # B: rows per chunk
    area: tuple[int, int, int, int] | None  # (h, w, y, x) in latent pixels, or None (whole latent)
    # position in the whole schedule, 0 at its first step .. 1 after its last (for effects that
    # apply over a part of the schedule, like ControlNet's start/end percent): at this step's
    # start, and after it
    schedule_fraction: float = 0.0
    schedule_fraction_next: float = 1.0
    state: SamplingState | None = None  # the run (per-run values hooks prepared in setup)


@dataclass
class SamplingState:
    """What hooks may read about a run. Latents are in the scheduler's own form."""

    scheduler: Any  # the diffusers scheduler; None in the sigma loop (Loom's own solvers)
    timesteps: torch.Tensor  # the timesteps this run iterates (after denoise / start / end)
    levels: list[float]  # noise level (sigma) per index of ``timesteps``, plus one past the end
    noise: torch.Tensor  # the unit-variance initial noise on the device (zeros if add_noise off)
    latent_image: torch.Tensor  # the input latent, scaled by the model's scaling factor
    space: str  # "ve" or "vp", see loom.runtime.sampling.schedulers.SamplerSpec
    device: torch.device
    extras: dict = field(default_factory=dict)  # per-run values of hooks, keyed by the hook
    model: Any = None  # the DiffusionModel being sampled

    def alpha(self, index: int) -> float:
        """Factor from the x0 + sigma * eps form to the scheduler's form at ``levels[index]``."""
        if self.space == "ve":
            return 1.0
        return 1.0 / (1.0 + self.levels[index] ** 2) ** 0.5

    def noised(self, latent: torch.Tensor, index: int) -> torch.Tensor:
        """``latent`` (clean, scaled) noised with this run's noise to ``levels[index]``, in the
        scheduler's form: what the sample would be there if the image were ``latent``."""
        sigma = self.levels[index]
        return (latent + self.noise * sigma) * self.alpha(index)


class SamplingHooks:
    """Base class: override what you need. Methods run on the sampling thread.

    A hook object may be shared by several runs (it sits in a cached MODEL or CONDITIONING):
    keep per-run values in ``state.extras``, not on ``self``.
    """

    def models(self) -> Sequence:
        """Modules (or ``(module, patches)`` pairs) this hook runs, loaded with the UNet."""
        return ()

    def setup(self, state: SamplingState) -> None:
        """Before the first step, with :meth:`models` on the device."""
        self.on_start(state)

    def teardown(self, state: SamplingState) -> None:
        """After the last step, or when the run stops early (interrupt, error)."""

    def on_start(self, state: SamplingState) -> None:
        """Older name for :meth:`setup`."""

    def unet_kwargs(self, call: UNetCall) -> dict | None:
        return None

    def extra_channels(self, call: UNetCall) -> torch.Tensor | None:
        """Channels appended to the UNet's sample input (dim 1) for this call, e.g. an inpainting
        UNet's mask and masked-image latents. Shape ``[rows, k, h, w]`` like ``call.sample``."""
        return None

    def after_step(self, step: int, index: int, latents: torch.Tensor,
                   state: SamplingState) -> torch.Tensor:
        """Called after each complete solver step; ``latents`` are now at ``levels[index]``."""
        return latents

    def on_end(self, latents: torch.Tensor, state: SamplingState, sigma: float) -> torch.Tensor:
        """Called with the final latents in x0 + sigma * eps form (scaled); ``sigma`` is 0 unless
        the run stopped early keeping its leftover noise."""
        return latents


class NoiseMaskHook(SamplingHooks):
    """Inpainting with a LATENT ``noise_mask`` (ComfyUI's SetLatentNoiseMask semantics).

    Where the mask is 1 the sampler works freely; where it is 0 the original latent is kept:
    after every step those pixels are reset to the original noised to the current level (the
    way diffusers' inpaint pipeline does it for 4-channel UNets), and at the end to the clean
    original (or, when the run keeps leftover noise, the original noised to that level). Values
    between 0 and 1 blend.
    """

    def __init__(self, mask: torch.Tensor):
        self.mask = mask  # [B or 1, 1, h, w] at latent resolution, on the device

    def after_step(self, step, index, latents, state):
        keep = state.noised(state.latent_image, index)
        return torch.lerp(keep, latents, self.mask.to(latents.dtype))

    def on_end(self, latents, state, sigma):
        keep = state.latent_image + state.noise * sigma if sigma else state.latent_image
        return torch.lerp(keep, latents, self.mask.to(latents.dtype))


class InpaintConcatHook(SamplingHooks):
    """Inpainting UNets (9 input channels) see ``[sample, mask, masked-image latents]``, the
    layout of diffusers' StableDiffusionInpaintPipeline and ComfyUI. The masked-image latents
    are the LATENT being sampled (``VAEEncodeForInpaint`` greys out the masked pixels before
    encoding), the mask its ``noise_mask`` (1 = repaint), or all ones when it has none."""

    def __init__(self, mask: torch.Tensor, masked_latents: torch.Tensor):
        self.concat = torch.cat([mask.to(masked_latents.dtype), masked_latents], dim=1)

    def extra_channels(self, call):
        concat = self.concat
        if call.area is not None:
            h, w, y, x = call.area
            concat = concat[:, :, y:y + h, x:x + w]
        rows = call.sample.shape[0] // concat.shape[0]
        concat = concat.repeat(rows, 1, 1, 1) if rows > 1 else concat
        return concat.to(call.sample.dtype)


def prepare_mask(mask: torch.Tensor, batch: int, height: int, width: int,
                 device: torch.device) -> torch.Tensor:
    """A LATENT ``noise_mask`` (``[H, W]``, ``[B, H, W]`` or ``[B, 1, H, W]``, at pixel or latent
    resolution) as ``[B, 1, height, width]`` float32 in 0..1 on ``device``."""
    m = mask.to(device=device, dtype=torch.float32)
    if m.dim() == 2:
        m = m[None, None]
    elif m.dim() == 3:
        m = m[:, None]
    elif m.dim() != 4:
        raise ValueError(f"noise_mask must have 2 to 4 dimensions, got shape {tuple(mask.shape)}")
    if m.shape[1] != 1:
        m = m[:, :1]
    if m.shape[-2:] != (height, width):
        m = torch.nn.functional.interpolate(m, size=(height, width), mode="bilinear",
                                            align_corners=False)
    if m.shape[0] != batch:
        if batch % m.shape[0] != 0:
            raise ValueError(f"noise_mask batch {m.shape[0]} does not divide latent batch {batch}")
        m = m.repeat(batch // m.shape[0], 1, 1, 1)
    return m.clamp(0.0, 1.0)


def merge_unet_kwargs(into: dict, extra: dict | None) -> dict:
    """Merge ``extra`` into ``into``; values under the same key are summed (ControlNet stacks),
    dicts (``added_cond_kwargs``, ``cross_attention_kwargs``) merged key by key into a copy."""
    if not extra:
        return into
    for key, value in extra.items():
        if key not in into or into[key] is None:
            into[key] = dict(value) if isinstance(value, dict) else value
        elif value is None:
            continue
        elif isinstance(value, dict):
            into[key] = merge_unet_kwargs(dict(into[key]), value)
        elif isinstance(value, torch.Tensor):
            into[key] = into[key] + value
        elif isinstance(value, Sequence) and not isinstance(value, str):
            into[key] = type(into[key])(a + b for a, b in zip(into[key], value, strict=True))
        elif value != into[key]:
            raise TypeError(f"cannot combine two values for UNet argument {key!r} "
                            f"({into[key]!r} and {value!r})")
    return into


def controls_of(conditionings: Iterable[list]) -> list:
    """Every control object on the entries of ``conditionings``, each once, with the ones it
    stacks on (``control.previous``), in the order first met."""
    seen: dict[int, object] = {}
    for cond in conditionings:
        for item in cond or ():
            d = item[1] if len(item) > 1 else None
            control = d.get("control") if d else None
            while control is not None and id(control) not in seen:
                seen[id(control)] = control
                control = getattr(control, "previous", None)
    return list(seen.values())


def models_of(hooks: Iterable) -> list:
    """The modules the hooks need (each once), for one ``ModelManager.use`` with the UNet."""
    out, seen = [], set()
    for hook in hooks:
        fn = getattr(hook, "models", None)
        for item in (fn() if callable(fn) else ()):
            module = item[0] if isinstance(item, tuple) else item
            if id(module) not in seen:
                seen.add(id(module))
                out.append(item)
    return out


@contextlib.contextmanager
def hook_session(hooks: Iterable, state: SamplingState) -> Iterator[None]:
    """``setup`` of each hook in order; on leaving (normally, on an interrupt or on an error)
    ``teardown`` of each that was set up, in reverse order; one teardown failing does not stop
    the others."""
    with contextlib.ExitStack() as stack:
        for hook in hooks:
            setup = getattr(hook, "setup", None)
            teardown = getattr(hook, "teardown", None)
            if callable(setup):
                setup(state)
            if callable(teardown):
                stack.callback(teardown, state)
        yield

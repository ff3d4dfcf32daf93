"""Upscale models: recognised by spandrel from their tensors, run tiled on Loom's device.

spandrel knows the architectures users have files for (ESRGAN/RRDBNet, Real-ESRGAN Compact,
SwinIR, HAT, DAT, OmniSR, …; more with ``spandrel_extra_arches``) and builds the right network
from a state dict. Loom reads the file itself (``.safetensors`` memory-mapped, pickles only with
``torch.load(weights_only=True)``) and hands spandrel the tensors, so no model file can run code.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import torch

from loom.runtime.model_manager import ModelManager
from loom.runtime.sd.reader import ModelFileError, load_state_dict
from loom.runtime.upscale.tiled import MIN_TILE, upscale_with_retry

log = logging.getLogger("loom.upscale")

MAX_TILE = 1024
OVERLAP = 32  # input pixels shared by neighbouring tiles

_registry_lock = threading.Lock()
_extras_installed = False


def _loader():
    """spandrel's loader, with the extra architectures registered once per process."""
    global _extras_installed
    import spandrel

    with _registry_lock:
        if not _extras_installed:
            try:
                import spandrel_extra_arches

                spandrel_extra_arches.install(ignore_duplicates=True)
            except ImportError:  # optional: the main architectures work without it
                pass
            _extras_installed = True
    return spandrel.ModelLoader(device="cpu")


@dataclass
class ImageModel:
    """A loaded image-to-image model (what UPSCALE_MODEL and FACE_RESTORE_MODEL carry)."""

    descriptor: object  # spandrel.ImageModelDescriptor
    name: str
    # Activation bytes of a forward per input pixel and per byte of element size, measured on the
    # first tiled run (0: the architecture could not be measured).
    footprint: float | None = field(default=None, compare=False, repr=False)

    @property
    def module(self) -> torch.nn.Module:
        return self.descriptor.model

    @property
    def scale(self) -> int:
        return int(self.descriptor.scale)

    @property
    def architecture(self) -> str:
        return self.descriptor.architecture.name

    @property
    def purpose(self) -> str:
        return self.descriptor.purpose


def load_image_model(path: str | Path, *, purposes: tuple[str, ...], what: str) -> ImageModel:
    """Load ``path`` as an image-to-image model whose spandrel purpose is one of ``purposes``
    ("SR", "Restoration", "FaceSR", …)."""
    import spandrel

    path = Path(path)
    sd = load_state_dict(path, what=what)
    try:
        descriptor = _loader().load_from_state_dict(spandrel.canonicalize_state_dict(sd))
    except spandrel.UnsupportedModelError:
        raise ModelFileError(
            f"{path.name}: not a {what} architecture Loom knows (ESRGAN/RRDBNet, Real-ESRGAN "
            "Compact, SwinIR, HAT, DAT, OmniSR, GFPGAN, CodeFormer, RestoreFormer, … as "
            "recognised by spandrel)") from None
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise ModelFileError(f"{path.name}: a {descriptor.architecture.name} model is not an "
                             f"image-to-image {what}")
    if descriptor.purpose not in purposes:
        raise ModelFileError(f"{path.name}: this is a {descriptor.purpose} model "
                             f"({descriptor.architecture.name}), not a {what}")
    descriptor.model.eval().requires_grad_(False)
    log.info("Loaded %s %s: %s ×%d", what, path.name, descriptor.architecture.name,
             descriptor.scale)
    return ImageModel(descriptor, path.name)


def load_model_file(ctx, folder: str, name: str, *, purposes: tuple[str, ...], what: str) -> ImageModel:
    """The file ``name`` of ``models/<folder>/`` as :func:`load_image_model` loads it, once per
    process: every worker and prompt shares the loaded model (the model manager's
    ``loaded``), and a file replaced on disk is loaded again."""
    from loom.files import model_path
    from loom.runtime.sd.common import manager_of

    path = model_path(ctx, folder, name)
    return manager_of(ctx).loaded.get(
        what, path, lambda: load_image_model(path, purposes=purposes, what=what))


FOOTPRINT_MARGIN = 1.5  # workspaces and allocator slack over the measured live tensors
TRACE_SIDE = 128  # input side of the measuring forward (rounded up to what the model needs)


def _bytes_per_input_pixel(model: ImageModel, dtype: torch.dtype) -> int:
    """Working memory per input pixel at ``dtype``: the model's forward measured once on fake
    tensors (shapes only, nothing computed: ``loom.runtime.footprint``) times a margin. For an
    architecture that cannot run on fake tensors, a rough upper bound instead: a few live feature
    maps of the widest layer at the output resolution, where super-resolution nets peak."""
    elem = torch.finfo(dtype).bits // 8
    per_byte = _measured_footprint(model)
    if per_byte:
        return max(1, int(per_byte * elem * FOOTPRINT_MARGIN))
    channels = 64
    for p in model.module.parameters():
        if p.dim() == 4:
            channels = max(channels, p.shape[0])
    return elem * channels * max(1, model.scale) ** 2 * 4


def _measured_footprint(model: ImageModel) -> float:
    if model.footprint is None:
        from loom.runtime.footprint import forward_peak

        try:
            param = next(model.module.parameters())
            req = model.descriptor.size_requirements
            side = max(TRACE_SIDE, req.minimum)
            side = -(-side // req.multiple_of) * req.multiple_of
            x = torch.zeros(1, model.descriptor.input_channels, side, side, device=param.device,
                            dtype=param.dtype)
            model.footprint = forward_peak(model.module, x) / (side * side) / param.element_size()
        except Exception as e:  # noqa: BLE001 - data-dependent code fake tensors cannot follow
            log.info("%s: working memory not measured (%s); using a rough bound", model.name, e)
            model.footprint = 0.0
    return model.footprint


def choose_tile(model: ImageModel, device: torch.device, dtype: torch.dtype) -> int:
    """The biggest tile whose working memory fits in half of what is free on ``device`` (at
    most 1 GB on the CPU, where a smaller tile costs little speed but saves a lot of RAM)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = free // 2
    else:
        budget = min(psutil.virtual_memory().available // 4, 1 << 30)
    side = int(math.sqrt(budget / _bytes_per_input_pixel(model, dtype)))
    side = side // 32 * 32
    return max(MIN_TILE, min(MAX_TILE, side))


def _to_model_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    if x.shape[1] == channels:
        return x
    if channels == 1:
        return x[:, :3].mean(1, keepdim=True)
    if channels == 3:
        return x[:, :3] if x.shape[1] > 3 else x.expand(-1, 3, -1, -1)
    if channels == 4 and x.shape[1] == 3:
        return torch.cat([x, torch.ones_like(x[:, :1])], 1)
    raise ModelFileError(f"the model takes {channels}-channel images")


def inference_dtype(model: ImageModel, device: torch.device) -> torch.dtype:
    """fp16 on CUDA for the architectures that support it (half the memory, tensor cores);
    fp32 elsewhere (CPU half precision is slow, MPS half is unreliable for some of them)."""
    return torch.float16 if device.type == "cuda" and model.descriptor.supports_half else torch.float32


def run_image_model(model: ImageModel, image: torch.Tensor, manager: ModelManager, *,
                    tile: int | None = None, overlap: int = OVERLAP,
                    progress: Callable[[int, int], None] | None = None,
                    dtype: torch.dtype | None = None) -> torch.Tensor:
    """Apply ``model`` to IMAGE ``[B, H, W, C]`` (0..1), tiled; returns a float32 IMAGE on the CPU.

    ``tile=None`` chooses the tile from free memory; on out-of-memory it is halved and the
    image tried again. ``progress(done, total)`` is called per tile (it may raise to interrupt).
    ``dtype=None``: :func:`inference_dtype` for the manager's device.
    """
    device = manager.device
    dtype = dtype or inference_dtype(model, device)
    if tile is None:
        tile = choose_tile(model, device, dtype)
    size_req = model.descriptor.size_requirements
    in_channels = model.descriptor.input_channels
    batch = image.shape[0]
    results = []
    with manager.use(model.module):
        if next(model.module.parameters()).dtype != dtype:
            model.module.to(dtype)

        def run(piece: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return model.module(piece)

        for i in range(batch):
            x = image[i:i + 1].movedim(-1, 1)
            x = _to_model_channels(x, in_channels).to(device, dtype)

            def on_tile(done: int, total: int, i=i) -> None:
                if progress is not None:
                    progress(i * total + done, batch * total)

            out = upscale_with_retry(run, x, scale=model.scale, tile=tile, overlap=overlap,
                                     pad_to=size_req.get_padding, on_tile=on_tile,
                                     on_oom=_empty_cache)
            results.append(out[:, :3].clamp_(0, 1).movedim(1, -1))
    return torch.cat(results, 0)


def _empty_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

"""Reading model files into state dicts, safely.

``.safetensors`` (and ``.sft``) are read with ``safe_open`` (memory-mapped; no code can run).
``.ckpt/.pt/.pth/.bin`` only through ``torch.load(weights_only=True)``: a file that needs more
than tensors and plain containers is refused with an explanation, never unpickled freely.
Big files log their progress, so a multi-GB checkpoint does not look like a hang.
"""

from __future__ import annotations

import json
import logging
import pickle
import time
from collections.abc import Callable
from pathlib import Path

import torch

log = logging.getLogger("loom.models")

SAFE_EXTENSIONS = (".safetensors", ".sft")
PICKLE_EXTENSIONS = (".ckpt", ".pt", ".pth", ".bin")
BIG_FILE = 256 * 1024 * 1024  # log progress above this size


class ModelFileError(ValueError):
    """A model file could not be used: unreadable, unsafe, or not the kind of model expected."""


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GB"


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file ({} for other formats or none)."""
    path = Path(path)
    if path.suffix.lower() not in SAFE_EXTENSIONS:
        return {}
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n <= 0 or n > 100 * 1024 * 1024:
                return {}
            header = json.loads(f.read(n))
        meta = header.get("__metadata__") or {}
        return {str(k): str(v) for k, v in meta.items()}
    except (OSError, ValueError):
        return {}


def load_state_dict(path: str | Path, *, what: str = "model",
                    progress: Callable[[int, int], None] | None = None) -> dict[str, torch.Tensor]:
    """All tensors of a model file, on the CPU, in the file's dtypes.

    Checkpoints that wrap their weights (``{"state_dict": …}``, ``{"model": …}``) are unwrapped.
    ``progress(done, total)`` is called as tensors are read.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    size = path.stat().st_size
    suffix = path.suffix.lower()
    start = time.perf_counter()
    big = size >= BIG_FILE
    if big:
        log.info("Loading %s %s (%s)…", what, path.name, human_size(size))
    if suffix in SAFE_EXTENSIONS:
        sd = _read_safetensors(path, progress, big)
    elif suffix in PICKLE_EXTENSIONS:
        sd = _read_pickle(path)
    else:
        raise ModelFileError(
            f"{path.name}: unsupported file type {suffix or '(none)'!r}; expected one of "
            f"{', '.join(SAFE_EXTENSIONS + PICKLE_EXTENSIONS)}")
    if big:
        log.info("Read %s: %d tensors in %.1f s", path.name, len(sd), time.perf_counter() - start)
    return sd


def _read_safetensors(path: Path, progress, big: bool) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            keys = list(f.keys())
            sd = {}
            step = max(1, len(keys) // 10)
            for i, key in enumerate(keys, 1):
                sd[key] = f.get_tensor(key)
                if progress is not None:
                    progress(i, len(keys))
                if big and i % step == 0 and i < len(keys):
                    log.info("  %s: %d%%", path.name, 100 * i // len(keys))
    except SafetensorError as e:
        raise ModelFileError(f"{path.name} is not a valid .safetensors file ({e}). Is the download "
                             f"complete? ({human_size(path.stat().st_size)} on disk)") from e
    return sd


def _read_pickle(path: Path) -> dict[str, torch.Tensor]:
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e) and "zip" not in str(e):
                raise
            # Files saved in torch's legacy (pre-1.6, non-zip) format cannot be memory-mapped.
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()
        detail = next((ln for ln in first if "GLOBAL" in ln or "Unsupported" in ln),
                      first[0] if first else "")
        raise ModelFileError(
            f"{path.name} contains pickled Python objects besides tensors ({detail.strip()}). Loom "
            f"loads .ckpt/.pt files only in PyTorch's safe weights-only mode, because unpickling "
            f"can run arbitrary code. Use a .safetensors version of this model, or convert it on "
            f"a machine you trust.") from e
    except (RuntimeError, EOFError, OSError) as e:
        raise ModelFileError(f"{path.name} could not be read as a PyTorch file ({e}). Is the "
                             f"download complete?") from e
    return unwrap_state_dict(obj, path.name)


def unwrap_state_dict(obj, name: str = "file") -> dict[str, torch.Tensor]:
    """The tensor dict inside a loaded checkpoint object."""
    for _ in range(3):
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            for key in ("state_dict", "model", "module", "params_ema"):
                if isinstance(obj.get(key), dict):
                    obj = obj[key]
                    break
            else:
                break
        else:
            break
    if not isinstance(obj, dict):
        raise ModelFileError(f"{name} holds a {type(obj).__name__}, not a dict of tensors")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    # Textual-inversion files keep their vectors one level down; leave those to their reader.
    if not tensors and not any(k in obj for k in ("string_to_param", "emb_params")):
        kinds = sorted({type(v).__name__ for v in obj.values()})
        raise ModelFileError(f"{name} contains no tensors (found keys {list(obj)[:8]} of types {kinds})")
    if "string_to_param" in obj or "emb_params" in obj:
        return obj
    return tensors



"""Annotator weight files: looked up in ``models/annotators/`` by their usual names, read safely.

Nothing here (or anywhere in the annotators) downloads: controlnet-aux's ``from_pretrained``
would go to the Hugging Face hub for any name that is not a local folder, so Loom builds its
networks itself and loads the state dicts from files the user put in place.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

FOLDER = "annotators"


class AnnotatorMissing(FileNotFoundError):
    """An annotator's weight file is not in models/annotators/."""


def find_annotator(paths: Any, filename: str) -> Path:
    """``models/annotators/<filename>``, or a file of that name in a subfolder of it (the layout
    other tools download into, e.g. ``lllyasviel/Annotators/``)."""
    if paths is None:
        raise AnnotatorMissing(f"Annotator file {filename!r} cannot be looked up: no models folder "
                               "(the node was run without ctx.paths)")
    folder = Path(paths.model_folder(FOLDER))
    direct = folder / filename
    if direct.is_file():
        return direct
    if folder.is_dir():
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            if filename in filenames:
                return Path(dirpath) / filename
    raise AnnotatorMissing(
        f"Annotator file {filename!r} was not found in models/{FOLDER}/ ({folder}). Loom never "
        f"downloads: put {filename} there (it is the usual name of this annotator's weights).")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a pickled torch file (tensors only: weights_only)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged file or one that pickles code: say which file
        raise ValueError(f"Annotator file {path.name!r} could not be read as torch weights: "
                         f"{e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"Annotator file {path.name!r} holds a {type(data).__name__}, not weights")
    return data

"""The files Loom ships to load Stable Diffusion models offline: base configs and the tokenizer.

``configs/<name>.json`` hold the published diffusers configs of the reference models (SD 1.5,
SD 2.1-768-v, SDXL base 1.0) per component; the loaders start from them and override the
dimensions they read off a checkpoint's tensors. ``configs/tokenizer/`` holds the CLIP BPE
vocabulary (derived once by ``scripts/make_tokenizer.py``), shared by every SD text encoder.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
TOKENIZER_DIR = CONFIG_DIR / "tokenizer"

# OpenAI CLIP pads with <|endoftext|>; the OpenCLIP models (SD 2.x, SDXL's second encoder) pad
# with "!" (id 0), as their diffusers tokenizer configs do. Padding positions are part of the
# hidden states the UNet attends to, so this matters for exact parity.
PAD_TOKENS = {"clip_l": "<|endoftext|>", "open_clip": "!"}


@functools.cache
def _tokenizer(kind: str):
    from transformers import CLIPTokenizer

    return CLIPTokenizer(str(TOKENIZER_DIR / "vocab.json"), str(TOKENIZER_DIR / "merges.txt"),
                         model_max_length=77, pad_token=PAD_TOKENS[kind])


def clip_tokenizer(kind: str = "clip_l"):
    """A ``CLIPTokenizer`` from the shipped files. ``kind``: "clip_l" or "open_clip" (padding)."""
    if kind not in PAD_TOKENS:
        raise ValueError(f"unknown tokenizer kind {kind!r}; expected one of {sorted(PAD_TOKENS)}")
    return _tokenizer(kind)


@functools.cache
def _config(name: str) -> dict:
    return json.loads((CONFIG_DIR / f"{name}.json").read_text(encoding="utf-8"))


def base_config(name: str) -> dict:
    """A copy of a shipped component config, e.g. ``base_config("sd15_unet")``."""
    return copy.deepcopy(_config(name))

"""What each token of a caption says about the scene: the targets of the text encoder's own stage.

Before the UNet trains, the text encoder learns to put the scene's attributes into its token
states: at every token, the colour, shape, size and position of the object whose phrase it is in,
as far as the words up to that token say it (CLIP's attention is causal), and the background's
tones. Linear heads read them back during that stage only; they are not part of the checkpoint.
The UNet then starts from tokens that already mean something instead of learning words and
pictures at once from the denoising loss alone — on a 2-core CPU that is the difference between
drawing what the prompt says after an hour and not.
"""

from __future__ import annotations

import functools
import random

import numpy as np
import torch

from training.demo_model import architecture, scenes

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "color": tuple(scenes.COLORS),
    "shape": scenes.SHAPES,
    "size": tuple(scenes.SIZES),
    "position": scenes.POSITIONS,
    "bg_top": tuple(scenes.BACKGROUNDS),
    "bg_bottom": tuple(scenes.BACKGROUNDS),
}
IGNORE = -100  # cross_entropy's ignore_index: this token does not (yet) say it
LENGTH = 77


@functools.cache
def _word_ids(word: str) -> tuple[int, ...]:
    return tuple(architecture.tokenizer().encode(word, add_special_tokens=False))


def _value(scene: scenes.Scene, owner: int, attr: str) -> int:
    if attr == "bg_top":
        return ATTRIBUTES[attr].index(scene.background[0])
    if attr == "bg_bottom":
        return ATTRIBUTES[attr].index(scene.background[-1])
    return ATTRIBUTES[attr].index(getattr(scene.objects[owner - 1], attr))


def encode(scene: scenes.Scene, rng: random.Random | None = None) -> tuple[list[int], np.ndarray]:
    """Token ids (as the tokenizer makes them for the caption, padded to 77) and per-token
    targets ``[77, len(ATTRIBUTES)]`` for ``scene.caption(rng)``."""
    tok = architecture.tokenizer()
    names = list(ATTRIBUTES)
    ids = [tok.bos_token_id]
    rows = [[IGNORE] * len(names)]
    known: dict[int, dict[str, int]] = {}
    for word, owner, attr in scene.caption_words(rng):
        wids = _word_ids(word)
        for j, t in enumerate(wids):
            if attr is not None and j == len(wids) - 1:  # complete at the word's last token
                known.setdefault(owner, {})[attr] = _value(scene, owner, attr)
            ids.append(t)
            said = known.get(owner, {}) if owner >= 0 else {}
            rows.append([said.get(n, IGNORE) for n in names])
    background = known.get(0, {})
    if len(ids) >= LENGTH:
        raise ValueError(f"caption longer than {LENGTH - 2} tokens")
    while len(ids) < LENGTH:  # <|endoftext|>, then padding with it: they have seen everything
        ids.append(tok.eos_token_id)
        rows.append([background.get(n, IGNORE) for n in names])
    return ids, np.array(rows, dtype=np.int64)


def batch(scene_list: list[scenes.Scene], rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids ``[B, 77]`` and targets ``[B, 77, A]``; half the captions leave details out."""
    pairs = [encode(s, rng if rng.random() < 0.5 else None) for s in scene_list]
    return torch.tensor([p[0] for p in pairs]), torch.from_numpy(np.stack([p[1] for p in pairs]))


class Heads(torch.nn.Module):
    """One linear read-out per attribute from the encoder's last hidden states."""

    def __init__(self, width: int):
        super().__init__()
        self.heads = torch.nn.ModuleDict({n: torch.nn.Linear(width, len(v)) for n, v in ATTRIBUTES.items()})

    def loss(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        total = hidden.new_zeros(())
        for k, head in enumerate(self.heads.values()):
            logits = head(hidden)
            total = total + torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), targets[..., k].reshape(-1), ignore_index=IGNORE
            )
        return total

    @torch.no_grad()
    def accuracy(self, hidden: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        out = {}
        for k, (name, head) in enumerate(self.heads.items()):
            t = targets[..., k]
            seen = t != IGNORE
            pred = head(hidden).argmax(-1)
            out[name] = (
                round(float((pred[seen] == t[seen]).float().mean()), 3) if seen.any() else float("nan")
            )
        return out

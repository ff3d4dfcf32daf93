"""Seeded noise, drawn on the CPU so a seed gives the same image on any device.

Semantics (ComfyUI's, made exact for every latent size):

* one ``torch.Generator("cpu")`` is seeded with the seed;
* the initial noise is drawn **one batch item at a time**, ``randn([1, C, H, W])`` per item, in
  batch order. A latent that came out of ``LatentFromBatch``/``RepeatLatentBatch`` carries
  ``batch_index``; item ``k`` then gets the ``k``-th draw of the stream (draws for indices that are
  not present are made and thrown away). So image 3 of a batch of 4 can be re-made alone, with the
  same seed, from ``LatentFromBatch(batch_index=3)``. (Per item rather than one ``randn`` of the
  whole batch because the CPU normal sampler fills blocks of 16 values: a whole-batch draw equals
  the per-item draws only when C*H*W is a multiple of 16.)
* the same generator, continued, feeds the stochastic solvers (ancestral and SDE samplers). This
  is what a diffusers pipeline does with ``generator=torch.Generator("cpu").manual_seed(seed)``,
  which is how the parity tests reproduce Loom's results.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def seeded_generator(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(int(seed))


def initial_noise(shape: Sequence[int], generator: torch.Generator,
                  batch_index: Sequence[int] | None = None) -> torch.Tensor:
    """Unit-variance float32 CPU noise of ``shape`` ``[B, C, H, W]``, per the rules above."""
    batch, item_shape = int(shape[0]), [1, *shape[1:]]
    if batch_index is None:
        indices = list(range(batch))
    else:
        indices = [int(i) for i in batch_index]
        if len(indices) != batch:
            raise ValueError(f"batch_index has {len(indices)} entries for a batch of {batch}")
        if min(indices, default=0) < 0:
            raise ValueError("batch_index entries must be >= 0")
    draws: dict[int, torch.Tensor] = {}
    wanted = set(indices)
    for k in range(max(indices, default=-1) + 1):
        item = torch.randn(item_shape, generator=generator, dtype=torch.float32)
        if k in wanted:
            draws[k] = item
    if not indices:
        return torch.empty([0, *shape[1:]], dtype=torch.float32)
    return torch.cat([draws[i] for i in indices], dim=0)


class Noise:
    """``NOISE`` (RandomNoise / DisableNoise): where a run's randomness comes from.

    ``generator()`` is seeded with ``seed``; a run draws its initial noise from it first (unless
    ``enabled`` is False) and continues it for the noise of stochastic solvers, so KSampler
    with a seed and a custom-sampling graph with RandomNoise of that seed draw the same noise.
    """

    def __init__(self, seed: int, enabled: bool = True):
        self.seed, self.enabled = int(seed), bool(enabled)

    def generator(self) -> torch.Generator:
        return seeded_generator(self.seed)

    def initial(self, shape: Sequence[int], generator: torch.Generator,
                batch_index: Sequence[int] | None = None) -> torch.Tensor:
        if not self.enabled:
            return torch.zeros(list(shape), dtype=torch.float32)
        return initial_noise(shape, generator, batch_index)

    def __repr__(self) -> str:
        return f"Noise(seed={self.seed}, enabled={self.enabled})"

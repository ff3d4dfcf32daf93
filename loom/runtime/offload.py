"""Streaming a model's weights to the device block by block (diffusers' group offloading).

A streamed module keeps its weights on the CPU; hooks move one group (a block of a ModuleList:
a UNet's down/up blocks, a text encoder's layers) to the device right before it runs and back
after. On CUDA a side stream prefetches the next group while the current one computes, so the
cost is mostly hidden when compute per block outweighs the copy. ``leaf`` granularity (every
layer its own group, no prefetch) is the sequential offload of ``--vram none``.

We use diffusers' hooks rather than our own: they handle arbitrary forward signatures, buffers,
parameters outside blocks and stream synchronisation. They work on any ``nn.Module`` (the
transformers text encoders too).
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("loom.models")


def stream(module: torch.nn.Module, device: torch.device, *, leaf: bool, use_stream: bool) -> None:
    """Attach streaming hooks: ``module``'s weights stay on the CPU, groups visit ``device``."""
    from diffusers.hooks import apply_group_offloading

    module.to("cpu")
    if leaf:
        apply_group_offloading(
            module,
            onload_device=device,
            offload_device="cpu",
            offload_type="leaf_level",
            use_stream=use_stream,
        )
    else:
        apply_group_offloading(
            module,
            onload_device=device,
            offload_device="cpu",
            offload_type="block_level",
            num_blocks_per_group=1,
            use_stream=use_stream,
            non_blocking=use_stream,
        )


def unstream(module: torch.nn.Module) -> None:
    """Remove the hooks; the weights are on the CPU afterwards (their offloaded place)."""
    from diffusers.hooks.group_offloading import (
        _GROUP_OFFLOADING,
        _LAYER_EXECUTION_TRACKER,
        _LAZY_PREFETCH_GROUP_OFFLOADING,
    )
    from diffusers.hooks.hooks import HookRegistry

    registry = HookRegistry.check_if_exists_or_initialize(module)
    for name in (_GROUP_OFFLOADING, _LAYER_EXECUTION_TRACKER, _LAZY_PREFETCH_GROUP_OFFLOADING):
        registry.remove_hook(name, recurse=True)
    module.to("cpu")


def streamed_bytes(module: torch.nn.Module, *, leaf: bool) -> int:
    """Device bytes a streamed module takes at its peak: its biggest group, twice when the next
    one is prefetched (block level), plus what lives outside blocks (block level onloads it
    for the whole forward)."""
    if leaf:
        return max((_own_bytes(m) for m in module.modules()), default=0)
    in_blocks: set[int] = set()
    biggest = 0
    for child in module.modules():
        if isinstance(child, torch.nn.ModuleList | torch.nn.Sequential):
            for block in child:
                if any(id(t) in in_blocks for t in block.parameters()):
                    continue
                tensors = [*block.parameters(), *block.buffers()]
                in_blocks.update(id(t) for t in tensors)
                biggest = max(biggest, sum(_nbytes(t) for t in tensors))
    loose = sum(_nbytes(t) for t in (*module.parameters(), *module.buffers()) if id(t) not in in_blocks)
    return 2 * biggest + loose


def _own_bytes(module: torch.nn.Module) -> int:
    return sum(_nbytes(t) for t in (*module.parameters(recurse=False), *module.buffers(recurse=False)))


def _nbytes(t: torch.Tensor) -> int:
    return t.element_size() * t.nelement()

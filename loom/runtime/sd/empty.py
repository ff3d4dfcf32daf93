"""Build model modules without allocating or initialising their weights, safely in threads.

The loaders create a UNet, VAE or text encoder only to fill it with a file's tensors at once,
so its parameters are made on the 'meta' device (no memory, no random init). accelerate's
``init_empty_weights`` (and the ``from_pretrained`` of diffusers and transformers, which use it
or patch ``torch.nn.init``) does that by patching torch functions for the whole process: a
module another thread builds meanwhile gets meta weights too, and two overlapping uses leave
the patch in place for good (every later load then fails with "Cannot copy out of meta
tensor"). :func:`empty_parameters` is a torch function mode instead: modes are per thread, so
it changes what ``torch.empty`` makes in this thread only, while the block runs.

Only ``torch.empty`` is redirected: it is how torch's layers allocate their parameters. Buffers
computed at construction (``torch.arange`` position ids and the like) stay real, as
``init_empty_weights(include_buffers=False)`` kept them; :func:`assert_materialised` catches
anything left on 'meta' after loading.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.overrides import TorchFunctionMode


class _ParametersOnMeta(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.empty and kwargs.get("device") is None:
            kwargs = {**kwargs, "device": "meta"}
        return func(*args, **kwargs)


@contextlib.contextmanager
def empty_parameters() -> Iterator[None]:
    """Modules built in this block (in this thread) have their parameters on 'meta'."""
    with _ParametersOnMeta():
        yield


def assert_materialised(module: torch.nn.Module, what: str) -> None:
    """Raise if a parameter or buffer of ``module`` is still on 'meta' (was never loaded)."""
    left = [name for name, t in (*module.named_parameters(), *module.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"{what}: {len(left)} tensors were not loaded (e.g. "
                           f"{', '.join(left[:3])})")

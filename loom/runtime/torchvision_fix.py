"""Make the CUDA-built torchvision wheel importable on CPU-only torch.

The only torchvision matching torch 2.13 on PyPI is a CUDA build. Its compiled ``_C`` extension
needs libtorch_cuda and does not load on CPU torch; torchvision then still registers fake
kernels for ``torchvision::nms``/``qnms`` unconditionally, which fails because the operators were
never defined. transformers imports torchvision whenever it is installed, so this breaks diffusers
too. We define those two operators with a pure-torch CPU implementation *before* torchvision is
imported; the rest of torchvision's pure-Python parts then work.

``install()`` puts a tiny import hook on ``sys.meta_path`` that does this lazily, the first time
torchvision is imported, so Python start-up does not pay for importing torch. The setup script
copies this file into the virtual environment with a ``.pth`` line calling ``install()``, so any
Python started from ``.venv`` gets it; ``main.py`` and the tests also call it directly.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

_done = False


def _nms(dets, scores, iou_threshold: float):
    import torch

    if dets.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=dets.device)
    x1, y1, x2, y2 = dets.unbind(1)
    areas = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    order = scores.argsort(descending=True)
    keep = []
    suppressed = torch.zeros(dets.shape[0], dtype=torch.bool, device=dets.device)
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        xx1 = torch.maximum(x1[i], x1)
        yy1 = torch.maximum(y1[i], y1)
        xx2 = torch.minimum(x2[i], x2)
        yy2 = torch.minimum(y2[i], y2)
        inter = (xx2 - xx1).clamp(min=0) * (yy2 - yy1).clamp(min=0)
        iou = inter / (areas[i] + areas - inter).clamp(min=1e-12)
        suppressed |= iou > iou_threshold
    return torch.tensor(keep, dtype=torch.long, device=dets.device)


def register_ops() -> None:
    """Define torchvision::nms and ::qnms on CPU-only torch (idempotent)."""
    global _done
    if _done:
        return
    _done = True
    import torch

    if torch.version.cuda is not None or torch.version.hip is not None:
        return  # a GPU build of torch loads torchvision's own extension
    if hasattr(torch.ops.torchvision, "nms"):
        return
    lib = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
        lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.impl(op, _nms, "CompositeExplicitAutograd")
    # Keep the library object alive for the life of the process.
    sys.modules[__name__].__dict__["_torchvision_lib"] = lib


def _after_import() -> None:
    """torchvision.ops.nms asserts that the compiled extension loaded; ours stands in for it."""
    import torch

    if _done and torch.version.cuda is None and torch.version.hip is None:
        import torchvision.extension as ext

        if not ext._has_ops():
            ext._has_ops = lambda: True


class _Hook(importlib.abc.MetaPathFinder):
    # Stays installed until torchvision is really executed: libraries probe with
    # importlib.util.find_spec("torchvision") long before they import it.
    _busy = False

    def find_spec(self, name, path=None, target=None):
        if name != "torchvision" or self._busy:
            return None
        register_ops()
        self._busy = True
        try:
            spec = importlib.util.find_spec(name)  # the real spec, from the other finders
        finally:
            self._busy = False
        if spec is None or spec.loader is None:
            return spec
        real_exec = spec.loader.exec_module
        hook = self

        def exec_module(module):
            if hook in sys.meta_path:
                sys.meta_path.remove(hook)
            real_exec(module)
            _after_import()

        spec.loader.exec_module = exec_module
        return spec


def install() -> None:
    """Arrange for :func:`register_ops` to run just before torchvision is first imported."""
    if "torchvision" in sys.modules:
        return
    if not any(isinstance(f, _Hook) for f in sys.meta_path):
        sys.meta_path.insert(0, _Hook())

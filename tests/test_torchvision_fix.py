"""The CPU torchvision fix: torchvision, diffusers and torchvision.ops.nms work on CPU torch."""

import subprocess
import sys

import pytest
import torch

from loom.runtime.torchvision_fix import _nms


@pytest.mark.slow
def test_fresh_interpreter_imports_diffusers_and_torchvision_ops():
    code = (
        "from loom.runtime import torchvision_fix; torchvision_fix.install()\n"
        "import importlib.util; assert importlib.util.find_spec('torchvision')\n"  # a probe first
        "from diffusers import UNet2DConditionModel\n"
        "import torch, torchvision\n"
        "from torchvision.ops import nms\n"
        "b = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30.]])\n"
        "print(nms(b, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[0, 2]"


def _reference_nms(boxes, scores, thr):
    """Textbook greedy NMS, one pair at a time."""
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    keep = []
    for i in order:
        ok = True
        for j in keep:
            a, b = boxes[i].tolist(), boxes[j].tolist()
            iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
            ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
            inter = iw * ih
            union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
            if inter / union > thr:
                ok = False
                break
        if ok:
            keep.append(i)
    return keep


def test_nms_matches_reference_on_random_boxes():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(200, 2, generator=g) * 100
    wh = torch.rand(200, 2, generator=g) * 30 + 1
    boxes = torch.cat([xy, xy + wh], 1)
    scores = torch.rand(200, generator=g)
    for thr in (0.3, 0.5, 0.7):
        assert _nms(boxes, scores, thr).tolist() == _reference_nms(boxes, scores, thr)
    assert _nms(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0

"""Image geometry nodes against PIL and plain torch references (ComfyUI's names and inputs)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from loom.config import REPO_ROOT
from loom.nodeapi import NodeRegistry
from loom.nodeapi.loader import load_packs
from nodes.image_ops import (
    GetImageSize,
    ImageBatch,
    ImageCrop,
    ImageFlip,
    ImagePadForOutpaint,
    ImageRotate,
    ImageScaleToTotalPixels,
)


def photo(h: int = 30, w: int = 40, c: int = 3, seed: int = 0) -> torch.Tensor:
    """A random image whose values are exact in 8 bits, so PIL round trips are lossless."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (1, h, w, c), generator=g).float() / 255.0


def to_pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray((image[0].numpy() * 255).round().astype(np.uint8))


def from_pil(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img).astype(np.float32) / 255.0)[None]


def test_declarations_match_comfyui():
    reg = NodeRegistry()
    load_packs(reg, REPO_ROOT / "nodes", builtin=True)
    info = reg.object_info()
    tp = info["ImageScaleToTotalPixels"]
    # resolution_steps (newer ComfyUI) is optional so that older API prompts without it still run;
    # it is drawn after the required widgets either way
    assert tp["input_order"]["required"] == ["image", "upscale_method", "megapixels"]
    assert tp["input_order"]["optional"] == ["resolution_steps"]
    assert tp["input"]["required"]["upscale_method"][0] == [
        "nearest-exact",
        "bilinear",
        "area",
        "bicubic",
        "lanczos",
    ]
    assert tp["input"]["required"]["megapixels"][1]["default"] == 1.0
    assert tp["input"]["optional"]["resolution_steps"][1]["default"] == 1
    assert ImageScaleToTotalPixels().run(photo(), "bilinear", 0.001)[0].shape == (1, 28, 37, 3)
    assert info["ImageCrop"]["input_order"]["required"] == ["image", "width", "height", "x", "y"]
    assert info["ImageFlip"]["input"]["required"]["flip_method"][0] == [
        "x-axis: vertically",
        "y-axis: horizontally",
    ]
    assert info["ImageRotate"]["input"]["required"]["rotation"][0] == [
        "none",
        "90 degrees",
        "180 degrees",
        "270 degrees",
    ]
    assert info["GetImageSize"]["output"] == ["INT", "INT", "INT"]
    assert info["GetImageSize"]["output_name"] == ["width", "height", "batch_size"]
    assert info["ImagePadForOutpaint"]["output"] == ["IMAGE", "MASK"]
    assert info["ImagePadForOutpaint"]["input"]["required"]["feathering"][1]["default"] == 40


@pytest.mark.parametrize(("mp", "steps"), [(0.05, 1), (0.05, 8), (0.5, 64), (0.01, 1)])
def test_scale_to_total_pixels_size_and_pixels(mp, steps):
    image = photo(200, 300)
    (out,) = ImageScaleToTotalPixels().run(image, "bilinear", mp, steps)
    scale = math.sqrt(mp * 1024 * 1024 / (300 * 200))
    w, h = (max(steps, round(300 * scale / steps) * steps), max(steps, round(200 * scale / steps) * steps))
    assert out.shape == (1, h, w, 3)
    ref = F.interpolate(image.movedim(-1, 1), size=(h, w), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, ref.movedim(1, -1), rtol=0, atol=1e-6)


def test_scale_to_total_pixels_lanczos_against_pil():
    # a smooth picture: PIL clips to 8 bits between its two passes, so sharp noise would
    # differ where lanczos overshoots
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 60), torch.linspace(0, 1, 80), indexing="ij")
    smooth = torch.stack([0.5 + 0.4 * torch.sin(3 * xx), 0.5 + 0.4 * torch.cos(2 * yy), (xx + yy) / 2], -1)
    image = (smooth[None] * 255).round() / 255
    for mp in (0.01, 0.002):  # up and down
        (out,) = ImageScaleToTotalPixels().run(image, "lanczos", mp, 1)
        h, w = out.shape[1:3]
        ref = from_pil(to_pil(image).resize((w, h), Image.Resampling.LANCZOS))
        assert (out - ref).abs().max() < 1.5 / 255  # PIL rounds to 8 bits, Loom resizes in float


@pytest.mark.parametrize(("width", "height", "x", "y"), [(10, 8, 3, 5), (40, 30, 0, 0), (15, 12, 30, 25)])
def test_crop_against_pil(width, height, x, y):
    image = photo()
    (out,) = ImageCrop().run(image, width, height, x, y)
    ref = from_pil(to_pil(image).crop((x, y, min(40, x + width), min(30, y + height))))
    assert torch.equal(out, ref)


def test_crop_beyond_the_image_keeps_the_last_pixel():
    image = photo()
    (out,) = ImageCrop().run(image, 512, 512, 100, 100)
    assert torch.equal(out, image[:, 29:, 39:, :])


@pytest.mark.parametrize(
    ("method", "transpose"),
    [
        ("x-axis: vertically", Image.Transpose.FLIP_TOP_BOTTOM),
        ("y-axis: horizontally", Image.Transpose.FLIP_LEFT_RIGHT),
    ],
)
def test_flip_against_pil(method, transpose):
    image = photo()
    (out,) = ImageFlip().run(image, method)
    assert torch.equal(out, from_pil(to_pil(image).transpose(transpose)))


@pytest.mark.parametrize(
    ("rotation", "clockwise"), [("none", 0), ("90 degrees", 90), ("180 degrees", 180), ("270 degrees", 270)]
)
def test_rotate_is_clockwise_against_pil(rotation, clockwise):
    image = photo()
    (out,) = ImageRotate().run(image, rotation)
    # PIL's rotate turns counter-clockwise
    ref = from_pil(to_pil(image).rotate(-clockwise, expand=True))
    assert torch.equal(out, ref)


def test_bad_choice_is_a_clear_error():
    with pytest.raises(ValueError, match="rotation must be one of"):
        ImageRotate().run(photo(), "45 degrees")


def test_batch_same_size_and_resized_second_image():
    a, b = photo(seed=1), photo(seed=2)
    (out,) = ImageBatch().run(a, b)
    assert torch.equal(out, torch.cat([a, b]))
    wide = photo(30, 80, seed=3)  # twice as wide: centre-cropped to 40x30, then (not) resized
    (out,) = ImageBatch().run(a, wide)
    assert torch.equal(out[1:], wide[:, :, 20:60, :])
    small = photo(15, 20, seed=4)
    (out,) = ImageBatch().run(a, small)
    ref = F.interpolate(small.movedim(-1, 1), size=(30, 40), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out[1:], ref.movedim(1, -1))
    rgba = photo(c=4, seed=5)
    (out,) = ImageBatch().run(a, rgba)
    assert out.shape == (2, 30, 40, 4) and torch.equal(out[0, ..., 3], torch.ones(30, 40))


def test_get_image_size():
    assert GetImageSize().run(torch.zeros(3, 30, 40, 3)) == (40, 30, 3)


def _reference_outpaint_mask(h, w, left, top, right, bottom, feathering):
    """The mask rule spelled out pixel by pixel."""
    mask = np.ones((h + top + bottom, w + left + right), dtype=np.float32)
    inner = np.zeros((h, w), dtype=np.float32)
    if feathering > 0 and feathering * 2 < h and feathering * 2 < w:
        for i in range(h):
            for j in range(w):
                d = min(i if top else h, h - i if bottom else h, j if left else w, w - j if right else w)
                if d < feathering:
                    inner[i, j] = ((feathering - d) / feathering) ** 2
    mask[top : top + h, left : left + w] = inner
    return torch.from_numpy(mask)[None]


@pytest.mark.parametrize(
    "pads", [(8, 0, 16, 0, 5), (0, 8, 0, 24, 7), (8, 8, 8, 8, 3), (8, 0, 0, 0, 0), (8, 8, 8, 8, 20)]
)
def test_pad_for_outpaint(pads):
    left, top, right, bottom, feathering = pads
    image = photo()
    out, mask = ImagePadForOutpaint().run(image, left, top, right, bottom, feathering)
    assert out.shape == (1, 30 + top + bottom, 40 + left + right, 3)
    assert torch.equal(out[:, top : top + 30, left : left + 40], image)
    border = torch.ones(out.shape[1:3], dtype=torch.bool)
    border[top : top + 30, left : left + 40] = False
    assert torch.all(out[0][border] == 0.5)
    torch.testing.assert_close(mask, _reference_outpaint_mask(30, 40, *pads))

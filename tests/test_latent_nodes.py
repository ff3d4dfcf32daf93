"""Latent, image-resize and conditioning nodes: shapes, ComfyUI defaults and names, batch
bookkeeping, resize methods."""

from __future__ import annotations

import pytest
import torch

from loom.nodeapi import NodeRegistry
from loom.runtime.sampling.resize import bislerp, center_crop_to_aspect, resize
from nodes.conditioning import ConditioningCombine, ConditioningSetArea
from nodes.image_ops import ImageScale, ImageScaleBy
from nodes.latent import EmptyLatentImage, LatentFromBatch, LatentUpscale, LatentUpscaleBy, RepeatLatentBatch
from nodes.sd_sampling import KSampler, KSamplerAdvanced


def lat(b=2, h=8, w=8, seed=0, **extra):
    return {"samples": torch.randn(b, 4, h, w, generator=torch.Generator().manual_seed(seed)), **extra}


def test_object_info_matches_comfyui_declarations():
    reg = NodeRegistry()
    for cls in (KSampler, KSamplerAdvanced, EmptyLatentImage, LatentUpscale, LatentUpscaleBy,
                LatentFromBatch, RepeatLatentBatch, ImageScale, ImageScaleBy, ConditioningCombine,
                ConditioningSetArea):
        reg.register(cls.__name__, cls)
    ks = reg.describe("KSampler")
    req = ks["input"]["required"]
    assert list(req) == ["model", "seed", "steps", "cfg", "sampler_name", "scheduler", "positive",
                         "negative", "latent_image", "denoise"]
    assert req["seed"][1]["max"] == 2**64 - 1 and req["seed"][1]["control_after_generate"]
    assert req["steps"][1]["default"] == 20 and req["steps"][1]["max"] == 10000
    assert req["cfg"][1] == {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                             "tooltip": req["cfg"][1]["tooltip"]}
    assert req["denoise"][1]["default"] == 1.0
    assert "euler" in req["sampler_name"][0] and "karras" in req["scheduler"][0]
    assert ks["output"] == ["LATENT"]
    adv = reg.describe("KSamplerAdvanced")["input"]["required"]
    assert list(adv) == ["model", "add_noise", "noise_seed", "steps", "cfg", "sampler_name",
                         "scheduler", "positive", "negative", "latent_image", "start_at_step",
                         "end_at_step", "return_with_leftover_noise"]
    assert adv["add_noise"][0] == ["enable", "disable"]
    assert adv["return_with_leftover_noise"][0] == ["disable", "enable"]
    assert adv["end_at_step"][1]["default"] == 10000
    empty = reg.describe("EmptyLatentImage")["input"]["required"]
    assert empty["width"][1]["default"] == 512 and empty["width"][1]["step"] == 8
    up = reg.describe("LatentUpscale")["input"]["required"]
    assert up["upscale_method"][0] == ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"]
    assert up["crop"][0] == ["disabled", "center"]
    assert reg.describe("LatentUpscaleBy")["input"]["required"]["scale_by"][1]["default"] == 1.5
    img = reg.describe("ImageScale")["input"]["required"]
    assert "lanczos" in img["upscale_method"][0]
    assert list(reg.describe("ConditioningSetArea")["input"]["required"]) == [
        "conditioning", "width", "height", "x", "y", "strength"]
    assert list(reg.describe("ConditioningCombine")["input"]["required"]) == [
        "conditioning_1", "conditioning_2"]


def test_empty_latent_image():
    (out,) = EmptyLatentImage().run(width=512, height=768, batch_size=3)
    assert out["samples"].shape == (3, 4, 96, 64)
    assert out["samples"].dtype == torch.float32 and not out["samples"].any()


@pytest.mark.parametrize("method", ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"])
def test_latent_upscale_methods(method):
    src = lat(noise_mask=torch.ones(1, 64, 64))
    (out,) = LatentUpscale().run(src, method, 128, 96, "disabled")
    assert out["samples"].shape == (2, 4, 12, 16)
    assert out["noise_mask"] is src["noise_mask"]  # carried along, resized by the sampler
    assert torch.isfinite(out["samples"]).all()
    (by,) = LatentUpscaleBy().run(src, method, 1.5)
    assert by["samples"].shape == (2, 4, 12, 12)
    if method != "bislerp":  # the others are torch's own resampling, value for value
        for got, size in ((out, (12, 16)), (by, (12, 12))):
            kw = {"align_corners": False} if method in ("bilinear", "bicubic") else {}
            want = torch.nn.functional.interpolate(src["samples"], size=size, mode=method, **kw)
            torch.testing.assert_close(got["samples"], want)


def test_latent_upscale_zero_keeps_aspect_and_crop_center():
    src = lat(h=8, w=16)
    (out,) = LatentUpscale().run(src, "nearest-exact", 0, 128, "disabled")
    assert out["samples"].shape[-2:] == (16, 32)
    (same,) = LatentUpscale().run(src, "bilinear", 0, 0, "disabled")
    assert torch.equal(same["samples"], src["samples"])
    (sq,) = LatentUpscale().run(src, "nearest-exact", 64, 64, "center")
    # the centre 8x8 of the 8x16 latent, at the same size: unchanged values
    assert torch.equal(sq["samples"], src["samples"][..., 4:12])


def test_bislerp_keeps_norms_and_matches_at_integer_positions():
    x = lat(b=1, h=4, w=4)["samples"]
    same = bislerp(x, 4, 4)
    assert torch.allclose(same, x, atol=1e-5)
    up = bislerp(x, 8, 8)
    lin = torch.nn.functional.interpolate(x, size=(8, 8), mode="bilinear", align_corners=False)
    # spherical blending keeps vectors' lengths between their neighbours'; linear shrinks them
    assert up.norm(dim=1).mean() > lin.norm(dim=1).mean()
    assert torch.isfinite(bislerp(torch.zeros(1, 4, 3, 3), 7, 5)).all()


def test_resize_helpers():
    x = torch.rand(1, 3, 10, 20)
    assert center_crop_to_aspect(x, 1, 1).shape[-2:] == (10, 10)
    assert center_crop_to_aspect(x, 4, 1).shape[-2:] == (5, 20)
    with pytest.raises(ValueError):
        resize(x, 4, 4, "no-such-method")


def test_latent_from_batch_and_repeat():
    src = lat(b=4, noise_mask=torch.rand(4, 1, 64, 64))
    (two,) = LatentFromBatch().run(src, batch_index=1, length=2)
    assert torch.equal(two["samples"], src["samples"][1:3])
    assert two["batch_index"] == [1, 2]
    assert torch.equal(two["noise_mask"], src["noise_mask"][1:3])
    (past,) = LatentFromBatch().run(src, batch_index=9, length=5)  # clamped, as ComfyUI
    assert past["samples"].shape[0] == 1 and past["batch_index"] == [3]
    (again,) = LatentFromBatch().run(two, batch_index=1, length=1)
    assert again["batch_index"] == [2]
    (rep,) = RepeatLatentBatch().run(two, amount=3)
    assert rep["samples"].shape[0] == 6
    assert torch.equal(rep["samples"][2:4], two["samples"])
    assert rep["batch_index"] == [1, 2, 3, 4, 5, 6]
    assert rep["noise_mask"].shape[0] == 6
    (plain,) = RepeatLatentBatch().run(lat(b=1), amount=2)
    assert "batch_index" not in plain and plain["samples"].shape[0] == 2


@pytest.mark.parametrize("method", ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"])
def test_image_scale(method):
    image = torch.rand(2, 30, 40, 3)
    (out,) = ImageScale().run(image, method, 80, 60, "disabled")
    assert out.shape == (2, 60, 80, 3) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    (by,) = ImageScaleBy().run(image, method, 0.5)
    assert by.shape == (2, 15, 20, 3)


def test_image_scale_lanczos_is_close_to_bicubic_and_keeps_constants():
    flat = torch.full((1, 16, 16, 3), 0.25)
    (out,) = ImageScale().run(flat, "lanczos", 37, 23, "disabled")
    assert torch.allclose(out, torch.full_like(out, 0.25), atol=1e-5)  # float, not 8-bit
    image = torch.rand(1, 32, 32, 3, generator=torch.Generator().manual_seed(1))
    lz = ImageScale().run(image, "lanczos", 64, 64, "disabled")[0]
    bc = ImageScale().run(image, "bicubic", 64, 64, "disabled")[0]
    assert (lz - bc).abs().mean() < 0.05


def test_image_scale_zero_keeps_aspect():
    image = torch.rand(1, 30, 40, 3)
    assert ImageScale().run(image, "bilinear", 0, 60, "disabled")[0].shape == (1, 60, 80, 3)
    assert ImageScale().run(image, "bilinear", 20, 0, "disabled")[0].shape == (1, 15, 20, 3)
    assert ImageScale().run(image, "bilinear", 0, 0, "disabled")[0] is image
    assert ImageScale().run(image, "area", 20, 20, "center")[0].shape == (1, 20, 20, 3)


def test_conditioning_nodes():
    a = [[torch.zeros(1, 77, 8), {"pooled_output": None}]]
    b = [[torch.ones(1, 77, 8), {"pooled_output": None, "width": 1024}]]
    (both,) = ConditioningCombine().run(a, b)
    assert len(both) == 2 and both[0][0] is a[0][0] and both[1][1]["width"] == 1024
    (area,) = ConditioningSetArea().run(both, width=256, height=128, x=64, y=32, strength=0.5)
    assert [d["area"] for _, d in area] == [(16, 32, 4, 8)] * 2
    assert all(d["strength"] == 0.5 for _, d in area)
    assert area[1][1]["width"] == 1024 and "area" not in b[0][1]

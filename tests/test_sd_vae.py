"""VAE nodes: decode/encode parity with diffusers, cropping, tiling, precision fallback, mismatches."""

from __future__ import annotations

import logging

import pytest
import torch
from sd_fixtures import (
    sd_cpu_only,  # noqa: F401  (autouse: CPU/fp32 even on GPU machines)
    tiny_components,
)

from loom.runtime.sd import vae as vae_ops
from loom.runtime.sd.types import Vae
from nodes.sd_vae import VAEDecode, VAEDecodeTiled, VAEEncode, VAEEncodeTiled


@pytest.fixture(scope="module")
def sd1_vae():
    module = tiny_components("sd1")["vae"]
    return Vae(vae=module, family="sd1", scaling_factor=0.18215, latent_channels=4, source="tiny.safetensors")


@pytest.fixture(scope="module")
def xl_vae():
    module = tiny_components("sdxl")["vae"]
    return Vae(vae=module, family="sdxl", scaling_factor=0.13025, latent_channels=4, source="xl.safetensors")


@torch.no_grad()
def test_decode_matches_diffusers(sd1_vae):
    z = torch.randn(2, 4, 8, 12, generator=torch.Generator().manual_seed(0))
    (img,) = VAEDecode().run(samples={"samples": z}, vae=sd1_vae)
    assert img.shape == (2, 64, 96, 3) and img.dtype == torch.float32 and img.device.type == "cpu"
    ref = sd1_vae.vae.decode(z).sample
    ref = ((ref + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)
    assert torch.equal(img, ref)


@torch.no_grad()
def test_encode_matches_diffusers_and_crops_like_comfyui(sd1_vae):
    img = torch.rand(1, 70, 85, 4, generator=torch.Generator().manual_seed(1))  # RGBA, not /8
    (latent,) = VAEEncode().run(pixels=img, vae=sd1_vae)
    z = latent["samples"]
    assert z.shape == (1, 4, 8, 10)
    cropped = img[:, 3:67, 2:82, :3]  # centre crop to 64x80, alpha dropped
    ref = sd1_vae.vae.encode(cropped.permute(0, 3, 1, 2) * 2 - 1).latent_dist.mean
    assert torch.equal(z, ref)


def test_tiling_blends_to_the_exact_result_for_local_functions():
    # A spatially local "decoder" (upsample x8 of a per-cell function): tiles must reassemble it.
    x = torch.randn(1, 4, 21, 30)

    def fn(t):
        return torch.nn.functional.interpolate(torch.tanh(t[:, :3] * 2), scale_factor=8, mode="nearest")

    full = fn(x)
    for tile, overlap in ((8, 2), (16, 4), (7, 3), (64, 8)):
        out = vae_ops.tiled(fn, x, tile, overlap, 8, 3)
        torch.testing.assert_close(out, full, rtol=0, atol=1e-6)
    down = vae_ops.tiled(lambda t: torch.nn.functional.avg_pool2d(t, 8), torch.randn(1, 3, 64, 96), 32, 16,
                         1 / 8, 3)
    assert down.shape == (1, 3, 8, 12)


@torch.no_grad()
def test_tiled_nodes(sd1_vae):
    z = torch.randn(1, 4, 16, 24, generator=torch.Generator().manual_seed(2))
    (whole,) = VAEDecode().run(samples={"samples": z}, vae=sd1_vae)
    # one tile covering everything equals the plain decode
    (same,) = VAEDecodeTiled().run(samples={"samples": z}, vae=sd1_vae, tile_size=256, overlap=64,
                                   temporal_size=64, temporal_overlap=8)
    assert torch.equal(same, whole)
    (tiled,) = VAEDecodeTiled().run(samples={"samples": z}, vae=sd1_vae, tile_size=64, overlap=32,
                                    temporal_size=64, temporal_overlap=8)
    assert tiled.shape == whole.shape and torch.isfinite(tiled).all()
    # tiles of a random VAE differ from the whole (its mid-block attention is global) but not wildly
    assert (tiled - whole).abs().mean() < 0.25

    img = torch.rand(1, 128, 192, 3, generator=torch.Generator().manual_seed(3))
    (plain,) = VAEEncode().run(pixels=img, vae=sd1_vae)
    (same,) = VAEEncodeTiled().run(pixels=img, vae=sd1_vae, tile_size=512, overlap=64,
                                   temporal_size=64, temporal_overlap=8)
    torch.testing.assert_close(same["samples"], plain["samples"], rtol=0, atol=1e-6)
    (tiled,) = VAEEncodeTiled().run(pixels=img, vae=sd1_vae, tile_size=64, overlap=32,
                                    temporal_size=64, temporal_overlap=8)
    assert tiled["samples"].shape == plain["samples"].shape


@torch.no_grad()
def test_reduced_precision_nan_falls_back_to_fp32(xl_vae, caplog):
    module = tiny_components("sdxl")["vae"].to(torch.bfloat16)
    vae = Vae(vae=module, family="sdxl", scaling_factor=0.13025, latent_channels=4)
    real_decode = module.decode

    def overflowing(z, *a, **k):  # what the SDXL VAE does in fp16 on some inputs
        out = real_decode(z, *a, **k)
        if z.dtype != torch.float32:
            out.sample[:] = float("nan")
        return out

    module.decode = overflowing
    z = torch.randn(1, 4, 8, 8)
    with caplog.at_level(logging.WARNING, logger="loom.models"):
        img = vae_ops.decode(vae, z)
    assert torch.isfinite(img).all() and "float32" in caplog.text
    assert next(module.parameters()).dtype == torch.bfloat16  # back to its loaded dtype
    ref = xl_vae.vae.decode(z).sample
    torch.testing.assert_close(img, ((ref + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1), rtol=0, atol=0.05)


def test_mismatches_are_explained(sd1_vae, xl_vae):
    with pytest.raises(ValueError, match="16 channels but this VAE .* works with 4"):
        VAEDecode().run(samples={"samples": torch.zeros(1, 16, 8, 8)}, vae=sd1_vae)
    with pytest.raises(ValueError, match="SD 1.x/2.x VAE but the latent comes from an SDXL model"):
        VAEDecode().run(samples={"samples": torch.zeros(1, 4, 8, 8), "family": "sdxl"}, vae=sd1_vae)
    vae_ops.check_family(sd1_vae, "sd2")  # SD 2.x shares SD 1.x's latent space
    with pytest.raises(ValueError, match="SDXL VAE"):
        vae_ops.check_family(xl_vae, "sd1", "model")
    unknown = Vae(vae=sd1_vae.vae, family="", scaling_factor=0.18215)
    vae_ops.check_family(unknown, "sdxl")  # nothing known, nothing claimed
    with pytest.raises(ValueError, match="checkpoint has no VAE"):
        VAEDecode().run(samples={"samples": torch.zeros(1, 4, 8, 8)}, vae=None)
    with pytest.raises(ValueError, match="smaller than 8x8"):
        VAEEncode().run(pixels=torch.zeros(1, 4, 4, 3), vae=sd1_vae)


@torch.no_grad()
def test_vae_encode_for_inpaint(sd1_vae):
    from nodes.sd_vae import VAEEncodeForInpaint

    img = torch.rand(1, 64, 72, 3, generator=torch.Generator().manual_seed(4))
    mask = torch.zeros(1, 32, 36)
    mask[:, 8:16, 10:20] = 1.0  # a block, at half resolution: resized to the image
    (latent,) = VAEEncodeForInpaint().run(pixels=img, vae=sd1_vae, mask=mask, grow_mask_by=6)
    grey = img.clone()
    grey[:, 16:32, 20:40, :] = 0.5
    (ref,) = VAEEncode().run(pixels=grey, vae=sd1_vae)
    assert torch.equal(latent["samples"], ref["samples"])
    nm = latent["noise_mask"]
    assert nm.shape == (1, 1, 64, 72) and set(nm.unique().tolist()) <= {0.0, 1.0}
    assert nm[0, 0, 16:32, 20:40].all() and nm.sum() > 16 * 20  # grown beyond the block
    # an even kernel (6) grows 2 cells before the block and 3 after it
    assert nm[0, 0, 14:35, 18:43].all() and nm.sum() == 21 * 25
    (plain,) = VAEEncodeForInpaint().run(pixels=img, vae=sd1_vae, mask=mask, grow_mask_by=0)
    assert plain["noise_mask"].sum() == 16 * 20

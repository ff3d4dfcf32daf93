"""The working-memory estimates the model manager makes room for, against what the real
architectures allocate (fake tensors through loom.runtime.footprint: shapes only, no compute)."""

from __future__ import annotations

import pytest

from bench.bench_working_memory import unet_case, vae_case
from loom.runtime import working_memory as wm


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_unet_estimate_covers_a_real_step_with_a_bounded_margin(family):
    side = 40  # 320² images: a few seconds on fake tensors
    measured = unet_case(family, side)
    estimate = wm.unet_bytes(family, (1, 4, side, side), sides=2, element_size=2) - wm._FLOOR
    assert measured > 0
    assert 1.2 * measured <= estimate <= 2.0 * measured, (family, measured, estimate)
    # without CFG one batch item; fp32 twice the bytes
    single = wm.unet_bytes(family, (1, 4, side, side), sides=1) - wm._FLOOR
    assert single == pytest.approx(estimate / 2, rel=1e-6)
    fp32 = wm.unet_bytes(family, (1, 4, side, side), sides=2, element_size=4) - wm._FLOOR
    assert fp32 == pytest.approx(2 * estimate, rel=1e-6)


@pytest.mark.parametrize("decode", [True, False], ids=["decode", "encode"])
def test_vae_estimate_covers_fp32_and_bf16(decode):
    side = 32
    for dtype, size in (("float32", 4), ("bfloat16", 2)):
        measured = vae_case("sd1", side, dtype, decode)
        estimate = (wm.vae_decode_bytes((1, 4, side, side), element_size=size) if decode
                    else wm.vae_encode_bytes((1, side * 8, side * 8, 3), element_size=size)) - wm._FLOOR
        assert 1.1 * measured <= estimate <= 2.0 * measured, (dtype, measured, estimate)


def test_samplers_declare_the_unet_its_controls_and_a_step_of_activations(sd1):
    from types import SimpleNamespace

    import torch

    from loom.nodeapi import RunContext
    from loom.runtime.model_manager import ModelManager
    from loom.runtime.sampling import DualCFG
    from nodes.custom_sampling import SamplerCustom, SamplerCustomAdvanced
    from nodes.sd_sampling import KSampler

    ctx = RunContext(models=ModelManager())  # the CPU: fp32, 4 bytes an element
    latent = {"samples": torch.zeros(1, 4, 64, 64)}
    shape = (1, 4, 64, 64)
    kw = {"model": sd1.model, "positive": sd1.pos, "negative": sd1.neg, "latent_image": latent}
    ksampler = KSampler(ctx).uses(cfg=7.0, **kw)
    assert ksampler.models == (sd1.model,)
    assert ksampler.working_bytes == wm.unet_bytes("sd1", shape, sides=2, element_size=4)
    assert SamplerCustom(ctx).uses(cfg=7.0, **kw) == ksampler
    no_cfg = KSampler(ctx).uses(cfg=1.0, **kw)
    assert no_cfg.working_bytes == wm.unet_bytes("sd1", shape, sides=1, element_size=4)
    # a ControlNet on the positive side: its module is placed with the UNet, its residuals counted
    net = torch.nn.Linear(2, 2)
    control = SimpleNamespace(previous=None, models=lambda: (net,))
    controlled = {**kw, "positive": [[sd1.pos[0][0], {**sd1.pos[0][1], "control": control}]]}
    with_control = KSampler(ctx).uses(cfg=7.0, **controlled)
    assert with_control.models == (sd1.model, net)
    assert with_control.working_bytes == wm.unet_bytes("sd1", shape, sides=2, element_size=4, controls=1)
    assert with_control.working_bytes > ksampler.working_bytes
    # a guider with three sides evaluates three batches a step
    dual = DualCFG(sd1.model, cond1=sd1.pos, cond2=sd1.other, negative=sd1.neg)
    advanced = SamplerCustomAdvanced(ctx).uses(guider=dual, latent_image=latent)
    assert advanced.working_bytes == wm.unet_bytes("sd1", shape, sides=3, element_size=4)
    assert SamplerCustomAdvanced(ctx).uses(guider=object(), latent_image=latent) is None  # a plugin's guider


def test_vae_nodes_declare_the_vae_and_whole_or_tiled_working_memory():
    import torch

    from loom.nodeapi import RunContext
    from loom.runtime.model_manager import ModelManager
    from nodes.inpaint import InpaintModelConditioning
    from nodes.sd_vae import VAEDecode, VAEDecodeTiled, VAEEncode, VAEEncodeForInpaint, VAEEncodeTiled

    ctx = RunContext(models=ModelManager())  # the CPU policy: an fp32 VAE
    vae = object()  # the declaration only passes the VAE on
    latent = {"samples": torch.zeros(2, 4, 128, 96)}
    pixels = torch.zeros(2, 1024, 768, 3)
    whole = VAEDecode(ctx).uses(samples=latent, vae=vae)
    assert whole.models == (vae,)
    assert whole.working_bytes == wm.vae_decode_bytes((2, 4, 128, 96), element_size=4)
    tiled = VAEDecodeTiled(ctx).uses(samples=latent, vae=vae, tile_size=512)
    assert tiled.working_bytes == wm.vae_decode_bytes((2, 4, 64, 64), element_size=4) < whole.working_bytes
    assert VAEDecodeTiled(ctx).uses(samples=latent, vae=vae, tile_size=4096) == whole  # one tile
    encode = VAEEncode(ctx).uses(pixels=pixels, vae=vae)
    assert encode.working_bytes == wm.vae_encode_bytes((2, 1024, 768, 3), element_size=4)
    assert VAEEncodeTiled(ctx).uses(pixels=pixels, vae=vae, tile_size=256).working_bytes == \
        wm.vae_encode_bytes((2, 256, 256, 3), element_size=4)
    assert VAEEncodeForInpaint(ctx).uses(pixels=pixels, vae=vae, mask=None) == encode
    assert InpaintModelConditioning(ctx).uses(vae=vae, pixels=pixels) == encode

"""The working-memory estimates the model manager makes room for, against what the real
architectures allocate (fake tensors under torch's MemTracker: shapes only, no compute)."""

from __future__ import annotations

import pytest

from bench.bench_working_memory import unet_case, vae_case
from loom.runtime import working_memory as wm


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_unet_estimate_covers_a_real_step_with_a_bounded_margin(family):
    side = 40  # 320² images: a few seconds on fake tensors
    measured = unet_case(family, side)
    estimate = wm.unet_bytes(family, (1, 4, side, side), cfg=True, element_size=2) - wm._FLOOR
    assert measured > 0
    assert 1.2 * measured <= estimate <= 2.0 * measured, (family, measured, estimate)
    # without CFG one batch item; fp32 twice the bytes
    single = wm.unet_bytes(family, (1, 4, side, side), cfg=False) - wm._FLOOR
    assert single == pytest.approx(estimate / 2, rel=1e-6)
    fp32 = wm.unet_bytes(family, (1, 4, side, side), cfg=True, element_size=4) - wm._FLOOR
    assert fp32 == pytest.approx(2 * estimate, rel=1e-6)


@pytest.mark.parametrize("decode", [True, False], ids=["decode", "encode"])
def test_vae_estimate_covers_fp32_and_bf16(decode):
    side = 32
    for dtype, size in (("float32", 4), ("bfloat16", 2)):
        measured = vae_case("sd1", side, dtype, decode)
        estimate = (wm.vae_decode_bytes((1, 4, side, side), element_size=size) if decode
                    else wm.vae_encode_bytes((1, side * 8, side * 8, 3), element_size=size)) - wm._FLOOR
        assert 1.1 * measured <= estimate <= 2.0 * measured, (dtype, measured, estimate)

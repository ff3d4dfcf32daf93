"""What only a CUDA GPU can show: the upscaler in fp16 on the device, its tile from the real free
VRAM, and a real out-of-memory (the process capped with ``set_per_process_memory_fraction``)
halving the tile. Skipped without CUDA; on a machine with a GPU:
``.venv/bin/python -m pytest tests/test_cuda_paths.py``. The CPU suite covers the same logic with
a mocked device (tests/test_upscale.py)."""

from __future__ import annotations

import pytest
import torch

from loom.runtime.devices import DevicePolicy
from loom.runtime.model_manager import ModelManager
from loom.runtime.upscale import model as upscale_model
from loom.runtime.upscale.model import run_image_model
from tests.test_upscale import image, loaded_model, rrdbnet_sd

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def cuda_manager() -> ModelManager:
    return ModelManager(policy=DevicePolicy.detect())


def test_upscaler_runs_in_fp16_on_cuda_and_matches_the_cpu(folders):
    on_cpu = loaded_model(folders, "cpu.safetensors", rrdbnet_sd())
    on_gpu = loaded_model(folders, "gpu.safetensors", rrdbnet_sd())
    img = image(96, 80)
    want = run_image_model(on_cpu, img, ModelManager(), tile=1024)
    manager = cuda_manager()
    assert manager.device.type == "cuda"
    got = run_image_model(on_gpu, img, manager)  # tile from the free VRAM
    assert next(on_gpu.module.parameters()).dtype == torch.float16
    assert got.dtype == torch.float32 and got.device.type == "cpu" and got.shape == want.shape
    assert float((got - want).abs().mean()) < 2e-3 and float((got - want).abs().max()) < 0.05
    free, _ = torch.cuda.mem_get_info()
    assert upscale_model.choose_tile(on_gpu, manager.device, torch.float16) >= 256 or free < 2 << 30


def test_a_real_out_of_memory_halves_the_tile_and_gives_the_same_picture(folders):
    model = loaded_model(folders, "wide.safetensors", rrdbnet_sd(blocks=1, nf=64))
    img = image(512, 512, seed=3)
    manager = cuda_manager()
    small = run_image_model(model, img, manager, tile=128)  # fits anywhere
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    # A 512² tile at ×4 holds 2048² × 64-channel fp16 maps (0.5 GB each, several alive): far over
    # 1.5 GB; 128² tiles need ~0.1 GB.
    torch.cuda.set_per_process_memory_fraction(1.5 * 2**30 / total)
    tiles: list[int] = []
    try:
        out = run_image_model(model, img, manager, tile=512,
                              progress=lambda done, n: tiles.append(n))
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    assert tiles and tiles[-1] > 1  # finished with more, smaller tiles than the one it began with
    assert float((out - small).abs().mean()) < 2e-3

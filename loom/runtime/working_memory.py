"""Estimates of the device memory a node's activations need, for ``Node.uses``.

They are deliberately rough and on the generous side: the manager uses them to decide how much
to evict or stream before a node runs, and an underestimate costs an out-of-memory retry, an
overestimate only a model moved to the CPU early. Per-pixel figures are for fp16 UNets with
SDPA attention (diffusers' default); fp32 doubles them.
TODO(measure): calibrate against torch.cuda.max_memory_allocated on a GPU (bench/bench_model_manager.py
prints peak VRAM per run).
"""

from __future__ import annotations

from collections.abc import Sequence

MB = 1 << 20
# Bytes of activations per latent pixel per batch item of one UNet forward, in fp16. SD 1.x/2.x
# attend at the full latent resolution (64² tokens at 512²); SDXL does not attend at its first
# level, so it needs less per pixel despite its width.
_UNET_PER_LATENT_PIXEL = {"sd1": 160 * 1024, "sd2": 160 * 1024, "sdxl": 100 * 1024}
# The VAE decoder's widest levels run at full image resolution with 128-512 channels, in fp32.
_VAE_DECODE_PER_PIXEL = 1600
_VAE_ENCODE_PER_PIXEL = 1200
_FLOOR = 64 * MB


def unet_bytes(
    family: str | None, latent_shape: Sequence[int], *, cfg: bool = True, element_size: int = 2
) -> int:
    """One sampling step: ``latent_shape`` is ``[B, C, H, W]``; CFG doubles the batch."""
    b, h, w = _bhw(latent_shape)
    per = _UNET_PER_LATENT_PIXEL.get(family or "", _UNET_PER_LATENT_PIXEL["sd1"])
    return _FLOOR + (2 if cfg else 1) * b * h * w * per * element_size // 2


def vae_decode_bytes(latent_shape: Sequence[int], *, scale: int = 8, batch: int = 4) -> int:
    b, h, w = _bhw(latent_shape)
    return _FLOOR + min(b, batch) * (h * scale) * (w * scale) * _VAE_DECODE_PER_PIXEL


def vae_encode_bytes(image_shape: Sequence[int], *, batch: int = 4) -> int:
    """``image_shape`` is an IMAGE's ``[B, H, W, C]``."""
    b, h, w = (image_shape[0], image_shape[1], image_shape[2]) if len(image_shape) >= 3 else (1, 0, 0)
    return _FLOOR + min(b, batch) * h * w * _VAE_ENCODE_PER_PIXEL


def text_encoder_bytes() -> int:
    return _FLOOR  # 77-token chunks: small next to the weights


def _bhw(shape: Sequence[int]) -> tuple[int, int, int]:
    if len(shape) < 4:
        return 1, 0, 0
    return int(shape[0]), int(shape[-2]), int(shape[-1])

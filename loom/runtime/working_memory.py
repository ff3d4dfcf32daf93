"""Estimates of the device memory a node's activations need, for ``Node.uses``.

The manager uses them to decide how much to evict or stream before a node runs: an
underestimate costs an out-of-memory retry (the VAE then tiles), an overestimate a model moved
off the GPU, or streamed, when it would have fitted. The per-pixel figures are measured
(``bench/bench_working_memory.py``: the full SD 1.5 / 2.1 / SDXL architectures on fake tensors,
the peak of live activation bytes, attention as one SDPA call as with flash / memory-efficient
attention on CUDA), times a margin for kernel workspaces and the caching allocator's slack.
They scale with the element size (fp32 doubles them).
"""

from __future__ import annotations

from collections.abc import Sequence

MB = 1 << 20
MARGIN = 1.5  # workspaces (cuDNN, matmul) and allocator slack on top of the live tensors
# Peak activation bytes of one UNet forward per latent pixel per batch item, per byte of the
# element size (measured: SD 1.x/2.x 16.7 kB and SDXL 10.2 kB in fp16, the same at 512², 768²
# and 1024²; SDXL does not attend at its first level, so it needs less despite its width).
_UNET_PER_LATENT_PIXEL = {"sd1": 8_400, "sd2": 8_400, "sdxl": 5_100}
# What each ControlNet's output adds while the UNet runs (its down and middle residuals; its own
# forward peaks about as high as the UNet's, before the UNet starts): measured 3.3 kB per
# latent pixel per batch item in fp16, for the SD 1.5 and SDXL ControlNets alike.
_CONTROL_RESIDUALS_PER_LATENT_PIXEL = 1_640
# VAE (SD and SDXL share the architecture), per image pixel per byte of the element size:
# measured 768 (decode) and 643 (encode) — the decoder's widest levels run at full resolution.
_VAE_DECODE_PER_PIXEL = 768
_VAE_ENCODE_PER_PIXEL = 643
_FLOOR = 64 * MB


def unet_bytes(
    family: str | None, latent_shape: Sequence[int], *, sides: int = 2, element_size: int = 2,
    controls: int = 0,
) -> int:
    """One sampling step: ``latent_shape`` is ``[B, C, H, W]``; each of the ``sides``
    conditionings (2 with CFG, 1 without) is a batch; ``controls`` ControlNets / T2I-Adapters
    add their residuals."""
    b, h, w = _bhw(latent_shape)
    per = _UNET_PER_LATENT_PIXEL.get(family or "", _UNET_PER_LATENT_PIXEL["sd1"])
    per += controls * _CONTROL_RESIDUALS_PER_LATENT_PIXEL
    return _FLOOR + int(sides * b * h * w * per * element_size * MARGIN)


def vae_decode_bytes(latent_shape: Sequence[int], *, scale: int = 8, batch: int = 4,
                     element_size: int = 4) -> int:
    """Decoding ``latent_shape`` (``[B, C, H, W]``), ``batch`` images at a time."""
    b, h, w = _bhw(latent_shape)
    pixels = min(b, batch) * (h * scale) * (w * scale)
    return _FLOOR + int(pixels * _VAE_DECODE_PER_PIXEL * element_size * MARGIN)


def vae_encode_bytes(image_shape: Sequence[int], *, batch: int = 4, element_size: int = 4) -> int:
    """Encoding an IMAGE of ``image_shape`` (``[B, H, W, C]``), ``batch`` images at a time."""
    b, h, w = (image_shape[0], image_shape[1], image_shape[2]) if len(image_shape) >= 3 else (1, 0, 0)
    return _FLOOR + int(min(b, batch) * h * w * _VAE_ENCODE_PER_PIXEL * element_size * MARGIN)


def text_encoder_bytes() -> int:
    return _FLOOR  # 77-token chunks: small next to the weights


def _bhw(shape: Sequence[int]) -> tuple[int, int, int]:
    if len(shape) < 4:
        return 1, 0, 0
    return int(shape[0]), int(shape[-2]), int(shape[-1])

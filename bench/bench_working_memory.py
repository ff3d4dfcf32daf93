"""Peak activation memory of one UNet step and one VAE decode/encode, against the estimates the
model manager makes room for (``loom.runtime.working_memory``).

The full SD 1.5, SD 2.1 and SDXL architectures run on *fake* tensors (shapes and dtypes only,
no compute: SDXL at 1024² takes a second on a CPU) through ``loom.runtime.footprint``: the peak
of live activation bytes, as a GPU's ``max_memory_allocated`` would see them less the weights,
kernel workspaces and the caching allocator's slack (the estimates add a margin for those).
Attention is one SDPA call, as with flash / memory-efficient attention on CUDA. On a CUDA
machine, ``--cuda`` also measures ``torch.cuda.max_memory_allocated`` with real tensors.

    .venv/bin/python bench/bench_working_memory.py [--sides 64,96,128] [--cuda]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from loom.runtime import torchvision_fix  # noqa: E402,F401  (before diffusers imports torchvision)
from loom.runtime.footprint import fake_peak  # noqa: E402

MiB = 1 << 20
UNETS = {"sd1": "sd15_unet", "sd2": "sd21_unet", "sdxl": "sdxl_unet"}
VAE_DTYPES = ("float32", "bfloat16")


def _config(name: str) -> dict:
    from loom.runtime.sd.shipped import base_config

    return {k: v for k, v in base_config(name).items() if not k.startswith("_")}


def _unet_inputs(family: str, cfg: dict, side: int, batch: int, device=None):
    import torch

    kw = {"device": device}
    x = torch.randn(batch, 4, side, side, **kw)
    context = torch.randn(batch, 77, cfg["cross_attention_dim"], **kw)
    added = None
    if family == "sdxl":
        added = {"text_embeds": torch.randn(batch, 1280, **kw), "time_ids": torch.randn(batch, 6, **kw)}
    return x, torch.tensor([500.0], **kw), context, added


def _built_in(dtype, make):
    """``make()`` with its weights created in ``dtype`` (converting fake weights afterwards is
    not possible), in eval mode."""
    import torch

    torch.set_default_dtype(dtype)
    try:
        return make().eval()
    finally:
        torch.set_default_dtype(torch.float32)


def unet_case(family: str, side: int, dtype_name: str = "float16") -> int:
    import torch
    from diffusers import UNet2DConditionModel

    cfg = _config(UNETS[family])
    dtype = getattr(torch, dtype_name)

    def build():
        return _built_in(dtype, lambda: UNet2DConditionModel(**cfg))

    def run(unet):
        x, t, context, added = _unet_inputs(family, cfg, side, batch=2)  # batch 2: CFG
        unet(x.to(dtype), t, context.to(dtype),
             added_cond_kwargs={k: v.to(dtype) for k, v in added.items()} if added else None)

    return fake_peak(build, run)


def vae_case(family: str, side: int, dtype_name: str, decode: bool) -> int:
    import torch
    from diffusers import AutoencoderKL

    cfg = _config("sdxl_vae" if family == "sdxl" else "sd15_vae")
    dtype = getattr(torch, dtype_name)

    def build():
        return _built_in(dtype, lambda: AutoencoderKL(**cfg))

    def run(vae):
        if decode:
            vae.decode(torch.randn(1, 4, side, side).to(dtype))
        else:
            vae.encode(torch.randn(1, 3, side * 8, side * 8).to(dtype))

    return fake_peak(build, run)


def cuda_unet_peak(family: str, side: int) -> int:
    """``max_memory_allocated`` during one real fp16 UNet step, less what was there before."""
    import torch
    from diffusers import UNet2DConditionModel

    cfg = _config(UNETS[family])
    unet = UNet2DConditionModel(**cfg).to("cuda", torch.float16).eval()
    x, t, context, added = _unet_inputs(family, cfg, side, batch=2, device="cuda")
    half = {k: v.half() for k, v in added.items()} if added else None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    with torch.inference_mode():
        unet(x.half(), t, context.half(), added_cond_kwargs=half)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del unet
    torch.cuda.empty_cache()
    return peak


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sides", default="64,96,128", help="latent sides (×8 = image side): 64 is 512²")
    p.add_argument("--families", default="sd1,sd2,sdxl", help="UNet architectures to measure")
    p.add_argument("--cuda", action="store_true", help="also measure real fp16 UNet steps on CUDA")
    args = p.parse_args()
    import torch

    from loom.runtime import working_memory as wm

    if args.cuda and not torch.cuda.is_available():
        print("--cuda: no CUDA device here; fake-tensor figures only")
        args.cuda = False

    sides = [int(s) for s in args.sides.split(",")]
    print("UNet step, CFG (batch 2), fp16: peak activations (fake tensors) vs Loom's estimate")
    print(f"  {'family':6} {'image':>6} {'measured MiB':>13} {'per latent px':>14} "
          f"{'estimate MiB':>13} {'est/measured':>13}" + ("  cuda MiB" if args.cuda else ""))
    for family in args.families.split(","):
        for side in sides:
            got = unet_case(family, side)
            est = wm.unet_bytes(family, (1, 4, side, side), sides=2)
            line = (f"  {family:6} {side * 8:>5}² {got / MiB:>13.0f} {got / (2 * side * side):>12.0f} B"
                    f" {est / MiB:>13.0f} {est / max(got, 1):>13.2f}")
            if args.cuda:
                line += f"  {cuda_unet_peak(family, side) / MiB:>8.0f}"
            print(line, flush=True)
    print("\nVAE, one image: peak activations (fake tensors) vs Loom's estimate")
    print(f"  {'what':22} {'image':>6} {'measured MiB':>13} {'per image px':>13} {'estimate MiB':>13}")
    for dtype_name in VAE_DTYPES:
        for decode in (True, False):
            for side in sides:
                got = vae_case("sd1", side, dtype_name, decode)
                size = 4 if dtype_name == "float32" else 2
                est = (wm.vae_decode_bytes((1, 4, side, side), element_size=size) if decode
                       else wm.vae_encode_bytes((1, side * 8, side * 8, 3), element_size=size))
                what = f"{'decode' if decode else 'encode'} {dtype_name}"
                print(f"  {what:22} {side * 8:>5}² {got / MiB:>13.0f} {got / (64 * side * side):>11.0f} B"
                      f" {est / MiB:>13.0f}", flush=True)


if __name__ == "__main__":
    main()

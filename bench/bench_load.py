"""Checkpoint load time against the time to read the file's bytes.

Writes a random SD 1.x-shaped checkpoint in the original single-file layout (fp16, like the
files users have): SD 1.x's CLIP text encoder and VAE at full size and a UNet with SD 1.x's
block layout at ``--unet-channels`` (default 160,320,640,640: a quarter of SD 1.5's UNet, so
the file is ~0.7 GB and fits this machine; ``320,640,1280,1280`` is the full 2 GB file). Then,
``--repeat`` times, alternating:

* **read**: the file's bytes into memory (``f.readinto``), the floor a loader cannot beat;
* **safetensors**: ``safetensors.torch.load_file`` (bytes to tensors);
* **loom**: ``loom.runtime.sd.loader.load_checkpoint`` (tensors, detection, conversion to the
  diffusers layout, modules built on the meta device and given the file's tensors);

and the same for a tiny test checkpoint (the "few-MB file" case: fixed costs). The page cache
is warm after the first read (dropping it needs root), so "read" is memory bandwidth plus
syscalls; a cold first load adds the disk's time to every column alike. Prints medians.

    nice -n 10 .venv/bin/python bench/bench_load.py [--repeat 5] [--unet-channels 160,320,640,640]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from loom.runtime import torchvision_fix  # noqa: E402,F401  (before diffusers imports torchvision)


def write_checkpoint(path: Path, channels: list[int]) -> None:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    from loom.runtime.sd.keymap import clip_to_ldm, unet_to_ldm, vae_to_ldm
    from loom.runtime.sd.shipped import base_config

    torch.manual_seed(0)
    unet_cfg = base_config("sd15_unet")
    unet_cfg["block_out_channels"] = channels
    unet_cfg = {k: v for k, v in unet_cfg.items() if not k.startswith("_")}
    vae_cfg = {k: v for k, v in base_config("sd15_vae").items() if not k.startswith("_")}
    unet = UNet2DConditionModel(**unet_cfg)
    vae = AutoencoderKL(**vae_cfg)
    text = CLIPTextModel(CLIPTextConfig(**base_config("sd15_text_encoder")))
    sd = {}
    sd.update(unet_to_ldm(unet.state_dict(), unet_cfg))
    sd.update(vae_to_ldm(vae.state_dict(), vae_cfg))
    te = {k: v for k, v in text.state_dict().items() if not k.endswith("position_ids")}
    sd.update(clip_to_ldm(te, "cond_stage_model.transformer."))
    sd = {k: v.detach().to(torch.float16).contiguous() for k, v in sd.items()}
    save_file(sd, str(path), metadata={"format": "pt"})


def read_bytes(path: Path) -> None:
    buf = bytearray(path.stat().st_size)
    with open(path, "rb", buffering=0) as f:
        view = memoryview(buf)
        while view:
            n = f.readinto(view)
            if not n:
                break
            view = view[n:]


def time_it(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(path: Path, repeat: int, policy) -> dict[str, float]:
    import gc

    from safetensors.torch import load_file

    from loom.runtime.sd.loader import load_checkpoint

    times: dict[str, list[float]] = {"read": [], "safetensors": [], "loom": []}
    for _ in range(repeat):
        times["read"].append(time_it(lambda: read_bytes(path)))
        times["safetensors"].append(time_it(lambda: load_file(str(path))))
        times["loom"].append(time_it(lambda: load_checkpoint(path, policy=policy)))
        gc.collect()
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5, help="loads of the file (median)")
    p.add_argument("--unet-channels", default="160,320,640,640",
                   help="block_out_channels of the written test file's UNet (SD 1.5: 320,640,1280,1280)")
    args = p.parse_args()

    import logging

    import torch

    from loom.runtime.devices import DevicePolicy
    from loom.runtime.sd.loader import preload

    logging.basicConfig(level=logging.WARNING)
    preload()
    policy = DevicePolicy(torch.device("cpu"), torch.float16, torch.float32)
    with tempfile.TemporaryDirectory() as tmp:
        mid = Path(tmp) / "mid_sd1.safetensors"
        t0 = time.perf_counter()
        write_checkpoint(mid, [int(c) for c in args.unet_channels.split(",")])
        print(f"wrote {mid.name}: {mid.stat().st_size / 2**20:.0f} MB in {time.perf_counter() - t0:.1f} s")
        from sd_fixtures import save_single_file

        tiny = save_single_file("sd1", Path(tmp) / "tiny_sd1.safetensors")
        print(f"wrote {tiny.name}: {tiny.stat().st_size / 2**20:.1f} MB")
        print(
            f"\nmedians of {args.repeat} (warm page cache), seconds; torch threads {torch.get_num_threads()}"
        )
        print(f"{'file':<22}{'read bytes':>12}{'safetensors':>13}{'loom load':>11}{'loom/read':>11}")
        for path in (mid, tiny):
            r = bench(path, args.repeat, policy)
            print(
                f"{path.name:<22}{r['read']:>12.3f}{r['safetensors']:>13.3f}{r['loom']:>11.3f}"
                f"{r['loom'] / r['read']:>11.1f}"
            )


if __name__ == "__main__":
    main()

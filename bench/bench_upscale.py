"""Upscale a big image 4× with the bundled real Real-ESRGAN models, tiled: time and peak RSS.

Each model runs in a fresh child process (so its peak resident memory is its own), on a
``--size``² crop of scikit-image's astronaut photo resized to that size, through the same code
as the ImageUpscaleWithModel node (tile size chosen from free memory unless ``--tile``).
Prints, per model: the tile size, the number of tiles, seconds and the child's peak RSS.

    .venv/bin/python bench/bench_upscale.py [--size 1024] [--models x4plus,compact] [--tile N]
                                            [--threads N]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MODELS = {"x4plus": "RealESRGAN_x4plus.safetensors",
          "anime": "RealESRGAN_x4plus_anime_6B.safetensors",
          "compact": "realesr-animevideov3-x4.safetensors"}


def child(name: str, size: int, tile: int | None, threads: int | None) -> None:
    import torch
    from skimage import data

    from loom.runtime.model_manager import ModelManager
    from loom.runtime.upscale.model import choose_tile, load_image_model, run_image_model

    if threads:
        torch.set_num_threads(threads)
    photo = torch.from_numpy(data.astronaut()).float().div(255)[None].movedim(-1, 1)
    img = torch.nn.functional.interpolate(photo, size=(size, size), mode="bicubic").clamp(0, 1)
    img = img.movedim(1, -1).contiguous()
    manager = ModelManager()
    model = load_image_model(REPO / "models" / "upscale_models" / MODELS[name], purposes=("SR",),
                             what="upscale model")
    tile = tile or choose_tile(model, manager.device, torch.float32)
    tiles = []
    start = time.perf_counter()
    out = run_image_model(model, img, manager, tile=tile, progress=lambda d, t: tiles.append(t))
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"model": name, "in": size, "out": list(out.shape[1:3]), "tile": tile,
                      "tiles": tiles[-1], "seconds": round(seconds, 1),
                      "peak_rss_mb": round(peak_mb)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024, help="input side in pixels (default 1024)")
    parser.add_argument("--models", default="x4plus,compact",
                        help=f"comma-separated, of {', '.join(MODELS)} (default x4plus,compact)")
    parser.add_argument("--tile", type=int, default=None, help="tile side (default: from free memory)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.size, args.tile, args.threads)
        return
    for name in args.models.split(","):
        cmd = [sys.executable, __file__, "--child", name, "--size", str(args.size)]
        if args.tile:
            cmd += ["--tile", str(args.tile)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()

"""Loom txt2img graph vs the equivalent diffusers pipeline, same model, same work.

Builds a mid-sized SD 1.x-shaped model with random weights (UNet at reduced width, default
block_out_channels 128,256,512,512 with SD 1.x's block layout; a small CLIP text encoder and VAE),
saves it as a diffusers folder under a temporary ``models/diffusers/``, and then alternates:

* **Loom**: the prompt DiffusersLoader -> CLIPTextEncode x2 -> EmptyLatentImage -> KSampler ->
  VAEDecode -> (capture) is validated and executed by the engine's ``Executor``. The loader's
  output stays in the executor's cache (models are loaded once, as in a running server); the
  prompts and the seed change every run, so text encoding, sampling and decoding all run.
* **diffusers**: a ``StableDiffusionPipeline`` built from the very modules Loom's loader made
  (same tensors in memory, so only the orchestration differs; ``--separate-weights`` uses
  ``from_pretrained(folder)`` instead) called with the same prompts, seed
  (``generator=torch.Generator("cpu").manual_seed(seed)``), steps, cfg and an
  ``EulerDiscreteScheduler`` (KSampler's ``euler``/``normal``), ``output_type="np"``.

Both produce the same pixels (checked each run). Prints per-run wall-clock and process CPU
times, their medians and the ratios Loom/diffusers (target <= 1.05 on CPU). On a machine shared
with other work the wall-clock figures swing with the load; the CPU-time ratio (run with
``--threads 1`` for it to mean "work done") is the steadier of the two.

    .venv/bin/python bench/bench_sd.py [--size 256] [--steps 10] [--repeat 7] [--cfg 7.5]
                                       [--channels 128,256,512,512] [--threads N]
                                       [--separate-weights]
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
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from loom.runtime import torchvision_fix  # noqa: E402

torchvision_fix.install()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from loom.engine.executor import Executor  # noqa: E402
from loom.engine.validate import validate_prompt  # noqa: E402
from loom.nodeapi import NodeRegistry, RunContext  # noqa: E402
from loom.nodeapi.capture import capture_node  # noqa: E402
from loom.nodeapi.loader import load_packs  # noqa: E402
from loom.paths import Folders  # noqa: E402

SD15_SCHEDULER = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
                  "num_train_timesteps": 1000, "steps_offset": 1, "clip_sample": False,
                  "set_alpha_to_one": False, "prediction_type": "epsilon"}


# Keeps the decoded images (instead of writing PNGs).
BenchCapture = capture_node("BenchCapture", always_run=False, images="IMAGE")


def build_model(folder: Path, channels: tuple[int, ...], text_width: int) -> None:
    """An SD 1.x-shaped pipeline with random weights, saved as a diffusers folder."""
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from loom.runtime.sd.shipped import clip_tokenizer

    torch.manual_seed(0)
    levels = len(channels)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=channels, attention_head_dim=8, cross_attention_dim=text_width,
        down_block_types=("CrossAttnDownBlock2D",) * (levels - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (levels - 1))
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
                        block_out_channels=(32, 64, 128, 128), norm_num_groups=32,
                        down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.18215)
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=text_width, intermediate_size=4 * text_width,
        num_hidden_layers=6, num_attention_heads=8, max_position_embeddings=77,
        hidden_act="quick_gelu", projection_dim=text_width, bos_token_id=49406,
        eos_token_id=49407, pad_token_id=1))
    pipe = StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text, tokenizer=clip_tokenizer("clip_l"),
        scheduler=EulerDiscreteScheduler.from_config(SD15_SCHEDULER), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    params = sum(p.numel() for p in unet.parameters())
    print(f"model: UNet {params / 1e6:.0f}M parameters, block_out_channels {channels}, "
          f"text width {text_width}")


def loom_prompt(args, run: int) -> dict:
    return {
        "1": {"class_type": "DiffusersLoader", "inputs": {"model_path": "bench-sd"}},
        "2": {"class_type": "CLIPTextEncode",
              "inputs": {"text": f"a photo of a cat on a sofa, take {run}", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode",
              "inputs": {"text": f"blurry, low quality {run}", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage",
              "inputs": {"width": args.size, "height": args.size, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 1000 + run, "steps": args.steps, "cfg": args.cfg,
            "sampler_name": "euler", "scheduler": "normal", "positive": ["2", 0],
            "negative": ["3", 0], "latent_image": ["4", 0], "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "BenchCapture", "inputs": {"images": ["6", 0]}},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256, metavar="PX", help="image width and height (pixels)")
    ap.add_argument("--steps", type=int, default=10, help="sampling steps per run")
    ap.add_argument("--cfg", type=float, default=7.5, help="guidance scale (both runs)")
    ap.add_argument("--repeat", type=int, default=7, help="timed runs of each (after a warm-up)")
    ap.add_argument("--channels", default="128,256,512,512", help="UNet block_out_channels")
    ap.add_argument("--text-width", type=int, default=512, help="text encoder hidden size")
    ap.add_argument("--threads", type=int, default=0, metavar="N", help="torch threads (0: torch's default)")
    ap.add_argument("--separate-weights", dest="shared_modules", action="store_false",
                    help="let diffusers load its own copy of the weights (default: the pipeline "
                         "is built from the very modules Loom loaded)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU fp32; "
          f"{args.size}x{args.size}, {args.steps} steps euler/normal, cfg {args.cfg}")

    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    with tempfile.TemporaryDirectory(prefix="loom-bench-sd-") as tmp:
        folders = Folders.under(Path(tmp))
        folders.create()
        folder = folders.model_folder("diffusers") / "bench-sd"
        build_model(folder, tuple(int(c) for c in args.channels.split(",")), args.text_width)

        registry = NodeRegistry()
        load_packs(registry, REPO / "nodes", builtin=True)
        registry.register("BenchCapture", BenchCapture, "bench")
        executor = Executor(paths=folders)
        ctx = RunContext(paths=folders)

        pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        if args.shared_modules:
            # Same tensors on both sides: the modules Loom's loader made (kept in the executor's
            # cache), so only the orchestration differs, not where the weights sit in memory.
            warm = loom_prompt(args, -2)
            executor.execute(validate_prompt(warm, registry, ctx), "bench-load")
            BenchCapture.seen.clear()
            sig = executor.signatures(validate_prompt(warm, registry, ctx), ["1"])["1"]
            model, clip, vae = executor.cache.get(sig).outputs
            pipe = StableDiffusionPipeline(
                unet=model.unet, vae=vae.vae, text_encoder=clip.encoders[0],
                tokenizer=clip.tokenizers[0], scheduler=pipe.scheduler, safety_checker=None,
                feature_extractor=None, requires_safety_checker=False)
            pipe.set_progress_bar_config(disable=True)
        print("weights:", "shared (Loom's modules in both)" if args.shared_modules
              else "loaded separately by each")

        def run_loom(run: int):
            start, cpu = time.perf_counter(), time.process_time()
            prompt = validate_prompt(loom_prompt(args, run), registry, ctx)
            result = executor.execute(prompt, f"bench-{run}")
            elapsed = (time.perf_counter() - start, time.process_time() - cpu)
            assert result.status == "success", result.error
            return elapsed, BenchCapture.take(f"bench-{run}")["images"]

        def run_diffusers(run: int):
            start, cpu = time.perf_counter(), time.process_time()
            out = pipe(prompt=f"a photo of a cat on a sofa, take {run}",
                       negative_prompt=f"blurry, low quality {run}", height=args.size,
                       width=args.size, num_inference_steps=args.steps, guidance_scale=args.cfg,
                       generator=torch.Generator("cpu").manual_seed(1000 + run),
                       output_type="np").images
            elapsed = (time.perf_counter() - start, time.process_time() - cpu)
            return elapsed, torch.from_numpy(np.asarray(out))

        # warm-up (loads the model into Loom's cache; first-call allocations on both sides)
        run_loom(-1)
        run_diffusers(-1)
        loom_times, diffusers_times = [], []
        for run in range(args.repeat):
            # alternate which goes first, so slow drifts of the machine hit both equally
            order = (("loom", run_loom), ("diffusers", run_diffusers))
            if run % 2:
                order = order[::-1]
            images = {}
            for name, fn in order:
                elapsed, images[name] = fn(run)
                (loom_times if name == "loom" else diffusers_times).append(elapsed)
            diff = (images["loom"] - images["diffusers"]).abs().max().item()
            (lw, lc), (dw, dc) = loom_times[-1], diffusers_times[-1]
            print(f"run {run}: loom {lw:.3f} s (cpu {lc:.3f} s), diffusers {dw:.3f} s "
                  f"(cpu {dc:.3f} s), max|Δpixel| {diff:.2e}", flush=True)
        for k, what in ((0, "wall-clock"), (1, "process CPU")):
            loom_med = statistics.median(t[k] for t in loom_times)
            diff_med = statistics.median(t[k] for t in diffusers_times)
            print(f"median {what}: loom {loom_med:.3f} s, diffusers {diff_med:.3f} s, "
                  f"ratio loom/diffusers = {loom_med / diff_med:.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()

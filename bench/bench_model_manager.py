"""Sampling speed and peak device memory per VRAM mode, against the plain diffusers pipeline.

Random weights (speed does not depend on their values) in the full SD 1.5 and SDXL
architectures, fp16, PyTorch SDPA attention (diffusers' default). For each case:

* **diffusers**: ``StableDiffusion(XL)Pipeline`` with every component on the GPU, prompt
  embeddings given, ``output_type="latent"`` (the UNet loop only), Euler;
* **loom <mode>**: Loom's KSampler loop (``loom.runtime.sampling.sample``, euler/normal, same
  steps and CFG) through a :class:`~loom.runtime.model_manager.ModelManager` in that mode; the
  UNet starts on the CPU as after loading, one warm-up run, then the timed runs;
* **capped** runs: the process limited with ``torch.cuda.set_per_process_memory_fraction`` (SDXL
  1024² at 4 GB, SD 1.5 512² at 2 GB) in ``low`` mode with the manager's budget set to the cap.

Prints it/s (steps / wall time of the sampling call, after ``cuda.synchronize``) and peak
allocated VRAM (``torch.cuda.max_memory_allocated``) per row. Targets (issue 12): high ≥
diffusers' it/s; the capped SDXL run completes at ≤ 3× the high-mode time.

Without CUDA it runs a reduced CPU variant (a small SD 1.x-shaped UNet, 64², 4 steps): the
modes then run on a simulated device whose budget is a fraction of the UNet, so streaming's
overhead (hooks, copies) shows; "peak" is then the manager's accounted bytes, not VRAM.

    .venv/bin/python bench/bench_model_manager.py [--steps 20] [--repeat 2]
        [--cases sd15-512,sd15-1024,sdxl-1024,sdxl-512] [--modes high,normal,low,none]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from loom.runtime import torchvision_fix  # noqa: E402,F401  (before diffusers imports torchvision)

GiB = 1 << 30
CAPS = {"sdxl-1024": 4 * GiB, "sd15-512": 2 * GiB}


def _cfg(name: str, **changes) -> dict:
    from loom.runtime.sd.shipped import base_config

    cfg = {k: v for k, v in base_config(name).items() if not k.startswith("_")}
    cfg.update(changes)
    return cfg


def build(family: str, dtype, small: bool = False) -> dict:
    """Random-weight components (on the CPU) of the full architecture (``small``: CPU variant)."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    if family == "sdxl":
        unet_cfg = _cfg("sdxl_unet")
        te = CLIPTextModel(CLIPTextConfig(**_cfg("sdxl_text_encoder")))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(**_cfg("sdxl_text_encoder_2")))
        sched = _cfg("sdxl_scheduler")
    else:
        unet_cfg = _cfg("sd15_unet")
        if small:
            unet_cfg.update(block_out_channels=[64, 128, 256, 256], layers_per_block=1)
        te = CLIPTextModel(CLIPTextConfig(**_cfg("sd15_text_encoder")))
        te2 = None
        sched = _cfg("sd15_scheduler")
    unet = UNet2DConditionModel(**unet_cfg).to(dtype).eval().requires_grad_(False)
    vae = AutoencoderKL(**_cfg(f"{'sdxl' if family == 'sdxl' else 'sd15'}_vae")).to(dtype).eval()
    return {
        "unet": unet,
        "vae": vae,
        "te": te.to(dtype).eval(),
        "te2": te2.to(dtype).eval() if te2 is not None else None,
        "scheduler": EulerDiscreteScheduler.from_config(sched),
        "sched_cfg": sched,
    }


def conditioning(family: str, size: int, device, dtype):
    import torch

    g = torch.Generator("cpu").manual_seed(1)
    width = 2048 if family == "sdxl" else 768
    cond = torch.randn(1, 77, width, generator=g).to(device, dtype)
    uncond = torch.randn(1, 77, width, generator=g).to(device, dtype)
    extra = {}
    if family == "sdxl":
        extra = {
            "pooled": torch.randn(1, 1280, generator=g).to(device, dtype),
            "pooled_neg": torch.randn(1, 1280, generator=g).to(device, dtype),
        }
    return cond, uncond, extra


def run_diffusers(family, parts, size, steps, device, dtype, repeat) -> tuple[float, int]:
    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from loom.runtime.sd.shipped import clip_tokenizer

    if family == "sdxl":
        pipe = StableDiffusionXLPipeline(
            vae=parts["vae"],
            text_encoder=parts["te"],
            text_encoder_2=parts["te2"],
            tokenizer=clip_tokenizer("clip_l"),
            tokenizer_2=clip_tokenizer("open_clip"),
            unet=parts["unet"],
            scheduler=parts["scheduler"],
        )
    else:
        pipe = StableDiffusionPipeline(
            vae=parts["vae"],
            text_encoder=parts["te"],
            tokenizer=clip_tokenizer("clip_l"),
            unet=parts["unet"],
            scheduler=parts["scheduler"],
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    cond, uncond, extra = conditioning(family, size, device, dtype)
    kwargs = {"prompt_embeds": cond, "negative_prompt_embeds": uncond}
    if family == "sdxl":
        kwargs.update(pooled_prompt_embeds=extra["pooled"], negative_pooled_prompt_embeds=extra["pooled_neg"])

    def once():
        return pipe(
            height=size,
            width=size,
            num_inference_steps=steps,
            guidance_scale=7.5,
            output_type="latent",
            generator=torch.Generator("cpu").manual_seed(0),
            **kwargs,
        )

    once()  # warm-up
    best = _timed(once, device, repeat)
    peak = _peak(device)
    pipe.to("cpu")
    _empty(device)
    return steps / best, peak


def run_loom(
    family, parts, size, steps, device, dtype, repeat, mode, budget=None, simulated=False
) -> tuple[float, int]:
    import torch

    from loom.runtime.devices import DevicePolicy
    from loom.runtime.model_manager import ModelManager
    from loom.runtime.sampling import sample
    from loom.runtime.sd.types import DiffusionModel
    from loom.runtime.vram import SimulatedMemory

    unet = parts["unet"].to("cpu")
    policy = DevicePolicy(torch.device(device), dtype, dtype)
    memory = SimulatedMemory(budget) if simulated else None
    manager = ModelManager(
        policy,
        mode=mode,
        device_budget=budget,
        memory=memory,
        reserve_bytes=0 if budget is not None else None,
    )
    model = DiffusionModel(
        unet=unet,
        family=family,
        prediction_type="epsilon",
        scheduler_config=parts["sched_cfg"],
        latent_scaling_factor=0.13025 if family == "sdxl" else 0.18215,
    )
    cond, uncond, extra = conditioning(family, size, "cpu", dtype)
    pos_d, neg_d = {}, {}
    if family == "sdxl":
        sizes = {
            "width": size,
            "height": size,
            "target_width": size,
            "target_height": size,
            "crop_w": 0,
            "crop_h": 0,
        }
        pos_d = {"pooled_output": extra["pooled"], **sizes}
        neg_d = {"pooled_output": extra["pooled_neg"], **sizes}
    latent = {"samples": torch.zeros(1, 4, size // 8, size // 8)}

    def once():
        return sample(
            model,
            [[cond, pos_d]],
            [[uncond, neg_d]],
            latent,
            seed=0,
            steps=steps,
            cfg=7.5,
            sampler_name="euler",
            scheduler="normal",
            models=manager,
        )

    once()  # warm-up: the first placement (and streaming hooks) happen here
    best = _timed(once, device, repeat)
    peak = _peak(device) if not simulated else manager.peak_accounted
    manager.free()
    for m in list(manager.resident()):
        m.to("cpu")
    _empty(device)
    return steps / best, peak


def _timed(fn, device, repeat) -> float:
    import torch

    best = float("inf")
    for _ in range(repeat):
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def _peak(device) -> int:
    import torch

    return torch.cuda.max_memory_allocated() if device == "cuda" else 0


def _empty(device) -> None:
    import gc

    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None,
                   help="sampling steps per run (default: 20 on CUDA, 4 in the CPU variant)")
    p.add_argument("--repeat", type=int, default=2, help="timed runs per row (after one warm-up)")
    p.add_argument("--cases", default="sd15-512,sd15-1024,sdxl-1024,sdxl-512",
                   help="comma-separated architecture-resolution cases (CUDA only)")
    p.add_argument("--modes", default="high,normal,low,none",
                   help="comma-separated --vram modes to run Loom's loop in")
    p.add_argument("--no-caps", action="store_true", help="skip the capped low-mode runs")
    args = p.parse_args()

    import logging

    import torch

    logging.basicConfig(level=logging.WARNING)
    cuda = torch.cuda.is_available()
    modes = args.modes.split(",")
    if not cuda:
        print(
            "No CUDA device: reduced CPU variant (small SD 1.x-shaped UNet, 64², simulated "
            "device budgets; 'peak' = the manager's accounted bytes)."
        )
        steps = args.steps or 4
        dtype = torch.float32
        parts = build("sd1", dtype, small=True)
        from loom.runtime.model_manager import module_bytes

        unet_bytes = module_bytes(parts["unet"])
        rows = [("diffusers", *run_diffusers("sd1", parts, 64, steps, "cpu", dtype, args.repeat))]
        rows.append(("loom cpu", *run_loom("sd1", parts, 64, steps, "cpu", dtype, args.repeat, "cpu")))
        for mode, budget in (
            ("normal", 2 * unet_bytes),
            ("low", unet_bytes),
            ("normal (streams: budget < UNet)", unet_bytes // 2),
            ("none", unet_bytes),
        ):
            name = mode.split(" ")[0]
            rows.append(
                (
                    f"loom {mode}",
                    *run_loom(
                        "sd1",
                        parts,
                        64,
                        steps,
                        "cpu",
                        dtype,
                        args.repeat,
                        name,
                        budget=budget,
                        simulated=True,
                    ),
                )
            )
        _print(f"sd1-small 64² x{steps} steps (UNet {unet_bytes / 2**20:.0f} MB)", rows)
        return

    steps = args.steps or 20
    dtype = torch.float16
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {steps} steps, CFG 7.5")
    by_family: dict[str, list[int]] = {}
    for case in args.cases.split(","):
        family, size = case.split("-")
        by_family.setdefault("sdxl" if family == "sdxl" else "sd1", []).append(int(size))
    for family, sizes in by_family.items():
        parts = build(family, dtype)
        for size in sizes:
            case = f"{'sdxl' if family == 'sdxl' else 'sd15'}-{size}"
            rows = [("diffusers", *run_diffusers(family, parts, size, steps, "cuda", dtype, args.repeat))]
            for mode in modes:
                reps = 1 if mode == "none" else args.repeat
                rows.append(
                    (f"loom {mode}", *run_loom(family, parts, size, steps, "cuda", dtype, reps, mode))
                )
            cap = CAPS.get(case)
            if cap and not args.no_caps:
                total = torch.cuda.get_device_properties(0).total_memory
                torch.cuda.set_per_process_memory_fraction(cap / total)
                try:
                    rows.append(
                        (
                            f"loom low, capped {cap / GiB:.0f} GB",
                            *run_loom(
                                family, parts, size, steps, "cuda", dtype, 1, "low", budget=cap - GiB // 4
                            ),
                        )
                    )
                except torch.OutOfMemoryError as e:
                    rows.append((f"loom low, capped {cap / GiB:.0f} GB: OOM {e}", 0.0, 0))
                finally:
                    torch.cuda.set_per_process_memory_fraction(1.0)
                    _empty("cuda")
            _print(f"{case}", rows)
        del parts
        _empty("cuda")


def _print(title: str, rows) -> None:
    print(f"\n{title}")
    print(f"  {'run':<38}{'it/s':>8}{'peak MB':>10}")
    for name, its, peak in rows:
        print(f"  {name:<38}{its:>8.2f}{peak / 2**20:>10.0f}")


if __name__ == "__main__":
    main()

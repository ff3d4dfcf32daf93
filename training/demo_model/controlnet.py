"""Train an edge ControlNet for the demo model: ``python -m training.demo_model.controlnet --help``.

The ControlNet starts as a copy of the demo UNet's encoder (diffusers' ``ControlNetModel.from_unet``,
zero-initialised output convolutions) and learns, with the UNet and text encoder frozen, to steer
the picture toward the scene generator's own edge maps: white one-pixel lines on black where an
object or the background's tone ends — what Loom's Canny preprocessor draws from a picture of this
world (half of the training hints are OpenCV's Canny of the picture itself). Data, captions
and loss are the UNet stage's (:mod:`.train`); a third of the captions are empty, so the edges
alone decide the layout when the prompt says little.

The result is written in diffusers' ControlNet layout as one ``.safetensors`` file (fp16), which
ControlNetLoader reads from ``models/controlnet/``. Resumable from ``<run>/state.pt``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch

from training.demo_model import architecture, scenes
from training.demo_model.train import (
    TrainingRun,
    _caption,
    _images,
    _log,
    _progress,
    noise_weight,
    run_options,
)

EMPTY_SHARE = 0.33  # captions left empty: edges alone must be enough


def build_controlnet(unet):
    from diffusers import ControlNetModel

    return ControlNetModel.from_unet(unet, conditioning_channels=3)


def edge_hint(batch: list[scenes.Scene], device, rng: random.Random | None = None) -> torch.Tensor:
    """Edge maps ``[B, 3, H, W]`` in 0..1, as a control IMAGE reaches the ControlNet: the
    generator's own edge map, or (with ``rng``, half the time) OpenCV's Canny of the picture at
    the Canny node's default thresholds — what a user's graph feeds it."""
    import cv2

    maps = []
    for scene in batch:
        r = scenes.render(scene)
        maps.append(cv2.Canny(r.image, 100, 200) if rng is not None and rng.random() < 0.5 else r.edges)
    edges = np.stack(maps).astype(np.float32) / 255
    return torch.from_numpy(edges).to(device)[:, None].repeat(1, 3, 1, 1)


def write_controlnet(path: str | Path, controlnet, info: dict | None = None) -> Path:
    """The ControlNet's state dict in diffusers' layout, fp16, written atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in controlnet.state_dict().items()}
    metadata = {
        "format": "pt",
        "modelspec.architecture": "stable-diffusion-v1/controlnet",
        "modelspec.title": "Loom demo shapes — edges ControlNet",
        "loom.training": json.dumps(info or {}, sort_keys=True),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(sd, str(tmp), metadata=metadata)
    tmp.replace(path)
    return path


class ControlRun(TrainingRun):
    def __init__(self, args):
        from loom.runtime.sd.loader import load_checkpoint

        super().__init__(args)
        model, clip, vae = load_checkpoint(args.checkpoint)
        # The demo model itself stays as it is: only the ControlNet learns.
        self.unet, self.text, self.vae = (m.float().to(self.device).eval().requires_grad_(False)
                                          for m in (model.unet, clip.encoders[0], vae.vae))
        torch.manual_seed(args.seed)
        self.controlnet = build_controlnet(self.unet).to(self.device).train()
        self.opt = torch.optim.AdamW(self.controlnet.parameters(), lr=args.lr, weight_decay=0.01)
        self.step = 0
        self.state_path = self.dir / "state.pt"
        if self.state_path.exists():
            state = torch.load(self.state_path, map_location=self.device, weights_only=True)
            self.controlnet.load_state_dict(state["controlnet"])
            self.opt.load_state_dict(state["opt"])
            self.step = state["step"]
            _log(f"resumed from {self.state_path} at step {self.step}")

    def save(self) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        torch.save(
            {"step": self.step, "controlnet": self.controlnet.state_dict(), "opt": self.opt.state_dict()}, tmp
        )
        tmp.replace(self.state_path)

    @torch.no_grad()
    def latents(self, all_scenes: list[scenes.Scene]) -> torch.Tensor:
        path = self.dir / "latents.pt"
        if path.exists():
            lat = torch.load(path, weights_only=True)
            if len(lat) == len(all_scenes):
                return lat.float()
        out = []
        bar = _progress(len(all_scenes), 0, "encode")
        for i in range(0, len(all_scenes), 64):
            chunk = all_scenes[i : i + 64]
            out.append(
                (self.vae.encode(_images(chunk, self.device)).latent_dist.mean * architecture.LATENT_SCALE)
                .half()
                .cpu()
            )
            bar.update(len(chunk))
        bar.close()
        lat = torch.cat(out)
        torch.save(lat, path)
        return lat.float()

    def train(self) -> None:
        from diffusers import DDPMScheduler

        a = self.args
        all_scenes = scenes.training_scenes(a.seed, a.scenes)
        lat = self.latents(all_scenes)
        sched = DDPMScheduler.from_config(architecture.scheduler_config())
        acp = sched.alphas_cumprod.to(self.device)
        snr = acp / (1 - acp)
        params = list(self.controlnet.parameters())
        bar = _progress(a.steps, self.step, "controlnet")
        while self.step < a.steps:
            k = a.seed * 1_000_003 + self.step * 7 + 11
            rng, gen = random.Random(k), torch.Generator(self.device).manual_seed(k)
            idx = [rng.randrange(len(all_scenes)) for _ in range(a.batch)]
            batch = [all_scenes[i] for i in idx]
            caps = ["" if rng.random() < EMPTY_SHARE else _caption(s, rng) for s in batch]
            with torch.no_grad():
                cond = self.text(architecture.tokenize(caps).to(self.device)).last_hidden_state
            x0 = lat[idx].to(self.device)
            t = torch.randint(0, 1000, (a.batch,), generator=gen, device=self.device)
            noise = torch.randn(x0.shape, generator=gen, device=self.device)
            xt = sched.add_noise(x0, noise, t)
            down, mid = self.controlnet(
                xt, t, cond, controlnet_cond=edge_hint(batch, self.device, rng), return_dict=False
            )
            pred = self.unet(
                xt, t, cond, down_block_additional_residuals=down, mid_block_additional_residual=mid
            ).sample
            w = noise_weight(snr[t], a.high_noise_weight)
            loss = (w * (pred - noise).pow(2).mean(dim=(1, 2, 3))).mean()
            lr = (
                a.lr
                * min(1.0, (self.step + 1) / 100)
                * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * self.step / a.steps)))
            )
            for g in self.opt.param_groups:
                g["lr"] = lr
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            self.opt.step()
            self.step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.1e}", refresh=False)
            if self.step % a.save_every == 0 or self.step == a.steps:
                self.save()
                self.export()
        bar.close()

    def export(self) -> Path:
        info = {k: v for k, v in vars(self.args).items() if k not in ("run_dir", "output", "device")}
        info["completed_steps"] = self.step
        path = write_controlnet(self.args.output, self.controlnet, info)
        _log(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB) at step {self.step}")
        return path


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--checkpoint",
        default="models/checkpoints/loom-demo-shapes.safetensors",
        help="the demo model to control",
    )
    run_options(p, "runs/demo_controlnet", "runs/demo_controlnet/loom-demo-shapes-edges.safetensors",
                seed=1, save_every=500, threads=0)
    p.add_argument("--scenes", type=int, default=4000, help="training scenes (latents encoded once)")
    p.add_argument("--steps", type=int, default=3000, help="training steps")
    p.add_argument("--batch", type=int, default=32, help="latents per step")
    p.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (warm-up, cosine)")
    p.add_argument("--high-noise-weight", type=float, default=10.0, help="as in training.demo_model.train")
    return p.parse_args(argv)


def main(argv=None) -> None:
    from loom.runtime import torchvision_fix

    torchvision_fix.install()
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    _log("settings: " + json.dumps(vars(args)))
    t0 = time.time()
    run = ControlRun(args)
    run.train()
    _log(f"finished in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()

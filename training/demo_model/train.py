"""Train Loom's demo model: ``python -m training.demo_model.train --help``.

Three stages, each resumable from ``<run>/state.pt`` (saved every ``--save-every`` steps and at
each stage's end; re-running the same command continues where it stopped):

1. **vae** — the AutoencoderKL on freshly generated scenes (32x32 crops mostly around objects,
   every 8th step whole 128x128 pictures so the mid-block attention sees full-size latents),
   L1 + MSE + a tiny KL + a guide that makes three latent channels follow the mean colour.
   Then the latent space is rescaled *exactly* (quant_conv / post_quant_conv weights) so that
   latents times 0.18215 have unit spread, as SD 1.x's scaling factor assumes.
2. **encode** — ``--scenes`` training scenes are encoded once; the UNet stage reads latents only
   (the VAE's 128x128 convolutions would otherwise dominate every step).
3. **unet** — the UNet and the CLIP text encoder together, from scratch, epsilon prediction on
   SD 1.5's noise schedule, min-SNR-5 loss weighting (faster convergence), 7% empty captions
   and 3% out-of-world words (so classifier-free guidance works, with any negative prompt),
   caption variants that drop details, EMA weights.

Each step's randomness comes from (seed, step), so a resumed run follows the same path as an
uninterrupted one. The result is written with :func:`.export.write_checkpoint` after the last
stage (and at every save of the unet stage, so a stopped run still leaves a usable file).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training.demo_model import architecture, export, scenes, text_targets

STAGES = ("vae", "text", "encode", "unet", "done")


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _progress(total: int, start: int, desc: str, disable: bool = False):
    from tqdm import tqdm

    # Not a terminal (nohup log): one line every 30 s instead of carriage-return spam.
    tty = sys.stderr.isatty()
    return tqdm(
        total=total,
        initial=start,
        desc=desc,
        mininterval=0.5 if tty else 30,
        dynamic_ncols=tty,
        disable=disable,
    )


def noise_weight(snr: torch.Tensor, high_noise: float) -> torch.Tensor:
    """Per-sample weight of the epsilon loss: min-SNR-5 (low noise levels count no more than
    SNR 5), and below SNR 1 up to ``high_noise`` times more, as 1/SNR. An epsilon loss hardly
    sees the picture at high noise (its error there is SNR times the error of the predicted
    picture), yet that is where the prompt decides colour and layout: without this the model
    learned to denoise but not to follow the words."""
    w = torch.clamp(snr, max=5.0) / snr
    if high_noise > 1:
        w = w * torch.clamp(1.0 / snr, min=1.0, max=high_noise)
    return w


def pick_device(name: str) -> torch.device:
    """``--device``: auto is CUDA when there is one, else the CPU."""
    return torch.device(name if name != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))


class TrainingRun:
    """What each trainer's run has: its options, its folder (``--run-dir``, made if missing) and
    its device (``--device``)."""

    def __init__(self, args):
        self.args = args
        self.dir = Path(args.run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.device = pick_device(args.device)


def _images(batch: list[scenes.Scene], device) -> torch.Tensor:
    arr = np.stack([scenes.render(s).image for s in batch])
    return torch.from_numpy(arr).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1


# Words from outside the scene world that prompts (above all negative prompts) often carry. A few
# training captions are made of them, or of random tokens, with the empty prompt's target: words
# the model does not know then mean "nothing", as the empty prompt does, and an editor's default
# negative prompt ("blurry, low quality, watermark") works as the unconditional side of CFG.
OUTSIDE_WORDS = (
    "blurry",
    "low quality",
    "watermark",
    "text",
    "signature",
    "ugly",
    "deformed",
    "bad anatomy",
    "jpeg artifacts",
    "worst quality",
    "lowres",
    "a photo",
    "a painting",
    "noise",
    "cropped",
    "out of frame",
    "a cat",
    "a landscape",
    "lighthouse",
)


def _caption(scene: scenes.Scene, rng: random.Random) -> str:
    r = rng.random()
    if r < 0.07:
        return ""  # classifier-free guidance's unconditional
    if r < 0.1:
        if rng.random() < 0.5:
            return ", ".join(rng.sample(OUTSIDE_WORDS, rng.randint(1, 4)))
        ids = [rng.randrange(300, 49000) for _ in range(rng.randint(1, 8))]
        return architecture.tokenizer().decode(ids)
    return scene.caption(rng if rng.random() < 0.5 else None)


@torch.no_grad()
def standardize_latents(vae, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Make every latent channel of ``x``'s encodings, times 0.18215, have mean 0 and unit spread
    by rescaling the latent space inside the VAE: quant_conv's mean half and log-variance bias on
    the way in, post_quant_conv on the way out, so decoded pictures do not change. Per channel,
    because the colour channels come out of training with a quarter of the other's spread: noise
    would drown the colour long before the layout, and colour is what prompts name first.
    Returns the channel means and spreads it found."""
    z = vae.encode(x).latent_dist.mean
    mean, std = z.mean(dim=(0, 2, 3)), z.std(dim=(0, 2, 3))
    k = 1.0 / (architecture.LATENT_SCALE * std)
    c = vae.config.latent_channels
    q, pq = vae.quant_conv, vae.post_quant_conv
    q.weight[:c] *= k.view(-1, 1, 1, 1)
    q.bias[:c] = (q.bias[:c] - mean) * k
    q.bias[c:] += 2 * torch.log(k)
    pq.bias += pq.weight[:, :, 0, 0] @ mean
    pq.weight /= k.view(1, -1, 1, 1)
    return mean, std


def scene_weights(scene_list: list[scenes.Scene], oversample: list[str]) -> list[float] | None:
    """Cumulative draw weights for the UNet stage: ``oversample`` holds ``SHAPE=W`` terms, and a
    scene with that shape in it is drawn W times as often (the largest W of its shapes). None:
    every scene equally (the plain, documented stream of draws)."""
    if not oversample:
        return None
    factor = {}
    for term in oversample:
        shape, _, w = term.partition("=")
        if shape not in scenes.SHAPES or not w:
            raise SystemExit(f"--oversample {term!r}: expected SHAPE=WEIGHT, SHAPE one of {scenes.SHAPES}")
        factor[shape] = float(w)
    out, total = [], 0.0
    for s in scene_list:
        total += max([factor.get(o.shape, 1.0) for o in s.objects], default=1.0)
        out.append(total)
    return out


class Run(TrainingRun):
    def __init__(self, args):
        super().__init__(args)
        torch.manual_seed(args.seed)
        self.vae = architecture.build_vae().to(self.device)
        self.text = architecture.build_text_encoder().to(self.device)
        self.unet = architecture.build_unet().to(self.device)
        self.ema = None
        self.vae_opt = torch.optim.AdamW(self.vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
        # The text encoder's group has its own scale of the UNet's learning rate (0: frozen after
        # its own stage).
        self.opt = torch.optim.AdamW(
            [
                {"params": list(self.unet.parameters()), "scale": 1.0},
                {"params": list(self.text.parameters()), "scale": args.text_lr_scale},
            ],
            lr=args.lr,
            weight_decay=0.01,
        )
        self.stage, self.step = "vae", 0
        # Data-parallel UNet stage (``torchrun --nproc-per-node N``): each process draws its own
        # batch and gradients are averaged; on a shared CPU more processes also get more CPU time.
        dist = torch.distributed
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self.latents: torch.Tensor | None = None
        self.state_path = self.dir / "state.pt"
        if self.world > 1:  # every process looks at the run folder before rank 0 writes to it
            dist.barrier()
        if self.state_path.exists():
            self._load()
        elif args.init_from:
            self._init_from(args.init_from)

    # -- state ----------------------------------------------------------------------------
    def save(self) -> None:
        state = {
            "stage": self.stage,
            "step": self.step,
            "args": vars(self.args),
            "vae": self.vae.state_dict(),
            "text": self.text.state_dict(),
            "unet": self.unet.state_dict(),
            "vae_opt": self.vae_opt.state_dict(),
            "opt": self.opt.state_dict(),
            "ema": None if self.ema is None else {k: m.state_dict() for k, m in self.ema.items()},
        }
        tmp = self.state_path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.state_path)

    def _load(self) -> None:
        state = torch.load(self.state_path, map_location=self.device, weights_only=True)
        self.stage, self.step = state["stage"], state["step"]
        self.vae.load_state_dict(state["vae"])
        self.text.load_state_dict(state["text"])
        self.unet.load_state_dict(state["unet"])
        self.vae_opt.load_state_dict(state["vae_opt"])
        if len(state["opt"]["param_groups"]) == len(self.opt.param_groups):
            self.opt.load_state_dict(state["opt"])
        elif self.stage == "unet":
            raise SystemExit(f"{self.state_path} was written by another version of this script")
        # else: an unused UNet optimizer from an older layout: the new one starts fresh anyway
        if state["ema"] is not None:
            self._make_ema()
            for k, m in self.ema.items():
                m.load_state_dict(state["ema"][k])
        _log(f"resumed from {self.state_path}: stage {self.stage}, step {self.step}")

    def _init_from(self, path: str) -> None:
        """Start from a written checkpoint (e.g. the shipped one) instead of from scratch: its VAE
        and latent space are kept, so the run begins at the encode stage and trains on."""
        from loom.runtime.sd.loader import load_checkpoint

        model, clip, vae = load_checkpoint(path)
        self.unet.load_state_dict(model.unet.state_dict())
        self.text.load_state_dict(clip.encoders[0].state_dict())
        self.vae.load_state_dict(vae.vae.state_dict())
        self.vae.eval().requires_grad_(False)
        self.stage, self.step = "encode", 0
        _log(f"initialised from {path}: the VAE is kept, training goes on from the encode stage")

    def _make_ema(self) -> None:
        self.ema = {
            "unet": copy.deepcopy(self.unet).requires_grad_(False),
            "text": copy.deepcopy(self.text).requires_grad_(False),
        }

    def _rng(self, step: int) -> tuple[random.Random, torch.Generator]:
        k = self.args.seed * 1_000_003 + step * 7 + STAGES.index(self.stage) + self.rank * 100_000_007
        return random.Random(k), torch.Generator(self.device).manual_seed(k)

    # -- stage 1: VAE ------------------------------------------------------------------------
    def train_vae(self) -> None:
        a = self.args
        bar = _progress(a.vae_steps, self.step, "vae")
        self.vae.train()
        while self.step < a.vae_steps:
            rng, gen = self._rng(self.step)
            full = self.step % 8 == 7
            n = 4 if full else a.vae_batch
            batch = [scenes.random_scene(rng) for _ in range(n)]
            x = _images(batch, self.device)
            if not full:  # one crop per scene, on the latent grid, mostly around an object
                c = a.vae_crop
                crops = []
                for img, scene in zip(x, batch, strict=True):
                    ox, oy = rng.randrange(0, 129 - c, 8), rng.randrange(0, 129 - c, 8)
                    if rng.random() < 0.8:
                        o = rng.choice(scene.objects)
                        ox = min(128 - c, max(0, round((o.cx - c / 2 + rng.uniform(-10, 10)) / 8) * 8))
                        oy = min(128 - c, max(0, round((o.cy - c / 2 + rng.uniform(-10, 10)) / 8) * 8))
                    crops.append(img[:, oy : oy + c, ox : ox + c])
                x = torch.stack(crops)
            post = self.vae.encode(x).latent_dist
            rec = self.vae.decode(post.sample(generator=gen)).sample
            # Guide: the first three latent channels follow the 8x8 mean colour. Colour is what
            # the prompts name, and a colour-like latent space is easy for the UNet.
            guide = F.mse_loss(post.mean[:, :3], F.avg_pool2d(x, 8))
            loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + 0.1 * guide + 1e-6 * post.kl().mean()
            for g in self.vae_opt.param_groups:
                g["lr"] = (
                    a.vae_lr
                    * min(1.0, (self.step + 1) / 50)
                    * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * self.step / a.vae_steps)))
                )
            self.vae_opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.vae.parameters(), 1.0)
            self.vae_opt.step()
            self.step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            if self.step % a.save_every == 0:
                self.save()
        bar.close()
        self.vae.eval().requires_grad_(False)
        self._rescale_latents()
        self.stage, self.step = "text", 0
        self.save()

    @torch.no_grad()
    def _rescale_latents(self) -> None:
        rng = random.Random(self.args.seed + 99)
        x = _images([scenes.random_scene(rng) for _ in range(64)], self.device)
        mean, std = standardize_latents(self.vae, x)
        z = self.vae.encode(x).latent_dist.mean * architecture.LATENT_SCALE
        rec = self.vae.decode(z / architecture.LATENT_SCALE).sample
        psnr = 10 * math.log10(4 / F.mse_loss(rec.clamp(-1, 1), x).item())
        _log(
            f"VAE: latent channel means {[round(v, 3) for v in mean.tolist()]}, spreads "
            f"{[round(v, 3) for v in std.tolist()]} -> scaled latents now spread "
            f"{[round(v, 3) for v in z.std(dim=(0, 2, 3)).tolist()]}; reconstruction PSNR {psnr:.1f} dB"
        )

    # -- stage 2: text encoder ---------------------------------------------------------------
    def train_text(self) -> None:
        """The text encoder alone learns what each token says about the scene (see
        :mod:`.text_targets`); the stage is short and restarts from its beginning if stopped."""
        a = self.args
        heads = text_targets.Heads(self.text.config.hidden_size).to(self.device)
        params = [*self.text.parameters(), *heads.parameters()]
        opt = torch.optim.AdamW(params, lr=a.text_lr, weight_decay=0.01)
        self.text.train()
        bar = _progress(a.text_steps, 0, "text")
        for step in range(a.text_steps):
            rng, _ = self._rng(step)
            ids, targets = text_targets.batch([scenes.random_scene(rng) for _ in range(a.text_batch)], rng)
            loss = heads.loss(self.text(ids.to(self.device)).last_hidden_state, targets.to(self.device))
            for g in opt.param_groups:
                g["lr"] = (
                    a.text_lr
                    * min(1.0, (step + 1) / 50)
                    * 0.5
                    * (1 + math.cos(math.pi * step / a.text_steps))
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        bar.close()
        # Held-out prompts: does the encoder say the right thing about triples it never read?
        self.text.eval()
        with torch.no_grad():
            ids, targets = text_targets.batch([s for _, s in scenes.test_prompts(60)], random.Random(0))
            acc = heads.accuracy(self.text(ids.to(self.device)).last_hidden_state, targets.to(self.device))
        _log(f"text encoder: loss {loss.item():.4f}; token accuracy on held-out prompts {acc}")
        self.stage, self.step = "encode", 0
        self.save()

    # -- stage 3: encode ---------------------------------------------------------------------
    @torch.no_grad()
    def encode(self) -> None:
        a = self.args
        path = self.dir / "latents.pt"
        if not path.exists():
            self.vae.eval()
            all_scenes = scenes.training_scenes(a.seed, a.scenes)
            out = []
            bar = _progress(len(all_scenes), 0, "encode")
            for i in range(0, len(all_scenes), 64):
                chunk = all_scenes[i : i + 64]
                z = self.vae.encode(_images(chunk, self.device)).latent_dist.mean
                out.append((z * architecture.LATENT_SCALE).half().cpu())
                bar.update(len(chunk))
            bar.close()
            lat = torch.cat(out)
            torch.save(lat, path.with_suffix(".tmp"))
            path.with_suffix(".tmp").replace(path)
            _log(f"encoded {len(lat)} scenes: latent std {lat.float().std():.3f}")
        self.stage, self.step = "unet", 0
        self.save()

    # -- stage 4: UNet (+ text encoder) --------------------------------------------------------
    def train_unet(self) -> None:
        from diffusers import DDPMScheduler

        a = self.args
        lat = torch.load(self.dir / "latents.pt", weights_only=True).float()
        all_scenes = scenes.training_scenes(a.seed, a.scenes)
        assert len(all_scenes) == len(lat), "latents.pt was made for another --scenes"
        sched = DDPMScheduler.from_config(architecture.scheduler_config())
        acp = sched.alphas_cumprod.to(self.device)
        snr = acp / (1 - acp)
        if self.ema is None:
            self._make_ema()
        self.unet.train()
        frozen_text = self.args.text_lr_scale == 0
        self.text.train(not frozen_text).requires_grad_(not frozen_text)
        params = [*self.unet.parameters(), *([] if frozen_text else self.text.parameters())]
        desc = "unet" if self.world == 1 else f"unet x{self.world}"
        bar = _progress(a.unet_steps, self.step, desc, disable=self.rank != 0)
        weights = scene_weights(all_scenes, a.oversample)
        while self.step < a.unet_steps:
            rng, gen = self._rng(self.step)
            if weights is None:
                idx = [rng.randrange(len(all_scenes)) for _ in range(a.batch)]
            else:
                idx = rng.choices(range(len(all_scenes)), cum_weights=weights, k=a.batch)
            caps = [_caption(all_scenes[i], rng) for i in idx]
            ids = architecture.tokenize(caps).to(self.device)
            x0 = lat[idx].to(self.device)
            t = torch.randint(0, 1000, (a.batch,), generator=gen, device=self.device)
            noise = torch.randn(x0.shape, generator=gen, device=self.device)
            xt = sched.add_noise(x0, noise, t)
            with torch.set_grad_enabled(not frozen_text):
                cond = self.text(ids).last_hidden_state
            pred = self.unet(xt, t, cond).sample
            w = noise_weight(snr[t], a.high_noise_weight)
            loss = (w * (pred - noise).pow(2).mean(dim=(1, 2, 3))).mean()
            lr = a.lr * min(1.0, (self.step + 1) / 200)
            lr *= 0.5 * (1 + math.cos(math.pi * self.step / a.unet_steps)) * 0.9 + 0.1  # cosine to 10%
            for g in self.opt.param_groups:
                g["lr"] = lr * g["scale"]
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if self.world > 1:
                self._average_gradients(params)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            self.opt.step()
            if self.rank == 0:
                self._update_ema()
            self.step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.1e}", refresh=False)
            if self.step % a.save_every == 0 and self.rank == 0:
                self.save()
                self.export()
        bar.close()
        self.stage = "done"
        if self.rank == 0:
            self.save()

    def _average_gradients(self, params) -> None:
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.args.ema, (1 + self.step) / (10 + self.step))
        frozen_text = self.args.text_lr_scale == 0  # its average is itself: skip 7 M lerps a step
        for name, model in (("unet", self.unet), *(() if frozen_text else (("text", self.text),))):
            for e, p in zip(self.ema[name].parameters(), model.parameters(), strict=True):
                e.lerp_(p, 1 - decay)

    def export(self) -> Path:
        unet = self.ema["unet"] if self.ema else self.unet
        text = self.ema["text"] if self.ema else self.text
        vae = self.vae
        tuned = self.dir / "decoder.pt"
        if tuned.exists():  # a decoder fine-tuned by --finetune-decoder (same latent space)
            vae = copy.deepcopy(self.vae)
            vae.load_state_dict(torch.load(tuned, map_location=self.device, weights_only=True)["vae"])
        info = {k: v for k, v in vars(self.args).items() if k not in ("run_dir", "output", "device")}
        info["completed_unet_steps"] = self.step if self.stage == "unet" else self.args.unet_steps
        path = export.write_checkpoint(self.args.output, unet, vae, text, info)
        _log(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
        return path

    def run(self) -> None:
        t0 = time.time()
        if self.world > 1 and self.stage == "vae":
            raise SystemExit("run the vae stage in one process; torchrun only from the encode stage on")
        if self.stage == "vae":
            self.train_vae()
        if self.stage == "text":
            if self.world > 1:
                raise SystemExit("run the text stage in one process; torchrun only from the encode stage on")
            self.train_text()
        if self.stage == "encode":
            if self.rank == 0:
                self.encode()
            if self.world > 1:  # the others wait for rank 0's latents.pt
                torch.distributed.barrier()
                self.stage, self.step = "unet", 0
        if self.stage == "unet":
            self.train_unet()
        if (self.args.export_only or self.stage == "done") and self.rank == 0:
            self.export()
        _log(f"finished in {time.time() - t0:.0f} s")


def finetune_decoder(args) -> None:
    """Improve the VAE's decoder alone, on windows of twice ``--vae-crop`` (whole 128x128 scenes
    with a crop of 64 or more), after or while the UNet trains: the encoder and the latent space
    stay as they are, so the UNet's latents keep their meaning. Resumable from
    ``<run>/decoder.pt``; the UNet stage's exports pick it up."""
    run_dir = Path(args.run_dir)
    device = pick_device(args.device)
    state = torch.load(run_dir / "state.pt", map_location=device, weights_only=True)
    if state["stage"] == "vae":
        raise SystemExit("the VAE stage has not finished yet")
    vae = architecture.build_vae().to(device)
    vae.load_state_dict(state["vae"])
    del state
    vae.requires_grad_(False)
    params = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=args.vae_lr * 0.3, weight_decay=0.0)
    path, step = run_dir / "decoder.pt", 0
    if path.exists():
        saved = torch.load(path, map_location=device, weights_only=True)
        vae.load_state_dict(saved["vae"])
        opt.load_state_dict(saved["opt"])
        step = saved["step"]
        _log(f"resumed decoder fine-tuning at step {step}")
    bar = _progress(args.finetune_decoder, step, "decoder")
    vae.decoder.train()
    while step < args.finetune_decoder:
        k = args.seed * 1_000_003 + step * 7 + 5
        rng, gen = random.Random(k), torch.Generator(device).manual_seed(k)
        x = _images([scenes.random_scene(rng) for _ in range(args.vae_batch // 2)], device)
        if args.vae_crop * 2 < scenes.SIZE:  # 2x --vae-crop windows on the latent grid: cheaper
            c = args.vae_crop * 2
            ox, oy = rng.randrange(0, scenes.SIZE - c + 1, 8), rng.randrange(0, scenes.SIZE - c + 1, 8)
            x = x[:, :, oy : oy + c, ox : ox + c]
        with torch.no_grad():
            z = vae.encode(x).latent_dist.sample(generator=gen)
            # Latents a sampler makes are never exactly the encoder's: a decoder trained only on
            # those draws speckles from small errors. Noise up to --decoder-latent-noise (in
            # scaled-latent units) teaches it to draw the clean picture from them.
            sigma = torch.rand(len(z), 1, 1, 1, generator=gen, device=device) * args.decoder_latent_noise
            z = z + sigma / architecture.LATENT_SCALE * torch.randn(z.shape, generator=gen, device=device)
        rec = vae.decode(z).sample
        loss = F.l1_loss(rec, x) + F.mse_loss(rec, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        if step % 50 == 0 or step == args.finetune_decoder:
            tmp = path.with_suffix(".tmp")
            torch.save({"step": step, "vae": vae.state_dict(), "opt": opt.state_dict()}, tmp)
            tmp.replace(path)
            psnr = 10 * math.log10(4 / F.mse_loss(rec.detach().clamp(-1, 1), x).item())
            _log(f"decoder step {step}: loss {loss.item():.4f}, PSNR {psnr:.1f} dB")
    bar.close()


def run_options(p: argparse.ArgumentParser, run_dir: str, output: str, *, seed: int,
                save_every: int, threads: int) -> None:
    """The options every demo-model trainer has: where it works and writes, seed, device, how
    often it saves, CPU threads (their defaults differ per trainer)."""
    run = p.add_argument_group("run")
    run.add_argument("--run-dir", default=run_dir, help="state.pt and latents.pt go here")
    run.add_argument("--output", default=output, help="the file written at each save and at the end")
    run.add_argument("--seed", type=int, default=seed, help="seeds the scenes, noise and initial weights")
    run.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda")
    run.add_argument("--save-every", type=int, default=save_every, help="steps between saves")
    run.add_argument("--threads", type=int, default=threads,
                     help="torch CPU threads (0: torch's default). On a shared, loaded CPU one "
                     "thread is several times faster than two that wait for each other")


def _stage_options(p: argparse.ArgumentParser, title: str, name: str, steps: int, batch: int,
                   items: str):
    """An argument group with the stage's --NAME-steps, --NAME-batch and --NAME-lr."""
    group = p.add_argument_group(title)
    group.add_argument(f"--{name}-steps", type=int, default=steps, help="training steps (0: skip the stage)")
    group.add_argument(f"--{name}-batch", type=int, default=batch, help=f"{items} per step")
    group.add_argument(f"--{name}-lr", type=float, default=1e-3, help="learning rate")
    return group


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    run_options(p, "runs/demo_model", "runs/demo_model/loom-demo-shapes.safetensors", seed=0,
                save_every=200, threads=1)
    vae = _stage_options(p, "stage 1: VAE", "vae", 3000, 32, "pictures (crops)")
    vae.add_argument("--vae-crop", type=int, default=32,
                     help="crop side (multiple of 8); every 8th step whole scenes")
    text = _stage_options(p, "stage 2: text encoder", "text", 1500, 64, "captions")
    text.add_argument("--text-lr-scale", type=float, default=0.0,
                      help="the text encoder's learning rate in the UNet stage, as a share of --lr "
                      "(0: frozen)")
    unet = p.add_argument_group("stages 3-4: encode, UNet")
    unet.add_argument("--scenes", type=int, default=8000, help="training scenes encoded for the UNet")
    unet.add_argument("--unet-steps", type=int, default=10000, help="UNet training steps")
    unet.add_argument("--batch", type=int, default=32, help="latents per UNet step")
    unet.add_argument("--lr", type=float, default=1e-3, help="UNet peak learning rate (cosine to 10%%)")
    unet.add_argument("--high-noise-weight", type=float, default=10.0,
                      help="extra weight of the loss at high noise levels (1: plain min-SNR-5); "
                      "see noise_weight")
    unet.add_argument("--oversample", action="append", default=[], metavar="SHAPE=WEIGHT",
                      help="draw scenes with this shape WEIGHT times as often (repeatable), e.g. "
                      "star=2 for the hardest shape")
    unet.add_argument("--ema", type=float, default=0.999, help="EMA decay of the exported weights")
    other = p.add_argument_group("instead of training")
    other.add_argument("--export-only", action="store_true", help="write the checkpoint from state.pt")
    other.add_argument("--init-from", metavar="CHECKPOINT",
                       help="a new run starts from this written checkpoint (its VAE and latent "
                       "space kept), e.g. models/checkpoints/loom-demo-shapes.safetensors, to "
                       "train it further")
    other.add_argument("--finetune-decoder", type=int, default=0, metavar="STEPS",
                       help="fine-tune the VAE decoder for STEPS steps (run it as a second process "
                       "once the encode stage is done)")
    other.add_argument("--decoder-latent-noise", type=float, default=0.3,
                       help="--finetune-decoder: the most noise added to its latents "
                       "(scaled-latent units)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    from loom.runtime import torchvision_fix

    torchvision_fix.install()  # diffusers imports torchvision through transformers
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    _log("settings: " + json.dumps(vars(args)))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        torch.distributed.init_process_group("gloo")
    if args.finetune_decoder:
        finetune_decoder(args)
        return
    run = Run(args)
    if args.export_only:
        run.export()
        return
    run.run()


if __name__ == "__main__":
    main()

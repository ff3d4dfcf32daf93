"""Measure the demo model through Loom's graph, and draw the README figure.

    python -m training.demo_model.evaluate [CHECKPOINT] [--cfg 5 1] [--grid docs/demo_model_grid.png]

Prints, per cfg, the share of held-out prompts whose picture shows the named colour (dominant
foreground colour), shape and position (see :mod:`.measure`), and the img2img figures: a scene
from the generator, its caption with another colour word, denoise 0.6 — is the new colour there,
and does the object stay where it was (IoU of the foreground masks)?
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from training.demo_model import measure, scenes

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "checkpoints" / "loom-demo-shapes.safetensors"
STEPS = 15
SAMPLER = ("euler", "normal")


@dataclass
class Figures:
    cfg: float
    n: int = 0
    color: int = 0
    shape: int = 0
    position: int = 0
    rows: list = field(default_factory=list)

    def rates(self) -> dict:
        return {k: round(getattr(self, k) / max(1, self.n), 3) for k in ("color", "shape", "position")}


def held_out_figures(graph, prompts, cfg: float, steps: int = STEPS) -> Figures:
    """Each prompt once (seed = its index), read back and compared with the words."""
    fig = Figures(cfg)
    for i, (text, scene) in enumerate(prompts):
        image = graph.txt2img(text, seed=i, steps=steps, cfg=cfg, sampler=SAMPLER[0], scheduler=SAMPLER[1])
        r = measure.read(image, scene.background)
        o = scene.objects[0]
        ok = (r.color == o.color, r.shape == o.shape, r.position == o.position)
        fig.n += 1
        fig.color, fig.shape, fig.position = fig.color + ok[0], fig.shape + ok[1], fig.position + ok[2]
        fig.rows.append({"prompt": text, "color": r.color, "shape": r.shape, "position": r.position})
    return fig


def recolor_cases(count: int = 4, seed: int = 7) -> list[tuple[scenes.Scene, str, str]]:
    """(source scene, new caption, new colour): one object, a new colour, same everything else."""
    rng = random.Random(seed)
    out = []
    while len(out) < count:
        scene = scenes.random_scene(rng, n_objects=1)
        scene.background = scene.background[:1]
        o = scene.objects[0]
        o.size = rng.choice(("medium", "large"))
        new = rng.choice([c for c in scenes.COLORS if c != o.color])
        caption = scene.caption().replace(f" {o.color} ", f" {new} ", 1)
        out.append((scene, caption, new))
    return out


def img2img_figures(graph, cases, denoise: float = 0.6, cfg: float = 5.0, steps: int = STEPS) -> list[dict]:
    rows = []
    for i, (scene, caption, new) in enumerate(cases):
        src = scenes.render(scene)
        out = graph.img2img(src.image, caption, denoise=denoise, seed=i, steps=steps, cfg=cfg)
        r = measure.read(out, scene.background)
        rows.append(
            {
                "prompt": caption,
                "color": r.color,
                "wanted": new,
                "iou": round(measure.iou(r.mask, src.masks[0]), 3),
            }
        )
    return rows


def control_cases(count: int = 6, seed: int = 21) -> list[tuple[scenes.Scene, str]]:
    """(source scene, a prompt that names other colours and the shapes but not where they are or
    how big): one or two medium or large objects on a plain background. Only the source picture's
    edges, through the ControlNet, can put them in the source's places."""
    rng = random.Random(seed)
    out = []
    while len(out) < count:
        scene = scenes.random_scene(rng, n_objects=rng.choice((1, 2)))
        scene.background = scene.background[:1]
        phrases = []
        for o in scene.objects:
            o.size = rng.choice(("medium", "large"))
            other = copy.copy(o)
            other.color = rng.choice([c for c in scenes.COLORS if c != o.color])
            phrases.append(other.phrase(with_size=False, with_position=False))
        out.append((scene, f"{' and '.join(phrases)} on a {scene.background[0]} background"))
    return out


def controlnet_figures(graph, cases, cfg: float = 5.0, steps: int = STEPS) -> list[dict]:
    """Each case with and without the edge ControlNet (same seed): IoU of the picture's
    foreground with the source scene's objects."""
    rows = []
    for i, (scene, caption) in enumerate(cases):
        src = scenes.render(scene)
        objects = src.masks.any(axis=0)
        guided = graph.txt2img(caption, seed=i, steps=steps, cfg=cfg, control=src.image)
        plain = graph.txt2img(caption, seed=i, steps=steps, cfg=cfg)
        rows.append(
            {
                "prompt": caption,
                "iou": round(measure.iou(measure.foreground(guided, scene.background), objects), 3),
                "iou_without": round(measure.iou(measure.foreground(plain, scene.background), objects), 3),
            }
        )
    return rows


SHOWCASE = [
    "a large red circle in the center on a white background",
    "a small blue square at the top left on a white background",
    "a yellow star at the bottom right on a black background",
    "a large green triangle on the left on a gray background",
    "a purple diamond at the top on a white background",
    "an orange circle at the bottom left on a black background",
    "a pink star in the center on a gray background",
    "a cyan square on the right on a black background",
    "a red circle at the top left and a blue square at the bottom right on a white background",
    "a yellow triangle at the top and a green star at the bottom on a black background",
    "a large blue star on a white and gray background",
    "a small orange diamond at the top right on a gray and black background",
]


def grid(graph, path: str | Path, prompts=SHOWCASE, cfg: float = 5.0, steps: int = 20, cols: int = 4) -> Path:
    """A grid of pictures with their prompts underneath (the README figure)."""
    import textwrap

    from PIL import Image, ImageDraw

    cell, text_h = 192, 54
    rows = (len(prompts) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * cell, rows * (cell + text_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, text in enumerate(prompts):
        img = Image.fromarray(graph.txt2img(text, seed=i, steps=steps, cfg=cfg)).resize(
            (cell - 8, cell - 8), Image.NEAREST
        )
        x, y = (i % cols) * cell, (i // cols) * (cell + text_h)
        sheet.paste(img, (x + 4, y + 4))
        draw.multiline_text((x + 4, y + cell), "\n".join(textwrap.wrap(text, 30)[:4]), fill="black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, optimize=True)
    return path


def main(argv=None) -> None:
    from loom.runtime import torchvision_fix

    torchvision_fix.install()
    from training.demo_model.loom_graph import LoomGraph

    p = argparse.ArgumentParser(description="Acceptance figures of the demo model through Loom's graph.")
    p.add_argument("checkpoint", nargs="?", default=str(SHIPPED), help="the demo model file to measure")
    p.add_argument("--cfg", type=float, nargs="*", default=[5.0, 1.0], help="none: only img2img and --grid")
    p.add_argument("--prompts", type=int, default=60, help="held-out prompts to draw")
    p.add_argument("--steps", type=int, default=STEPS, help="sampling steps (euler, normal)")
    p.add_argument("--grid", help="also write the README grid figure here")
    p.add_argument(
        "--controlnet", help="also measure this edge ControlNet (training/demo_model/controlnet.py)"
    )
    p.add_argument("--json", help="write all figures and per-prompt readings here")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    graph = LoomGraph(args.checkpoint, args.controlnet)
    report = {"checkpoint": args.checkpoint, "steps": args.steps, "sampler": SAMPLER}
    prompts = scenes.test_prompts(args.prompts)
    for cfg in args.cfg:
        t0 = time.time()
        fig = held_out_figures(graph, prompts, cfg, args.steps)
        report[f"cfg {cfg:g}"] = {
            **fig.rates(),
            "n": fig.n,
            "seconds": round(time.time() - t0, 1),
            "rows": fig.rows,
        }
        print(f"cfg {cfg:g}: {fig.rates()} over {fig.n} held-out prompts ({time.time() - t0:.0f} s)")
    rows = img2img_figures(graph, recolor_cases(), steps=args.steps)
    report["img2img"] = rows
    for r in rows:
        print(f"img2img 0.6: {r}")
    if args.controlnet:
        report["controlnet"] = controlnet_figures(graph, control_cases(), steps=args.steps)
        for r in report["controlnet"]:
            print(f"edge ControlNet: {r}")
    if args.grid:
        print("grid:", grid(graph, args.grid))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

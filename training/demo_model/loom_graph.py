"""Run the demo model through Loom's own graph (CheckpointLoaderSimple -> CLIPTextEncode ->
KSampler -> VAEDecode, and VAEEncode for img2img), in-process, exactly as the server would."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from loom.nodeapi import ALWAYS_RUN, Link, Node, NodeRegistry, Output


class _Capture(Node):
    """Keeps the IMAGE it receives (the engine hands no values back otherwise)."""

    output_node = True
    inputs = {"image": Link("IMAGE")}
    outputs = ()
    seen: dict = {}

    @classmethod
    def fingerprint(cls, ctx, **inputs):
        return ALWAYS_RUN  # a repeated graph is cached upstream, but must still hand its image back

    def run(self, image):
        _Capture.seen[self.ctx.prompt_id] = image
        return ()


class _Source(Node):
    """A fixed IMAGE (the img2img source)."""

    inputs = {}
    outputs = (Output("IMAGE"),)
    images: dict = {}

    @classmethod
    def fingerprint(cls, ctx, **inputs):
        return ALWAYS_RUN  # the image comes from outside the graph: never reuse an old one

    def run(self):
        return (_Source.images[self.ctx.prompt_id],)


class LoomGraph:
    """One Loom installation (temporary folders) with ``checkpoint`` in models/checkpoints/."""

    def __init__(self, checkpoint: str | Path):
        from loom.config import REPO_ROOT
        from loom.engine.executor import Executor
        from loom.nodeapi.loader import load_packs
        from loom.paths import Folders

        checkpoint = Path(checkpoint).resolve()
        self._tmp = tempfile.TemporaryDirectory(prefix="loom-demo-")
        self.folders = Folders.under(Path(self._tmp.name))
        self.folders.create()
        target = self.folders.models_dir / "checkpoints" / checkpoint.name
        try:  # Loom refuses symlinks that leave models/ (a safety rule), so link hard or copy
            os.link(checkpoint, target)
        except OSError:
            shutil.copyfile(checkpoint, target)
        self.ckpt = checkpoint.name
        self.registry = NodeRegistry()
        load_packs(self.registry, REPO_ROOT / "nodes", builtin=True)
        self.registry.register("DemoCapture", _Capture, "demo_model")
        self.registry.register("DemoSource", _Source, "demo_model")
        self.executor = Executor(paths=self.folders)
        self._ids = itertools.count()

    def _run(self, prompt: dict, source: torch.Tensor | None = None) -> np.ndarray:
        from loom.engine.validate import validate_prompt
        from loom.nodeapi import RunContext

        pid = f"demo-{next(self._ids)}"
        if source is not None:
            _Source.images[pid] = source
        result = self.executor.execute(
            validate_prompt(prompt, self.registry, RunContext(paths=self.folders)), pid
        )
        _Source.images.pop(pid, None)
        if result.status != "success":
            raise RuntimeError(f"Loom graph failed: {result.error}")
        image = _Capture.seen.pop(pid)
        return (image[0].clamp(0, 1).numpy() * 255).round().astype(np.uint8)

    def _graph(
        self,
        text: str,
        *,
        latent: dict,
        negative: str = "",
        seed: int = 0,
        steps: int = 20,
        cfg: float = 5.0,
        sampler: str = "euler",
        scheduler: str = "normal",
        denoise: float = 1.0,
    ) -> dict:
        return {
            "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": self.ckpt}},
            "2": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["1", 1]}},
            "3": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["1", 1]}},
            "4": latent,
            "5": {
                "class_type": "KSampler",
                "inputs": {
                    "model": ["1", 0],
                    "seed": seed,
                    "steps": steps,
                    "cfg": cfg,
                    "sampler_name": sampler,
                    "scheduler": scheduler,
                    "positive": ["2", 0],
                    "negative": ["3", 0],
                    "latent_image": ["4", 0],
                    "denoise": denoise,
                },
            },
            "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
            "7": {"class_type": "DemoCapture", "inputs": {"image": ["6", 0]}},
        }

    def txt2img(self, text: str, *, size: int = 128, **settings) -> np.ndarray:
        """One picture; ``settings``: negative, seed, steps, cfg, sampler, scheduler."""
        size_ = {"width": size, "height": size, "batch_size": 1}
        latent = {"class_type": "EmptyLatentImage", "inputs": size_}
        return self._run(self._graph(text, latent=latent, **settings))

    def img2img(self, image: np.ndarray, text: str, *, denoise: float = 0.6, **settings) -> np.ndarray:
        """``image`` (uint8 ``[H, W, 3]``) redrawn; ``settings`` as for :meth:`txt2img`."""
        encode = {"class_type": "VAEEncode", "inputs": {"pixels": ["8", 0], "vae": ["1", 2]}}
        graph = self._graph(text, latent=encode, denoise=denoise, **settings)
        graph["8"] = {"class_type": "DemoSource", "inputs": {}}
        source = torch.from_numpy(image.astype(np.float32) / 255)[None]
        return self._run(graph, source)

    def close(self) -> None:
        self._tmp.cleanup()

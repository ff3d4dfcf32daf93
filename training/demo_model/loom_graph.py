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

from loom.nodeapi import ALWAYS_RUN, Node, NodeRegistry, Output
from loom.nodeapi.capture import capture_node

_Capture = capture_node("DemoCapture", image="IMAGE")


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
    """One Loom installation (temporary folders) with ``checkpoint`` in models/checkpoints/ (and
    ``controlnet``, when given, in models/controlnet/)."""

    def __init__(self, checkpoint: str | Path, controlnet: str | Path | None = None):
        from loom.config import REPO_ROOT
        from loom.engine.executor import Executor
        from loom.nodeapi.loader import load_packs
        from loom.paths import Folders

        self._tmp = tempfile.TemporaryDirectory(prefix="loom-demo-")
        self.folders = Folders.under(Path(self._tmp.name))
        self.folders.create()
        self.ckpt = self._place(checkpoint, "checkpoints")
        self.controlnet = self._place(controlnet, "controlnet") if controlnet else None
        self.registry = NodeRegistry()
        load_packs(self.registry, REPO_ROOT / "nodes", builtin=True)
        self.registry.register("DemoCapture", _Capture, "demo_model")
        self.registry.register("DemoSource", _Source, "demo_model")
        self.executor = Executor(paths=self.folders)
        self._ids = itertools.count()

    def _place(self, path: str | Path, kind: str) -> str:
        path = Path(path).resolve()
        target = self.folders.models_dir / kind / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:  # Loom refuses symlinks that leave models/ (a safety rule), so link hard or copy
            os.link(path, target)
        except OSError:
            shutil.copyfile(path, target)
        return path.name

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
        image = _Capture.take(pid)["image"]
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

    def txt2img(
        self,
        text: str,
        *,
        size: int = 128,
        control: np.ndarray | None = None,
        strength: float = 1.0,
        **settings,
    ) -> np.ndarray:
        """One picture; ``settings``: negative, seed, steps, cfg, sampler, scheduler. With
        ``control`` (a uint8 picture) and the ControlNet: its Canny edges steer the layout
        (CannyEdgePreprocessor -> ControlNetApplyAdvanced, as the ControlNet-canny template)."""
        size_ = {"width": size, "height": size, "batch_size": 1}
        latent = {"class_type": "EmptyLatentImage", "inputs": size_}
        graph = self._graph(text, latent=latent, **settings)
        if control is None:
            return self._run(graph)
        if self.controlnet is None:
            raise ValueError("this LoomGraph has no ControlNet")
        canny = {"image": ["8", 0], "low_threshold": 100, "high_threshold": 200, "resolution": size}
        apply = {"positive": ["2", 0], "negative": ["3", 0], "control_net": ["10", 0], "image": ["9", 0]}
        graph.update(
            {
                "8": {"class_type": "DemoSource", "inputs": {}},
                "9": {"class_type": "CannyEdgePreprocessor", "inputs": canny},
                "10": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": self.controlnet}},
                "11": {
                    "class_type": "ControlNetApplyAdvanced",
                    "inputs": {**apply, "strength": strength, "start_percent": 0.0, "end_percent": 1.0},
                },
            }
        )
        graph["5"]["inputs"].update(positive=["11", 0], negative=["11", 1])
        return self._run(graph, torch.from_numpy(control.astype(np.float32) / 255)[None])

    def img2img(self, image: np.ndarray, text: str, *, denoise: float = 0.6, **settings) -> np.ndarray:
        """``image`` (uint8 ``[H, W, 3]``) redrawn; ``settings`` as for :meth:`txt2img`."""
        encode = {"class_type": "VAEEncode", "inputs": {"pixels": ["8", 0], "vae": ["1", 2]}}
        graph = self._graph(text, latent=encode, denoise=denoise, **settings)
        graph["8"] = {"class_type": "DemoSource", "inputs": {}}
        source = torch.from_numpy(image.astype(np.float32) / 255)[None]
        return self._run(graph, source)

    def close(self) -> None:
        self._tmp.cleanup()

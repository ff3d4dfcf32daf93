"""LoRA stacks changed between runs of one server: every change equals a fresh load.

One executor keeps the checkpoint loaded (its output cache) while a graph's LoRA stack changes
between runs: strength, adding, removing, reordering, UNet-only and text-encoder-only LoRAs.
Each run's conditioning and sampled latent must be *identical* to a fresh executor (fresh
model load, fresh model manager) running the same stack. The states are visited along an
Eulerian circuit of the complete transition graph, so every ordered pair of states is a tested
transition. A second test runs a base branch and a LoRA branch of one prompt side by side.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from sd_fixtures import make_lora, sd_cpu_only, sd_files, tiny_pipeline  # noqa: F401  (fixtures)

from loom.config import REPO_ROOT
from loom.engine.cache import OutputCache
from loom.engine.executor import Executor
from loom.engine.validate import validate_prompt
from loom.nodeapi import NodeRegistry, RunContext
from loom.nodeapi.capture import capture_node
from loom.nodeapi.loader import load_packs
from loom.paths import Folders
from loom.runtime.model_manager import ModelManager

LoraCapture = capture_node("LoraCapture", always_run=False, cond="CONDITIONING", latent="LATENT")


LOADERS = ("CheckpointLoaderSimple", "LoraLoader")

# (lora, strength_model, strength_clip) stacks, applied in list order.
STATES = {
    "none": [],
    "A.5": [("A", 0.5, 0.5)],
    "A.6": [("A", 0.6, 0.6)],
    "A+B": [("A", 0.6, 0.6), ("B", 1.0, 1.0)],
    "B+A": [("B", 1.0, 1.0), ("A", 0.6, 0.6)],
    "Bunet+Aclip": [("B", 1.0, 0.0), ("A", 0.0, 0.6)],
}


def eulerian_circuit(states: list[str]) -> list[str]:
    """A walk from states[0] using every ordered pair (a, b), a != b, exactly once (Hierholzer)."""
    out = {s: [t for t in states if t != s] for s in states}
    stack, walk = [states[0]], []
    while stack:
        if out[stack[-1]]:
            stack.append(out[stack[-1]].pop())
        else:
            walk.append(stack.pop())
    return walk[::-1]


def _branch(prompt: dict, stack: list, prefix: str, capture_id: str) -> None:
    """LoraLoader chain on checkpoint node "1", two prompts, KSampler, capture."""
    model, clip = ["1", 0], ["1", 1]
    for i, (name, s_model, s_clip) in enumerate(stack):
        node = f"{prefix}l{i}"
        prompt[node] = {
            "class_type": "LoraLoader",
            "inputs": {
                "model": model,
                "clip": clip,
                "lora_name": f"{name}.safetensors",
                "strength_model": s_model,
                "strength_clip": s_clip,
            },
        }
        model, clip = [node, 0], [node, 1]
    prompt[f"{prefix}pos"] = {
        "class_type": "CLIPTextEncode",
        "inputs": {"text": "a photo of a cat", "clip": clip},
    }
    prompt[f"{prefix}neg"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": clip}}
    prompt[f"{prefix}k"] = {
        "class_type": "KSampler",
        "inputs": {
            "model": model,
            "seed": 7,
            "steps": 2,
            "cfg": 6.0,
            "sampler_name": "euler",
            "scheduler": "normal",
            "positive": [f"{prefix}pos", 0],
            "negative": [f"{prefix}neg", 0],
            "latent_image": ["lat", 0],
            "denoise": 1.0,
        },
    }
    prompt[capture_id] = {
        "class_type": "LoraCapture",
        "inputs": {"cond": [f"{prefix}pos", 0], "latent": [f"{prefix}k", 0]},
    }


def _prompt(*stacks) -> dict:
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
        "lat": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    }
    for b, stack in enumerate(stacks):
        _branch(prompt, stack, f"b{b}", f"cap{b}")
    return prompt


class Loom:
    def __init__(self, family, sd_files, tmp_path):  # noqa: F811
        self.folders = Folders.under(tmp_path)
        self.folders.create()
        (self.folders.model_folder("checkpoints") / "tiny.safetensors").write_bytes(
            sd_files(family).read_bytes()
        )
        pipe = tiny_pipeline(family)
        for name, seed in (("A", 1), ("B", 2)):
            save_file(
                make_lora(pipe, family, "kohya", seed=seed),
                str(self.folders.model_folder("loras") / f"{name}.safetensors"),
            )
        self.registry = NodeRegistry()
        load_packs(self.registry, REPO_ROOT / "nodes", builtin=True)
        self.registry.register("LoraCapture", LoraCapture, "tests")
        self.runs = 0

    def executor(self) -> Executor:
        return Executor(paths=self.folders, models=ModelManager())

    def run(self, executor: Executor, *stacks, keep_only_loaders: bool = False):
        """Run the stacks as branches of one prompt; with ``keep_only_loaders``, forget the
        cached results of everything but the loaders afterwards, so that revisiting a stack
        encodes and samples again (a plain cache hit would test nothing)."""
        self.runs += 1
        pid = f"run{self.runs}"
        prompt = validate_prompt(_prompt(*stacks), self.registry, RunContext(paths=self.folders))
        result = executor.execute(prompt, pid)
        assert result.status == "success", result.error
        if keep_only_loaders:
            kept = OutputCache()
            for node_id, sig in executor.signatures(prompt, list(prompt.nodes)).items():
                entry = executor.cache.get(sig)
                if entry is not None and prompt.nodes[node_id].class_type in LOADERS:
                    kept.put(sig, entry.outputs, entry.ui)
            executor.cache = kept
        taken = [LoraCapture.take(pid, f"cap{b}") for b in range(len(stacks))]
        return result, [(seen["cond"][0][0], seen["latent"]["samples"]) for seen in taken]


@pytest.fixture
def loom_sd1(sd_files, tmp_path):  # noqa: F811
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Loom("sd1", sd_files, tmp_path)
    torch.set_num_threads(threads)


def _assert_same(got, want, what):
    assert torch.equal(got[0], want[0]), f"{what}: conditioning differs from a fresh load"
    assert torch.equal(got[1], want[1]), f"{what}: latent differs from a fresh load"


@torch.no_grad()
def test_every_lora_stack_transition_equals_a_fresh_load(loom_sd1):
    loom = loom_sd1
    fresh = {name: loom.run(loom.executor(), stack)[1][0] for name, stack in STATES.items()}
    # the states really differ (else the test proves nothing)
    for a in STATES:
        for b in STATES:
            if a < b:
                assert not torch.equal(fresh[a][1], fresh[b][1]), (a, b)
    assert not torch.equal(fresh["Bunet+Aclip"][0], fresh["B+A"][0])

    walk = eulerian_circuit(list(STATES))
    assert len(walk) == len(STATES) * (len(STATES) - 1) + 1
    executor = loom.executor()
    for step, name in enumerate(walk):
        result, (got,) = loom.run(executor, STATES[name], keep_only_loaders=True)
        if step > 0:
            assert "1" in result.cached, "the checkpoint was loaded again"
            assert "b0k" in result.executed
        _assert_same(got, fresh[name], f"{walk[step - 1] if step else 'start'} -> {name}")


@torch.no_grad()
def test_base_and_lora_branches_of_one_prompt(loom_sd1):
    """A LoRA branch must not change the base MODEL/CLIP that another branch still uses."""
    loom = loom_sd1
    base = loom.run(loom.executor(), STATES["none"])[1][0]
    lora = loom.run(loom.executor(), STATES["A+B"])[1][0]
    executor = loom.executor()
    for stacks in ((STATES["none"], STATES["A+B"]), (STATES["A+B"], STATES["none"])):
        _, got = loom.run(executor, *stacks, keep_only_loaders=True)
        want = [base if not s else lora for s in stacks]
        for g, w in zip(got, want, strict=True):
            _assert_same(g, w, "two branches")


@torch.no_grad()
def test_sdxl_text_encoders_follow_strength_changes(sd_files, tmp_path):  # noqa: F811
    loom = Loom("sdxl", sd_files, tmp_path)
    stacks = [STATES["A.5"], STATES["A.6"], STATES["B+A"], STATES["A.5"], STATES["none"]]
    fresh = [loom.run(loom.executor(), s)[1][0] for s in stacks]
    executor = loom.executor()
    for stack, want in zip(stacks, fresh, strict=True):
        _assert_same(loom.run(executor, stack, keep_only_loaders=True)[1][0], want, f"sdxl {stack}")

"""A graph that mixes model families fails with a message that says what to change."""

from __future__ import annotations

import pytest
from sd_fixtures import sd_cpu_only, sd_files  # noqa: F401  (fixtures)

from loom.config import REPO_ROOT
from loom.engine.executor import Executor
from loom.engine.validate import validate_prompt
from loom.nodeapi import Link, Node, NodeRegistry, NodeResult, RunContext
from loom.nodeapi.loader import load_packs
from loom.paths import Folders


class Keep(Node):
    output_node = True
    inputs = {"image": Link("IMAGE")}

    def run(self, image):
        return NodeResult((), {"shape": [list(image.shape)]})


@pytest.fixture(scope="module")
def env(sd_files, tmp_path_factory):  # noqa: F811
    folders = Folders.under(tmp_path_factory.mktemp("mix"))
    folders.create()
    (folders.model_folder("checkpoints") / "xl.safetensors").write_bytes(sd_files("sdxl").read_bytes())
    # an SD 1.x checkpoint used as a VAE file (VAELoader takes the VAE out of it)
    (folders.model_folder("vae") / "sd15_vae.safetensors").write_bytes(sd_files("sd1").read_bytes())
    registry = NodeRegistry()
    load_packs(registry, REPO_ROOT / "nodes", builtin=True)
    registry.register("Keep", Keep, "tests")
    return folders, registry


def run(env, prompt):
    folders, registry = env
    ctx = RunContext(paths=folders)
    return Executor(paths=folders).execute(validate_prompt(prompt, registry, ctx), "p")


def graph(latent_source: dict) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "xl.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "10": {"class_type": "VAELoader", "inputs": {"vae_name": "sd15_vae.safetensors"}},
        "4": latent_source,
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 1, "steps": 1, "cfg": 5.0, "sampler_name": "euler",
            "scheduler": "normal", "positive": ["2", 0], "negative": ["3", 0],
            "latent_image": ["4", 0], "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["10", 0]}},
        "7": {"class_type": "Keep", "inputs": {"image": ["6", 0]}},
    }


def test_sdxl_model_decoded_with_an_sd1_vae(env):
    result = run(env, graph({"class_type": "EmptyLatentImage",
                             "inputs": {"width": 64, "height": 64, "batch_size": 1}}))
    assert result.status == "error"
    assert result.error["node_type"] == "VAEDecode"
    message = result.error["exception_message"]
    assert "SD 1.x/2.x VAE" in message and "SDXL" in message


def test_image_encoded_by_an_sd1_vae_sampled_by_an_sdxl_model(env):
    prompt = graph({"class_type": "VAEEncode", "inputs": {"pixels": ["11", 0], "vae": ["10", 0]}})
    prompt["11"] = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64,
                                                           "batch_size": 1, "color": 0}}
    result = run(env, prompt)
    assert result.status == "error" and result.error["node_type"] == "KSampler"
    assert "latent spaces differ" in result.error["exception_message"]


def test_matching_families_still_run(env):
    prompt = graph({"class_type": "EmptyLatentImage",
                    "inputs": {"width": 64, "height": 64, "batch_size": 1}})
    prompt["6"]["inputs"]["vae"] = ["1", 2]  # the checkpoint's own SDXL VAE
    result = run(env, prompt)
    assert result.status == "success", result.error
    assert result.outputs["7"] == {"shape": [[1, 64, 64, 3]]}

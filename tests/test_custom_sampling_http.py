"""Custom sampling end to end through the HTTP API on the tiny SD 1.x checkpoint: the
SamplerCustomAdvanced graph (RandomNoise, CFGGuider, KSamplerSelect, BasicScheduler) saves the
same image as the KSampler graph with the same settings; changing an input and running again
works; a bad scheduler value fails the prompt with a clear message, not a server error."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from sd_fixtures import sd_cpu_only, sd_files  # noqa: F401  (fixtures)

CKPT = "tiny_sd1.safetensors"


def _base() -> dict:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        "5": {"class_type": "EmptyLatentImage",
              "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "t", "images": ["8", 0]}},
    }


def ksampler_prompt(sampler="euler_ancestral", scheduler="karras") -> dict:
    p = _base()
    p["3"] = {"class_type": "KSampler", "inputs": {
        "seed": 11, "steps": 4, "cfg": 6.5, "sampler_name": sampler, "scheduler": scheduler,
        "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
        "latent_image": ["5", 0]}}
    return p


def custom_prompt(sampler="euler_ancestral", scheduler="karras") -> dict:
    p = _base()
    p.update({
        "10": {"class_type": "RandomNoise", "inputs": {"noise_seed": 11}},
        "11": {"class_type": "CFGGuider", "inputs": {"model": ["4", 0], "positive": ["6", 0],
                                                     "negative": ["7", 0], "cfg": 6.5}},
        "12": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": sampler}},
        "13": {"class_type": "BasicScheduler", "inputs": {"model": ["4", 0],
                                                          "scheduler": scheduler, "steps": 4,
                                                          "denoise": 1.0}},
        "3": {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["10", 0], "guider": ["11", 0], "sampler": ["12", 0],
            "sigmas": ["13", 0], "latent_image": ["5", 0]}},
    })
    return p


def run(server, prompt) -> dict:
    r = server.post("/prompt", json={"prompt": prompt})
    assert r.status == 200, r.text
    return server.wait_history(r.json()["prompt_id"], timeout=120)


def pixels(server, entry) -> np.ndarray:
    [saved] = entry["outputs"]["9"]["images"]
    view = server.get("/view", params=saved)
    assert view.status == 200
    with Image.open(io.BytesIO(view.body)) as png:
        return np.asarray(png).astype(int)


def test_custom_sampling_graph_over_http(loom_server_factory, sd_files):  # noqa: F811
    server = loom_server_factory(builtin=True)
    server.put_model("checkpoints", CKPT, sd_files("sd1"))

    info = server.get("/object_info/SamplerCustomAdvanced").json()["SamplerCustomAdvanced"]
    assert info["output"] == ["LATENT", "LATENT"]
    assert info["output_name"] == ["output", "denoised_output"]
    assert list(info["input"]["required"]) == ["noise", "guider", "sampler", "sigmas",
                                               "latent_image"]
    select = server.get("/object_info/KSamplerSelect").json()["KSamplerSelect"]
    assert {"res_multistep", "er_sde", "euler_cfg_pp"} <= set(select["input"]["required"]
                                                              ["sampler_name"][0])

    reference = run(server, ksampler_prompt())
    assert reference["status"]["status_str"] == "success", reference["status"]
    custom = run(server, custom_prompt())
    assert custom["status"]["status_str"] == "success", custom["status"]
    first = pixels(server, custom)
    assert np.abs(first - pixels(server, reference)).max() <= 1

    # second run with another solver and schedule: runs, and changes the image
    again = run(server, custom_prompt("res_multistep", "kl_optimal"))
    assert again["status"]["status_str"] == "success", again["status"]
    assert np.abs(pixels(server, again) - first).max() > 0
    # back to the first settings: the same image again
    back = run(server, custom_prompt())
    assert np.array_equal(pixels(server, back), first)

    # a value the node refuses: the prompt fails with the node's message
    bad = _base()
    bad.update({
        "13": {"class_type": "KarrasScheduler", "inputs": {"steps": 4, "sigma_max": 1.0,
                                                           "sigma_min": 2.0, "rho": 7.0}},
        "3": {"class_type": "SamplerCustom", "inputs": {
            "model": ["4", 0], "add_noise": True, "noise_seed": 1, "cfg": 6.5,
            "positive": ["6", 0], "negative": ["7", 0], "sampler": ["12", 0],
            "sigmas": ["13", 0], "latent_image": ["5", 0]}},
        "12": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
    })
    failed = run(server, bad)
    assert failed["status"]["status_str"] == "error"
    errors = [m for m in failed["status"]["messages"] if m[0] == "execution_error"]
    assert errors and "sigma_min" in errors[0][1]["exception_message"]

    # an unknown sampler name is a validation error (400) naming the choices
    r = server.post("/prompt", json={"prompt": custom_prompt("no_such_solver")})
    assert r.status == 400 and "no_such_solver" in r.text

"""Node inputs that allocate (sizes, batch sizes, upscale factors) are refused at validation when
the prompt's outputs would exceed the per-prompt memory budget, with a message that names the
node, the inputs and the limit; nothing is allocated."""

from __future__ import annotations

import pytest

from loom.engine.validate import validate_prompt
from loom.graph.errors import PromptError
from loom.nodeapi import Allocation, Int, Link, Node, NodeRegistry, Output

MB = 2**20


def empty_image(width, height, batch=1, sink=True) -> dict:
    prompt = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": width, "height": height, "batch_size": batch, "color": 0},
        }
    }
    if sink:
        prompt["9"] = {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}
    return prompt


def refused(server, prompt) -> dict:
    r = server.post("/prompt", json={"prompt": prompt})
    assert r.status == 400, r.text
    body = r.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    ((node_id, entry),) = body["node_errors"].items()
    error = entry["errors"][0]
    assert error["type"] == "allocation_over_budget", error
    return {"node": node_id, **error}


@pytest.fixture
def server(loom_server_factory):
    return loom_server_factory(builtin=True)


def test_absurd_sizes_are_refused_with_the_default_budget(server):
    error = refused(server, empty_image(16384, 16384, 4096))
    assert error["node"] == "1"
    message = error["message"]
    assert "EmptyImage would allocate 12.0 TB" in message, message
    assert "width=16384, height=16384, batch_size=4096" in message
    assert "per-prompt memory limit of" in message and "--max-prompt-memory-mb" in message
    assert error["extra_info"]["input_name"] == "width"

    latent = {
        "1": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": 16384, "height": 16384, "batch_size": 4096},
        },
        "2": {"class_type": "SaveLatent", "inputs": {"samples": ["1", 0], "filename_prefix": "x"}},
    }
    error = refused(server, latent)
    assert "EmptyLatentImage would allocate 256.0 GB" in error["message"], error
    # Sane sizes still queue.
    r = server.post("/prompt", json={"prompt": empty_image(64, 64, 2)})
    assert r.status == 200, r.text


def test_the_budget_is_a_setting_and_counts_the_whole_prompt(loom_server_factory):
    srv = loom_server_factory(builtin=True, max_prompt_memory_mb=64)
    assert srv.post("/prompt", json={"prompt": empty_image(1024, 1024, 1)}).status == 200  # 12 MB
    error = refused(srv, empty_image(2048, 2048, 2))  # 96 MB
    assert "limit of 64.0 MB" in error["message"]
    # Three 24 MB images: each fits, together they do not (the executor keeps them all).
    prompt = {}
    for i in range(3):
        prompt.update(
            {
                f"{i}": {
                    "class_type": "EmptyImage",
                    "inputs": {"width": 2048, "height": 1024, "batch_size": 1, "color": 0},
                },
                f"s{i}": {"class_type": "PreviewImage", "inputs": {"images": [f"{i}", 0]}},
            }
        )
    error = refused(srv, prompt)
    assert "the prompt's outputs would take 72.0 MB" in error["message"], error
    assert "batch_size=1" in error["message"]


@pytest.mark.parametrize(
    "node, inputs, culprit",
    [
        ("ImageScaleBy", {"upscale_method": "nearest-exact", "scale_by": 8.0}, "scale_by=8.0"),
        (
            "ImageScale",
            {"upscale_method": "nearest-exact", "width": 16384, "height": 16384, "crop": "disabled"},
            "width=16384",
        ),
        (
            "ImageScale",
            {"upscale_method": "nearest-exact", "width": 16384, "height": 0, "crop": "disabled"},
            "width=16384, height=0",
        ),
        (
            "ImagePadForOutpaint",
            {"left": 8192, "top": 8192, "right": 8192, "bottom": 8192, "feathering": 0},
            "left=8192",
        ),
    ],
)
def test_upscales_are_estimated_from_the_upstream_size(loom_server_factory, node, inputs, culprit):
    srv = loom_server_factory(builtin=True, max_prompt_memory_mb=512)
    prompt = empty_image(1024, 1024, 2, sink=False)
    prompt["2"] = {"class_type": node, "inputs": {"image": ["1", 0], **inputs}}
    prompt["9"] = {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}
    error = refused(srv, prompt)
    assert error["node"] == "2" and culprit in error["message"], error
    # The same node with a modest setting passes.
    prompt["2"]["inputs"].update(
        {"scale_by": 1.5}
        if node == "ImageScaleBy"
        else {k: 64 for k in ("width", "height", "left", "top", "right", "bottom") if k in inputs}
    )
    r = srv.post("/prompt", json={"prompt": prompt})
    assert r.status == 200, r.text


def test_latent_chains_are_estimated(loom_server_factory):
    srv = loom_server_factory(builtin=True, max_prompt_memory_mb=256)
    prompt = {
        "1": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": 1024, "height": 1024, "batch_size": 256},
        },  # 64 MB
        "2": {"class_type": "RepeatLatentBatch", "inputs": {"samples": ["1", 0], "amount": 8}},  # 512 MB
        "3": {"class_type": "SaveLatent", "inputs": {"samples": ["2", 0], "filename_prefix": "x"}},
    }
    error = refused(srv, prompt)
    assert error["node"] == "2" and "amount=8" in error["message"]
    prompt["2"] = {
        "class_type": "LatentUpscaleBy",
        "inputs": {"samples": ["1", 0], "upscale_method": "nearest-exact", "scale_by": 4.0},
    }
    error = refused(srv, prompt)
    assert error["node"] == "2" and "scale_by=4.0" in error["message"]


def test_load_image_shape_feeds_the_estimate(loom_server_factory):
    from PIL import Image

    srv = loom_server_factory(builtin=True, max_prompt_memory_mb=100)
    Image.new("RGB", (2000, 1000)).save(srv.settings.folders.input_dir / "wide.png")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "wide.png"}},
        "2": {
            "class_type": "ImageScaleBy",
            "inputs": {"image": ["1", 0], "upscale_method": "nearest-exact", "scale_by": 2.0},
        },
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }
    error = refused(srv, prompt)  # 2000×1000 is 32 MB with its mask; ×4 is 96 MB more
    assert error["node"] == "2" and "scale_by=2.0" in error["message"]


# -- the node API --------------------------------------------------------------------------------


class Make(Node):
    inputs = {"n": Int(1)}
    outputs = (Output("T"),)

    @classmethod
    def allocation(cls, ctx, n=1, **_):
        return Allocation(((n, MB // 4),), ("n",))  # n MB of float32

    def run(self, n):
        return (None,)


class Double(Node):
    inputs = {"x": Link("T")}
    outputs = (Output("T"),)

    @classmethod
    def allocation(cls, ctx, x=None, **_):
        return Allocation(((x[0] * 2, x[1]),) if x else (None,))

    def run(self, x):
        return (None,)


class BrokenEstimate(Node):
    inputs = {"x": Link("T")}
    outputs = (
        Output(
            "T",
        ),
    )
    output_node = True

    @classmethod
    def allocation(cls, ctx, x=None, **_):
        raise SystemExit("a plugin's bad estimate")

    def run(self, x):
        return (None,)


def test_estimates_propagate_through_links_and_bad_estimates_are_ignored():
    class Settings:
        max_prompt_memory_mb = 10

    class Ctx:
        settings = Settings()

    reg = NodeRegistry()
    for cls in (Make, Double, BrokenEstimate):
        reg.register(cls.__name__, cls)
    prompt = {
        "1": {"class_type": "Make", "inputs": {"n": 3}},
        "2": {"class_type": "Double", "inputs": {"x": ["1", 0]}},
        "3": {"class_type": "BrokenEstimate", "inputs": {"x": ["2", 0]}},
    }
    validate_prompt(prompt, reg, Ctx())  # 3 + 6 MB fit in 10
    prompt["1"]["inputs"]["n"] = 4  # 4 + 8 MB do not
    with pytest.raises(PromptError) as info:
        validate_prompt(prompt, reg, Ctx())
    entry = info.value.node_errors["2"]
    assert entry["dependent_outputs"] == ["3"]
    assert "outputs would take 12.0 MB" in entry["errors"][0]["message"]


def test_a_size_wired_from_a_node_without_an_estimate_is_accepted(server):
    """A primitive feeding a size gives no shape to check: the prompt is queued, not a 500."""
    prompt = empty_image(8, 4)
    prompt["1"]["inputs"]["width"] = ["5", 0]
    prompt["5"] = {"class_type": "PrimitiveInt", "inputs": {"value": 8}}
    r = server.post("/prompt", json={"prompt": prompt})
    assert r.status == 200, r.text
    assert server.wait_history(r.json()["prompt_id"])["status"]["status_str"] == "success"

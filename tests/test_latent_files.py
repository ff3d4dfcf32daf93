"""SaveLatent / LoadLatent: ComfyUI's ``.latent`` files (safetensors with ``latent_tensor`` and
the ``latent_format_version_0`` marker), saved to output/ and loaded from input/; and PreviewAny."""

from __future__ import annotations

import json
import shutil

import pytest
import safetensors
import safetensors.torch
import torch

from loom.nodeapi import RunContext
from loom.paths import Folders
from nodes.latent import LoadLatent, SaveLatent, list_input_latents
from nodes.primitives import PreviewAny


@pytest.fixture
def ctx(tmp_path) -> RunContext:
    folders = Folders.under(tmp_path)
    folders.create()
    return RunContext(paths=folders)


def test_save_writes_comfyui_format_with_metadata_and_counts_up(ctx):
    samples = torch.randn(2, 4, 8, 8)
    prompt = {"1": {"class_type": "SaveLatent", "inputs": {}}}
    result = SaveLatent(ctx).run({"samples": samples}, "latents/test", prompt, {"workflow": {"nodes": []}})
    assert result.ui == {
        "latents": [{"filename": "test_00001_.latent", "subfolder": "latents", "type": "output"}]
    }
    path = ctx.paths.output_dir / "latents" / "test_00001_.latent"
    tensors = safetensors.torch.load_file(str(path))
    assert set(tensors) == {"latent_tensor", "latent_format_version_0"}
    assert torch.equal(tensors["latent_tensor"], samples)
    with safetensors.safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["prompt"]) == prompt and json.loads(meta["workflow"]) == {"nodes": []}
    second = SaveLatent(ctx).run({"samples": samples}, "latents/test")
    assert second.ui["latents"][0]["filename"] == "test_00002_.latent"


def test_load_round_trip_and_legacy_scaling(ctx):
    samples = torch.randn(1, 4, 8, 8)
    SaveLatent(ctx).run({"samples": samples}, "ComfyUI")
    shutil.copy(ctx.paths.output_dir / "ComfyUI_00001_.latent", ctx.paths.input_dir / "a.latent")
    # a file from before the format marker holds latents times 0.18215
    safetensors.torch.save_file({"latent_tensor": samples * 0.18215}, str(ctx.paths.input_dir / "old.latent"))
    assert list_input_latents(ctx) == ["a.latent", "old.latent"]
    (loaded,) = LoadLatent(ctx).run("a.latent")
    assert torch.equal(loaded["samples"], samples)
    (old,) = LoadLatent(ctx).run("old.latent")
    torch.testing.assert_close(old["samples"], samples)
    assert LoadLatent.fingerprint(ctx, latent="a.latent") != LoadLatent.fingerprint(ctx, latent="old.latent")


def test_bad_latent_files_are_explained(ctx):
    assert "was not found" in LoadLatent.validate_inputs(ctx, latent="nope.latent")
    assert "Invalid latent file name" in LoadLatent.validate_inputs(ctx, latent="../x.latent")
    (ctx.paths.input_dir / "junk.latent").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="is not a .latent file"):
        LoadLatent(ctx).run("junk.latent")
    safetensors.torch.save_file({"x": torch.zeros(1)}, str(ctx.paths.input_dir / "other.latent"))
    with pytest.raises(ValueError, match="holds no 'latent_tensor'"):
        LoadLatent(ctx).run("other.latent")
    with pytest.raises(ValueError, match="must end with a file name"):
        SaveLatent(ctx).run({"samples": torch.zeros(1, 4, 8, 8)}, "latents/")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("hello", "hello"),
        (3, "3"),
        (0.5, "0.5"),
        (True, "True"),
        (None, "None"),
        ({"a": [1, 2]}, json.dumps({"a": [1, 2]}, indent=4)),
        (torch.zeros(2, 3), "tensor of shape [2, 3], float32"),
    ],
)
def test_preview_any(value, text):
    assert PreviewAny().run(value).ui == {"text": [text]}

"""Image nodes on real files: loading (alpha, EXIF, modes, animation), saving with metadata."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from loom.engine.executor import Executor
from loom.engine.validate import validate_prompt
from loom.graph.errors import PromptError
from loom.nodeapi import NodeRegistry, RunContext
from loom.nodeapi.loader import load_packs
from loom.paths import UnsafePathError
from nodes import image as img_nodes
from nodes.image import (
    EmptyImage,
    ImageInvert,
    InvertMask,
    LoadImage,
    LoadImageMask,
    PreviewImage,
    SaveImage,
    SolidMask,
    list_input_images,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def ctx(folders) -> RunContext:
    return RunContext(paths=folders)


def rng_image(h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, c), dtype=np.uint8)


def load(ctx, name):
    return LoadImage(ctx).run(image=name)


# -- LoadImage ---------------------------------------------------------------------------------


def test_png_with_alpha_gives_pixels_and_inverted_alpha_mask(ctx, folders):
    arr = rng_image(24, 40, 4)
    Image.fromarray(arr, "RGBA").save(folders.input_dir / "a.png")
    image, mask = load(ctx, "a.png")
    assert image.dtype == torch.float32 and mask.dtype == torch.float32
    assert image.shape == (1, 24, 40, 3) and mask.shape == (1, 24, 40)
    np.testing.assert_allclose(image[0].numpy(), arr[..., :3] / 255.0, atol=1e-6)
    np.testing.assert_allclose(mask[0].numpy(), 1.0 - arr[..., 3] / 255.0, atol=1e-6)


def test_opaque_rgb_has_64x64_zero_mask(ctx, folders):
    arr = rng_image(10, 12, 3, seed=1)
    Image.fromarray(arr, "RGB").save(folders.input_dir / "b.png")
    image, mask = load(ctx, "b.png")
    np.testing.assert_allclose(image[0].numpy(), arr / 255.0, atol=1e-6)
    assert mask.shape == (1, 64, 64) and not mask.any()


def test_jpeg_exif_orientation_is_applied(ctx, folders):
    # Stored 40 wide x 20 high, left half red, right half blue; orientation 6 means "rotate 90
    # degrees clockwise to display", so the displayed image is 20 wide x 40 high, red on top.
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(arr).save(folders.input_dir / "rot.jpg", quality=95, exif=exif)
    image, _ = load(ctx, "rot.jpg")
    assert image.shape == (1, 40, 20, 3)
    top, bottom = image[0, :15].mean(dim=(0, 1)), image[0, 25:].mean(dim=(0, 1))
    assert top[0] > 0.9 and top[2] < 0.1, top
    assert bottom[2] > 0.9 and bottom[0] < 0.1, bottom


def test_grayscale_becomes_three_equal_channels(ctx, folders):
    arr = rng_image(16, 16, 1, seed=2)[..., 0]
    Image.fromarray(arr, "L").save(folders.input_dir / "g.png")
    image, mask = load(ctx, "g.png")
    assert image.shape == (1, 16, 16, 3)
    for c in range(3):
        np.testing.assert_allclose(image[0, ..., c].numpy(), arr / 255.0, atol=1e-6)
    assert mask.shape == (1, 64, 64)


def test_16_bit_grayscale_keeps_its_precision(ctx, folders):
    arr = np.random.default_rng(3).integers(0, 65536, size=(8, 9), dtype=np.uint16)
    arr[0, 0], arr[0, 1] = 0, 65535
    Image.fromarray(arr).save(folders.input_dir / "deep.png")
    with Image.open(folders.input_dir / "deep.png") as check:
        assert check.mode.startswith("I")  # really a 16-bit file
    image, _ = load(ctx, "deep.png")
    np.testing.assert_allclose(image[0, ..., 0].numpy(), arr / 65535.0, atol=1e-6)
    assert image[0, 0, 1, 0] == 1.0 and image[0, 0, 0, 0] == 0.0


def test_palette_with_transparency_gives_a_mask(ctx, folders):
    pal = Image.new("P", (6, 4), 0)
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 6))
    for x in range(3):
        for y in range(4):
            pal.putpixel((x, y), 1)
    pal.save(folders.input_dir / "p.png", transparency=0)
    image, mask = load(ctx, "p.png")
    assert mask.shape == (1, 4, 6)
    assert mask[0, :, :3].eq(0).all() and mask[0, :, 3:].eq(1).all()
    np.testing.assert_allclose(image[0, 0, 0].numpy(), [0, 1, 0], atol=1e-6)


def test_animated_gif_frames_become_a_batch(ctx, folders):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [Image.new("RGB", (8, 6), c) for c in colours]
    frames[0].save(folders.input_dir / "anim.gif", save_all=True, append_images=frames[1:],
                   duration=50, loop=0)
    image, mask = load(ctx, "anim.gif")
    assert image.shape == (3, 6, 8, 3)
    assert mask.shape[0] == 3
    for i, c in enumerate(colours):
        np.testing.assert_allclose(image[i].mean(dim=(0, 1)).numpy(), np.array(c) / 255.0, atol=1e-6)


def test_listing_is_recursive_and_only_images(ctx, folders):
    (folders.input_dir / "sub").mkdir()
    Image.new("RGB", (2, 2)).save(folders.input_dir / "sub" / "x.webp")
    Image.new("RGB", (2, 2)).save(folders.input_dir / "B.PNG")
    Image.new("RGB", (2, 2)).save(folders.input_dir / ".hidden.png")
    (folders.input_dir / "notes.txt").write_text("no")
    assert list_input_images(ctx) == ["B.PNG", "sub/x.webp"]
    # The combo is live, so /object_info and validation see new uploads.
    desc = LoadImage.inputs["image"].describe(ctx)
    assert desc[0] == ["B.PNG", "sub/x.webp"] and desc[1]["image_upload"] is True
    image, _ = load(ctx, "sub/x.webp")
    assert image.shape == (1, 2, 2, 3)


def test_fingerprint_changes_when_the_file_changes(ctx, folders):
    path = folders.input_dir / "f.png"
    Image.new("RGB", (4, 4), (1, 2, 3)).save(path)
    first = LoadImage.fingerprint(ctx, image="f.png")
    assert first == LoadImage.fingerprint(ctx, image="f.png")
    Image.new("RGB", (4, 4), (9, 9, 9)).save(path)
    os.utime(path, ns=(1, 1))  # even with an old mtime, the content hash differs
    assert LoadImage.fingerprint(ctx, image="f.png") != first


def test_validate_inputs_names_a_missing_file_and_refuses_traversal(ctx):
    message = LoadImage.validate_inputs(ctx, image="gone.png")
    assert "gone.png" in message and "input folder" in message
    assert "Invalid image name" in LoadImage.validate_inputs(ctx, image="../../etc/passwd")
    with pytest.raises(UnsafePathError):
        load(ctx, "../secret.png")


def test_queueing_a_missing_image_says_where_it_should_be(ctx, folders):
    Image.new("RGB", (2, 2)).save(folders.input_dir / "there.png")
    registry = NodeRegistry()
    registry.register("LoadImage", LoadImage)
    registry.register("PreviewImage", PreviewImage)
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "gone.png"}},
              "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    with pytest.raises(PromptError) as err:
        validate_prompt(prompt, registry, ctx)
    [problem] = err.value.node_errors["1"]["errors"]
    assert problem["type"] == "value_not_in_list"
    assert "'gone.png' was not found in the input folder" in problem["message"]
    assert str(folders.input_dir) in problem["message"]


@pytest.mark.parametrize("channel,expected", [
    ("alpha", lambda a: 1.0 - a[..., 3] / 255.0),
    ("red", lambda a: a[..., 0] / 255.0),
    ("blue", lambda a: a[..., 2] / 255.0),
])
def test_load_image_mask_channels(ctx, folders, channel, expected):
    arr = rng_image(5, 7, 4, seed=4)
    Image.fromarray(arr, "RGBA").save(folders.input_dir / "m.png")
    (mask,) = LoadImageMask(ctx).run(image="m.png", channel=channel)
    assert mask.shape == (1, 5, 7)
    np.testing.assert_allclose(mask[0].numpy(), expected(arr), atol=1e-6)


# -- SaveImage / PreviewImage ------------------------------------------------------------------


PROMPT = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8}}, "2": {"class_type": "SaveImage"}}
WORKFLOW = {"version": 0.4, "nodes": [{"id": 1, "type": "EmptyImage"}], "links": []}


def test_save_writes_png_with_prompt_and_workflow_chunks(ctx, folders):
    pixels = torch.from_numpy(rng_image(6, 5, 3, seed=5).astype(np.float32) / 255.0)[None]
    result = SaveImage(ctx).run(images=pixels, filename_prefix="Loom", prompt=PROMPT,
                                extra_pnginfo={"workflow": WORKFLOW})
    assert result.outputs == ()
    assert result.ui == {"images": [{"filename": "Loom_00001_.png", "subfolder": "", "type": "output"}]}
    with Image.open(folders.output_dir / "Loom_00001_.png") as png:
        png.load()
        assert json.loads(png.text["prompt"]) == PROMPT
        assert json.loads(png.text["workflow"]) == WORKFLOW
        np.testing.assert_array_equal(np.asarray(png.convert("RGB")),
                                      (pixels[0].numpy() * 255).round().astype(np.uint8))


def test_counter_increments_and_follows_the_highest_existing(ctx, folders):
    one = torch.zeros(1, 4, 4, 3)
    names = [SaveImage(ctx).run(images=one, filename_prefix="x")
             .ui["images"][0]["filename"] for _ in range(2)]
    assert names == ["x_00001_.png", "x_00002_.png"]
    (folders.output_dir / "x_00041_.png").write_bytes(b"")
    (folders.output_dir / "xy_00099_.png").write_bytes(b"")  # another prefix: ignored
    batch = SaveImage(ctx).run(images=torch.zeros(3, 4, 4, 3), filename_prefix="x").ui["images"]
    assert [i["filename"] for i in batch] == ["x_00042_.png", "x_00043_.png", "x_00044_.png"]


def test_atomic_write_leaves_no_temporary_files(ctx, folders):
    SaveImage(ctx).run(images=torch.rand(2, 8, 8, 4), filename_prefix="a/b")
    files = sorted(p.name for p in (folders.output_dir / "a").iterdir())
    assert files == ["b_00001_.png", "b_00002_.png"]
    with Image.open(folders.output_dir / "a" / "b_00001_.png") as png:
        assert png.mode == "RGBA"


def test_failed_write_leaves_neither_partial_nor_temporary_file(ctx, folders, monkeypatch):
    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG half a file")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        SaveImage(ctx).run(images=torch.zeros(1, 4, 4, 3), filename_prefix="z")
    assert list(folders.output_dir.iterdir()) == []


def test_saved_files_get_normal_permissions(ctx, folders):
    old = os.umask(0o022)
    try:
        SaveImage(ctx).run(images=torch.zeros(1, 2, 2, 3), filename_prefix="perm")
    finally:
        os.umask(old)
    assert (folders.output_dir / "perm_00001_.png").stat().st_mode & 0o777 == 0o644


def test_concurrent_saves_never_overwrite_each_other(ctx, folders):
    errors = []

    def save(value):
        try:
            SaveImage(ctx).run(images=torch.full((2, 4, 4, 3), value), filename_prefix="race")
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=save, args=(i / 10,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    files = sorted(folders.output_dir.iterdir())
    assert len(files) == 12
    values = sorted(round(float(np.asarray(Image.open(f))[0, 0, 0]) / 255, 1) for f in files)
    assert values == sorted([i / 10 for i in range(6)] * 2)


@pytest.mark.parametrize("prefix", ["../escape", "/abs/x", "a/../../b", "..", "sub/", ""])
def test_prefix_that_escapes_or_names_no_file_is_refused(ctx, folders, prefix):
    with pytest.raises((UnsafePathError, ValueError)):
        SaveImage(ctx).run(images=torch.zeros(1, 2, 2, 3), filename_prefix=prefix)
    assert not (folders.base / "escape_00001_.png").exists()


def test_prefix_through_a_symlink_out_of_output_is_refused(ctx, folders, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (folders.output_dir / "link").symlink_to(outside)
    with pytest.raises(UnsafePathError):
        SaveImage(ctx).run(images=torch.zeros(1, 2, 2, 3), filename_prefix="link/x")
    assert list(outside.iterdir()) == []


def test_prefix_tokens(ctx, folders):
    ui = SaveImage(ctx).run(images=torch.zeros(1, 3, 5, 3), filename_prefix="%width%x%height%").ui
    assert ui["images"][0]["filename"] == "5x3_00001_.png"
    assert img_nodes.expand_prefix("%date:yyyy-MM-dd%", 1, 1, now=0).count("-") == 2


def test_metadata_can_be_disabled(folders):
    ctx = RunContext(paths=folders, settings=SimpleNamespace(disable_metadata=True))
    SaveImage(ctx).run(images=torch.zeros(1, 2, 2, 3), filename_prefix="n", prompt=PROMPT)
    with Image.open(folders.output_dir / "n_00001_.png") as png:
        assert "prompt" not in png.info


def test_preview_goes_to_temp_with_metadata(ctx, folders):
    ui = PreviewImage(ctx).run(images=torch.zeros(2, 2, 2, 3), prompt=PROMPT).ui["images"]
    assert [i["type"] for i in ui] == ["temp", "temp"]
    assert list(folders.output_dir.iterdir()) == []
    with Image.open(folders.temp_dir / ui[0]["filename"]) as png:
        assert json.loads(png.text["prompt"]) == PROMPT
    again = PreviewImage(ctx).run(images=torch.zeros(1, 2, 2, 3)).ui["images"][0]["filename"]
    assert again.split("_")[1] != ui[0]["filename"].split("_")[1]  # its own prefix


def test_grayscale_image_tensor_saves_as_l(ctx, folders):
    SaveImage(ctx).run(images=torch.full((1, 3, 3, 1), 0.5), filename_prefix="gray")
    with Image.open(folders.output_dir / "gray_00001_.png") as png:
        assert png.mode == "L" and png.getpixel((0, 0)) == 128


# -- utilities ---------------------------------------------------------------------------------


def test_small_utilities(ctx):
    (img,) = EmptyImage(ctx).run(width=4, height=3, batch_size=2, color=0xFF8000)
    assert img.shape == (2, 3, 4, 3)
    np.testing.assert_allclose(img[1, 2, 3].numpy(), [1.0, 128 / 255, 0.0], atol=1e-6)
    (inv,) = ImageInvert(ctx).run(image=img)
    np.testing.assert_allclose(inv[0, 0, 0].numpy(), [0.0, 1 - 128 / 255, 1.0], atol=1e-6)
    (mask,) = SolidMask(ctx).run(value=0.25, width=4, height=2)
    assert mask.shape == (1, 2, 4) and mask.eq(0.25).all()
    assert InvertMask(ctx).run(mask=mask)[0].eq(0.75).all()


# -- through the real loader, validator and executor ---------------------------------------------


def test_load_edit_save_through_the_engine(folders):
    registry = NodeRegistry()
    infos = load_packs(registry, REPO / "nodes", builtin=True)
    assert all(i.error is None for i in infos), [i.error for i in infos if i.error]
    assert {"LoadImage", "LoadImageMask", "SaveImage", "PreviewImage"} <= set(registry.classes)
    assert "Note" not in registry.classes  # front-end only: the converter drops it
    info = registry.describe("SaveImage")
    assert info["output_node"] is True
    assert info["input"]["hidden"] == {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}

    arr = rng_image(6, 6, 4, seed=6)
    Image.fromarray(arr, "RGBA").save(folders.input_dir / "in.png")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "e2e"}},
    }
    ctx = RunContext(paths=folders)
    executor = Executor(paths=folders)
    result = executor.execute(validate_prompt(prompt, registry, ctx), "p1",
                              extra_data={"extra_pnginfo": {"workflow": WORKFLOW}})
    assert result.status == "success", result.error
    assert result.outputs["3"]["images"][0]["filename"] == "e2e_00001_.png"
    with Image.open(folders.output_dir / "e2e_00001_.png") as png:
        png.load()
        assert json.loads(png.text["prompt"]) == prompt
        assert json.loads(png.text["workflow"]) == WORKFLOW
        np.testing.assert_array_equal(np.asarray(png), 255 - arr[..., :3])

    # Unchanged file: LoadImage is cached. A changed file re-runs it.
    again = executor.execute(validate_prompt(prompt, registry, ctx), "p2")
    assert "1" in again.cached
    Image.fromarray(rng_image(6, 6, 4, seed=7), "RGBA").save(folders.input_dir / "in.png")
    third = executor.execute(validate_prompt(prompt, registry, ctx), "p3")
    assert "1" in third.executed and "1" not in third.cached


def test_upload_load_save_and_view_over_http(loom_server_factory):
    import io

    import aiohttp

    server = loom_server_factory(builtin=True)
    arr = rng_image(5, 7, 4, seed=8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGBA").save(buf, format="PNG")
    form = aiohttp.FormData()
    form.add_field("image", buf.getvalue(), filename="upload.png", content_type="image/png")
    form.add_field("subfolder", "tests")
    r = server.post("/upload/image", data=form)
    assert r.status == 200, r.text
    name = f"{r.json()['subfolder']}/{r.json()['name']}"
    choices = server.get("/object_info/LoadImage").json()["LoadImage"]["input"]["required"]["image"]
    assert name in choices[0]

    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": name}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "web/up"}},
    }
    entry = server.run_prompt(prompt, extra_data={"extra_pnginfo": {"workflow": WORKFLOW}})
    assert entry["status"]["status_str"] == "success", entry["status"]
    [saved] = entry["outputs"]["2"]["images"]
    assert saved == {"filename": "up_00001_.png", "subfolder": "web", "type": "output"}
    view = server.get("/view", params=saved)
    assert view.status == 200 and view.headers["Content-Type"] == "image/png"
    with Image.open(io.BytesIO(view.body)) as png:
        png.load()
        assert json.loads(png.text["prompt"]) == prompt
        assert json.loads(png.text["workflow"]) == WORKFLOW
        np.testing.assert_array_equal(np.asarray(png), arr[..., :3])

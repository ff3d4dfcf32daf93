"""Image files Loom did not write: only PNG, JPEG, WebP, GIF, BMP and TIFF are opened (checked
before anything decodes), the whole decode (frames × pixels) is budgeted, and listing input/
follows no symlinked folder and runs off the event loop."""

from __future__ import annotations

import io
import os
import struct
import threading
import time

import aiohttp
import numpy as np
import pytest
from PIL import Image

from loom import imageio
from loom.files import list_input_files
from loom.nodeapi import RunContext
from loom.paths import Folders


def encode(fmt: str, size=(16, 12), mode="RGB", **kw) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, (200, 10, 10) if mode == "RGB" else 0).save(buf, format=fmt, **kw)
    return buf.getvalue()


def gif_bomb(width: int, height: int, frames: int) -> bytes:
    """A GIF whose logical screen is width × height with ``frames`` frames of one pixel each:
    a few bytes per frame on disk, width × height pixels per frame once decoded."""
    out = bytearray(b"GIF89a" + struct.pack("<HH", width, height) + bytes([0x80, 0, 0]))
    out += bytes([0, 0, 0, 255, 255, 255])  # a 2-colour global table
    out += b"!\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"  # loop forever
    for _ in range(frames):
        out += b"!\xf9\x04\x00\x01\x00\x00\x00"  # graphic control: 1/100 s per frame
        out += b"," + struct.pack("<HHHH", 0, 0, 1, 1) + b"\x00"
        out += b"\x02\x02\x44\x01\x00"  # LZW: one pixel of colour 0
    return bytes(out + b";")


def upload(server, data: bytes, name: str = "x.png", path: str = "/upload/image", **fields):
    form = aiohttp.FormData()
    form.add_field("image", data, filename=name, content_type="application/octet-stream")
    for key, value in fields.items():
        form.add_field(key, value)
    return server.post(path, data=form)


def load_prompt(name: str, node: str = "LoadImage") -> dict:
    inputs = {"image": name} if node == "LoadImage" else {"image": name, "channel": "alpha"}
    sink = (
        {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}
        if node == "LoadImage"
        else {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}
    )
    return {"1": {"class_type": node, "inputs": inputs}, "2": sink}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.server_fixture import LoomTestServer, make_settings

    srv = LoomTestServer(make_settings(tmp_path_factory.mktemp("images"), builtin=True))
    yield srv
    srv.stop()


# -- formats -------------------------------------------------------------------------------------

ALLOWED = [("PNG", {}), ("JPEG", {}), ("WEBP", {}), ("GIF", {}), ("BMP", {}), ("TIFF", {})]
REFUSED = ["EPS", "PPM", "ICO", "TGA", "PCX", "SGI", "IM", "DDS", "QOI", "JPEG2000", "ICNS", "PDF", "SPIDER"]


@pytest.mark.parametrize("fmt, kw", ALLOWED)
def test_allowed_formats_upload_and_load(server, fmt, kw):
    r = upload(server, encode(fmt, **kw), f"ok_{fmt}.img.{fmt.lower()}")
    assert r.status == 200, r.text
    name = r.json()["name"]
    if not name.lower().endswith((".png", ".jpeg", ".webp", ".gif", ".bmp", ".tiff")):
        return
    entry = server.run_prompt(load_prompt(name))
    assert entry["status"]["status_str"] == "success", entry


@pytest.mark.parametrize("fmt", REFUSED)
def test_other_formats_are_refused_before_any_decoder_sees_them(server, fmt, monkeypatch):
    data = encode(fmt)
    # Pillow would have identified each of these; its openers for them must not even be tried.
    Image.init()
    tried = []
    for name, (factory, accept) in list(Image.OPEN.items()):
        if name not in imageio.ALLOWED_FORMATS:
            monkeypatch.setitem(
                Image.OPEN,
                name,
                (
                    factory,
                    lambda prefix, _n=name, _a=accept: tried.append(_n) or (_a(prefix) if _a else True),
                ),
            )
    r = upload(server, data, f"bad_{fmt}.png")
    assert r.status == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_image"
    assert "PNG, JPEG, WebP, GIF, BMP or TIFF" in error["message"], error
    assert tried == [], tried
    if fmt == "EPS":
        assert "EPS" in error["message"]


@pytest.mark.parametrize("fmt", ["EPS", "PPM", "ICO", "TGA"])
def test_load_image_names_the_refused_format(server, fmt):
    name = f"disguised_{fmt}.png"
    (server.settings.folders.input_dir / name).write_bytes(encode(fmt))
    for node in ("LoadImage", "LoadImageMask"):
        r = server.post("/prompt", json={"prompt": load_prompt(name, node)})
        assert r.status == 400, r.text
        message = r.json()["node_errors"]["1"]["errors"][0]["message"]
        assert "is not a PNG, JPEG, WebP, GIF, BMP or TIFF image" in message, message
    with pytest.raises(imageio.ImageRefused, match="not a PNG"):
        from nodes.image import load_image_file

        load_image_file(server.settings.folders.input_dir / name)


# -- pixel budget --------------------------------------------------------------------------------


def test_animated_bomb_is_refused_from_its_header(server):
    bomb = gif_bomb(4000, 4000, 100)
    assert len(bomb) < 2500
    with Image.open(io.BytesIO(bomb)) as img:  # what it would have decoded to
        assert img.size == (4000, 4000) and img.n_frames == 100
    r = upload(server, bomb, "bomb.gif")
    assert r.status == 400, r.text
    assert "4000×4000 × 100 frames" in r.json()["error"]["message"]
    assert "--max-image-megapixels" in r.json()["error"]["message"]

    (server.settings.folders.input_dir / "bomb_in_input.gif").write_bytes(bomb)
    r = server.post("/prompt", json={"prompt": load_prompt("bomb_in_input.gif")})
    assert r.status == 400, r.text
    assert "megapixels" in r.json()["node_errors"]["1"]["errors"][0]["message"]


def test_big_single_frame_is_refused_on_upload_mask_and_load(server):
    big = encode("PNG", size=(10000, 10000), mode="1", optimize=True)
    assert len(big) < 200_000
    r = upload(server, big, "big.png")
    assert r.status == 400 and "10000×10000" in r.json()["error"]["message"], r.text
    # /upload/mask: the mask itself, and the original it is applied to.
    r = upload(server, encode("PNG", size=(8, 8)), "small.png")
    assert r.status == 200
    ref = '{"filename": "small.png", "type": "input", "subfolder": ""}'
    r = upload(server, big, "mask.png", "/upload/mask", original_ref=ref)
    assert r.status == 400 and "megapixels" in r.json()["error"]["message"], r.text
    (server.settings.folders.input_dir / "big_original.png").write_bytes(big)
    ref = '{"filename": "big_original.png", "type": "input", "subfolder": ""}'
    r = upload(server, encode("PNG", size=(8, 8), mode="RGBA"), "m.png", "/upload/mask", original_ref=ref)
    assert r.status == 400 and "megapixels" in r.json()["error"]["message"], r.text
    for node in ("LoadImage", "LoadImageMask"):
        r = server.post("/prompt", json={"prompt": load_prompt("big_original.png", node)})
        assert r.status == 400, r.text


def test_the_budget_counts_every_frame_at_its_own_size(tmp_path):
    # A TIFF whose first page is tiny and whose second is not: the header alone does not tell.
    path = tmp_path / "pages.tiff"
    Image.new("L", (2, 2)).save(path, save_all=True, append_images=[Image.new("L", (1200, 1000))])
    from nodes.image import load_image_file

    with pytest.raises(imageio.ImageRefused, match="2 frames"):
        load_image_file(path, max_pixels=1_000_000)
    image, _ = load_image_file(path, max_pixels=2_000_000)  # frames of another size are dropped
    assert tuple(image.shape) == (1, 2, 2, 3)
    # A GIF: frames × canvas.
    gif = tmp_path / "anim.gif"
    gif.write_bytes(gif_bomb(40, 30, 10))
    with pytest.raises(imageio.ImageRefused, match="40×30 × 10 frames"):
        load_image_file(gif, max_pixels=11_999)
    image, mask = load_image_file(gif, max_pixels=12_000)
    assert tuple(image.shape) == (10, 30, 40, 3)


def test_the_budget_is_a_setting(loom_server_factory):
    srv = loom_server_factory(builtin=True, max_image_megapixels=0.01)  # 10,000 pixels
    assert upload(srv, encode("PNG", size=(100, 100)), "a.png").status == 200
    r = upload(srv, encode("PNG", size=(110, 100)), "b.png")
    assert r.status == 400 and "limit of 0.01" in r.json()["error"]["message"], r.text


def test_load_image_still_reads_every_frame_and_alpha(tmp_path):
    frames = [Image.new("RGBA", (6, 4), (i * 40, 0, 0, 128)) for i in range(3)]
    path = tmp_path / "a.webp"
    frames[0].save(path, save_all=True, append_images=frames[1:], lossless=True, duration=10)
    from nodes.image import load_image_file

    image, mask = load_image_file(path)
    assert tuple(image.shape) == (3, 4, 6, 3) and tuple(mask.shape) == (3, 4, 6)
    assert np.allclose(mask.numpy(), 1 - 128 / 255, atol=1e-3)


# -- listing input/ ------------------------------------------------------------------------------


def make_tree(base):
    inp = base / "input"
    (inp / "sub").mkdir(parents=True)
    (inp / "a.png").write_bytes(encode("PNG"))
    (inp / "sub" / "b.png").write_bytes(encode("PNG"))
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(encode("PNG"))
    os.symlink(inp, inp / "loop1")  # loops: each link leads back to the folder itself
    os.symlink(inp, inp / "sub" / "loop2")
    os.symlink("..", inp / "sub" / "up")
    os.symlink(outside, inp / "out")  # a folder elsewhere
    os.symlink(outside / "secret.png", inp / "leak.png")  # a file elsewhere
    os.symlink(inp / "a.png", inp / "alias.png")  # a file inside: fine
    os.symlink(inp / "missing.png", inp / "dangling.png")
    return inp


def test_listing_follows_no_link_out_of_or_around_the_folder(tmp_path):
    inp = make_tree(tmp_path)
    ctx = RunContext(paths=Folders.under(tmp_path))
    start = time.monotonic()
    assert list_input_files(ctx, (".png",)) == ["a.png", "alias.png", "sub/b.png"]
    assert time.monotonic() - start < 2
    models = Folders.under(tmp_path)
    ckpts = models.model_folder("checkpoints")
    ckpts.mkdir(parents=True)
    (ckpts / "m.safetensors").write_bytes(b"x")
    os.symlink(ckpts, ckpts / "loop")
    os.symlink(inp, ckpts / "elsewhere")
    assert models.list_models("checkpoints") == ["m.safetensors"]


def test_a_symlink_loop_in_input_does_not_freeze_the_server(loom_server_factory, tmp_path):
    base = tmp_path / "srv"
    make_tree(base)
    srv = loom_server_factory(base_dir=base, builtin=True)
    start = time.monotonic()
    r = srv.get("/object_info/LoadImage", timeout=20)
    assert r.status == 200
    assert r.json()["LoadImage"]["input"]["required"]["image"][0] == ["a.png", "alias.png", "sub/b.png"]
    r = srv.get("/object_info", timeout=20)
    assert r.status == 200
    assert time.monotonic() - start < 10


def test_listing_does_not_block_the_event_loop(loom_server_factory, monkeypatch):
    import nodes.image

    srv = loom_server_factory(builtin=True)
    release = threading.Event()
    real = nodes.image.list_input_images

    def slow(ctx):
        release.wait(10)  # a folder on a slow network drive
        return real(ctx)

    inp = srv.state.registry.get("LoadImage").inputs["image"]
    monkeypatch.setattr(inp, "choices", slow)
    done = {}
    t = threading.Thread(target=lambda: done.setdefault("r", srv.get("/object_info", timeout=30)))
    t.start()
    time.sleep(0.3)
    start = time.monotonic()
    assert srv.get("/queue", timeout=5).status == 200  # the loop still answers
    assert time.monotonic() - start < 2
    release.set()
    t.join(30)
    assert done["r"].status == 200

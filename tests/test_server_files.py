"""Uploads, /view, user data (saved workflows), settings, models, system stats, /free."""

from __future__ import annotations

import json

import aiohttp
import conftest
import pytest
from PIL import Image

from tests.server_fixture import LoomTestServer


def png_bytes(size=(8, 6), color=(255, 0, 0, 255)) -> bytes:
    return conftest.png_bytes(size, color, "RGBA")


def upload(server: LoomTestServer, data: bytes, name: str = "pic.png", path: str = "/upload/image",
           **fields) -> tuple[int, dict]:
    form = aiohttp.FormData(quote_fields=False)  # send the filename as browsers do
    form.add_field("image", data, filename=name, content_type="image/png")
    for k, v in fields.items():
        form.add_field(k, v)
    r = server.post(path, data=form)
    return r.status, r.json()


def test_upload_then_view_round_trip(loom_server: LoomTestServer):
    data = png_bytes()
    status, body = upload(loom_server, data)
    assert status == 200, body
    assert body == {"name": "pic.png", "subfolder": "", "type": "input"}
    assert (loom_server.settings.folders.input_dir / "pic.png").read_bytes() == data
    r = loom_server.get("/view", params={"filename": "pic.png", "type": "input"})
    assert r.status == 200 and r.body == data
    assert r.headers["Content-Type"] == "image/png"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Content-Disposition"].startswith("inline")

    # The same name again: renamed, unless overwrite.
    assert upload(loom_server, data)[1]["name"] == "pic (1).png"
    assert upload(loom_server, data)[1]["name"] == "pic (2).png"
    other = png_bytes(color=(0, 0, 255, 255))
    assert upload(loom_server, other, overwrite="true")[1]["name"] == "pic.png"
    assert (loom_server.settings.folders.input_dir / "pic.png").read_bytes() == other

    # Subfolders and the other folder types.
    status, body = upload(loom_server, data, subfolder="masks/a", type="temp")
    assert status == 200 and body == {"name": "pic.png", "subfolder": "masks/a", "type": "temp"}
    r = loom_server.get("/view", params={"filename": "pic.png", "subfolder": "masks/a",
                                         "type": "temp"})
    assert r.status == 200 and r.body == data
    leftovers = [p.name for p in loom_server.settings.folders.input_dir.iterdir()]
    assert sorted(leftovers) == ["pic (1).png", "pic (2).png", "pic.png"]


def test_upload_rejections(loom_server_factory):
    server = loom_server_factory(max_upload_mb=1)
    status, body = upload(server, b"this is not an image", name="x.png")
    assert status == 400 and body["error"]["type"] == "invalid_image"
    status, body = upload(server, png_bytes(), subfolder="../escape")
    assert status == 400
    status, body = upload(server, png_bytes(), type="models")
    assert status == 400
    status, body = upload(server, png_bytes(), name="..")
    assert status == 400
    status, _ = upload(server, b"\0" * (2 * 2**20), name="big.png")
    assert status == 413
    r = server.post("/upload/image", json={"image": "x"})
    assert r.status == 400
    form = aiohttp.FormData()
    form.add_field("subfolder", "x")
    form.add_field("other", b"data", filename="a.png")
    assert server.post("/upload/image", data=form).status == 400
    assert list(server.settings.folders.input_dir.iterdir()) == []


def test_upload_strips_directories_from_the_filename(loom_server: LoomTestServer):
    status, body = upload(loom_server, png_bytes(), name="../../evil.png")
    assert status == 200 and body["name"] == "evil.png"
    assert (loom_server.settings.folders.input_dir / "evil.png").is_file()


def test_mask_upload_applies_alpha_to_the_original(loom_server: LoomTestServer):
    upload(loom_server, png_bytes((4, 4), (10, 20, 30, 255)), name="orig.png")
    mask = png_bytes((4, 4), (0, 0, 0, 0))
    status, body = upload(loom_server, mask, name="clipspace-mask.png", path="/upload/mask",
                          original_ref=json.dumps({"filename": "orig.png", "type": "input"}))
    assert status == 200, body
    with Image.open(loom_server.settings.folders.input_dir / body["name"]) as img:
        assert img.mode == "RGBA" and img.getpixel((1, 1)) == (10, 20, 30, 0)
    status, _ = upload(loom_server, mask, path="/upload/mask", original_ref="{bad")
    assert status == 400
    status, _ = upload(loom_server, mask, path="/upload/mask",
                       original_ref=json.dumps({"filename": "missing.png"}))
    assert status == 404


def test_view_never_serves_active_content_inline(loom_server: LoomTestServer):
    out = loom_server.settings.folders.output_dir
    (out / "page.html").write_text("<script>alert(1)</script>")
    (out / "pic.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    for name in ("page.html", "pic.svg"):
        r = loom_server.get("/view", params={"filename": name})
        assert r.status == 200
        assert r.headers["Content-Type"] == "application/octet-stream"
        assert r.headers["Content-Disposition"].startswith("attachment")
        assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert loom_server.get("/view", params={"filename": "missing.png"}).status == 404
    assert loom_server.get("/view", params={"filename": "x", "subfolder": "/etc"}).status == 400


def test_userdata_workflow_save_list_load_move_delete(loom_server: LoomTestServer):
    workflow = {"nodes": [], "links": [], "version": 0.4}
    body = json.dumps(workflow).encode()
    r = loom_server.post("/userdata/workflows%2Fmy%20flow.json", data=body)
    assert r.status == 200 and r.json() == "workflows/my flow.json"
    r = loom_server.post("/userdata/workflows%2Fsub%2Fother.json", data=b"{}",
                         params={"full_info": "true"})
    info = r.json()
    assert info["path"] == "workflows/sub/other.json" and info["size"] == 2 and info["modified"] > 0

    assert loom_server.get("/userdata", params={"dir": "workflows"}).json() == ["my flow.json"]
    assert loom_server.get("/userdata", params={"dir": "workflows", "recurse": "true"}).json() == [
        "my flow.json", "sub/other.json"]
    full = loom_server.get("/userdata", params={"dir": "workflows", "recurse": "true",
                                                "full_info": "true"}).json()
    assert [f["path"] for f in full] == ["my flow.json", "sub/other.json"]
    assert full[0]["size"] == len(body)
    split = loom_server.get("/userdata", params={"dir": "workflows", "recurse": "true",
                                                 "split": "true"}).json()
    assert split[1] == ["sub/other.json", "sub", "other.json"]
    assert loom_server.get("/userdata", params={"dir": "nothing"}).json() == []

    r = loom_server.get("/userdata/workflows%2Fmy%20flow.json")
    assert r.status == 200 and r.json() == workflow
    assert r.headers["Content-Type"].startswith("application/json")

    r = loom_server.post("/userdata/workflows%2Fmy%20flow.json", data=b"{}",
                         params={"overwrite": "false"})
    assert r.status == 409
    assert loom_server.get("/userdata/workflows%2Fmy%20flow.json").json() == workflow

    r = loom_server.post("/userdata/workflows%2Fmy%20flow.json/move/workflows%2Frenamed.json")
    assert r.status == 200 and r.json() == "workflows/renamed.json"
    assert loom_server.get("/userdata/workflows%2Fmy%20flow.json").status == 404
    assert loom_server.get("/userdata/workflows%2Frenamed.json").json() == workflow
    r = loom_server.post("/userdata/workflows%2Frenamed.json/move/workflows%2Fsub%2Fother.json",
                         params={"overwrite": "false"})
    assert r.status == 409
    assert loom_server.post("/userdata/workflows%2Fnope.json/move/a.json").status == 404

    v2 = loom_server.get("/v2/userdata", params={"path": "workflows"}).json()
    assert [(e["name"], e["type"]) for e in v2] == [("sub", "directory"), ("renamed.json", "file")]

    assert loom_server.delete("/userdata/workflows%2Frenamed.json").status == 204
    assert loom_server.delete("/userdata/workflows%2Frenamed.json").status == 404
    assert loom_server.get("/userdata", params={"dir": "workflows"}).json() == []
    assert loom_server.post("/userdata/workflows%2F..%2Fx.json", data=b"{}").status == 400
    assert loom_server.post("/api/userdata/%2Fabs.json", data=b"{}").status == 400


def test_settings_and_users(loom_server: LoomTestServer):
    assert loom_server.get("/settings").json() == {}
    assert loom_server.post("/settings", json={"Comfy.Theme": "dark", "n": 3}).status == 200
    assert loom_server.post("/settings/Comfy.Locale", json="en").status == 200
    assert loom_server.get("/settings").json() == {"Comfy.Theme": "dark", "n": 3,
                                                   "Comfy.Locale": "en"}
    assert loom_server.get("/settings/n").json() == 3
    assert loom_server.get("/settings/missing").json() is None
    assert loom_server.post("/settings/x", data=b"{bad").status == 400
    users = loom_server.get("/users").json()
    # Single-user: no "users" key, or ComfyUI's front end shows a user picker.
    assert users == {"storage": "server", "migrated": True}


def test_models_listing(loom_server: LoomTestServer):
    folders = loom_server.get("/models").json()
    assert "checkpoints" in folders and "loras" in folders
    ckpt = loom_server.settings.folders.models_dir / "checkpoints"
    (ckpt / "sd15").mkdir()
    (ckpt / "sd15" / "model.safetensors").write_bytes(b"x")
    (ckpt / "notes.txt").write_text("not a model")
    assert loom_server.get("/models/checkpoints").json() == ["sd15/model.safetensors"]
    r = loom_server.get("/api/models/nonsense")
    assert r.status == 404 and r.json()["error"]["type"] == "not_found"
    emb = loom_server.settings.folders.models_dir / "embeddings"
    (emb / "bad_hands.pt").write_bytes(b"x")
    assert loom_server.get("/embeddings").json() == ["bad_hands"]


def test_system_stats(loom_server: LoomTestServer):
    r = loom_server.get("/system_stats", timeout=60)
    assert r.status == 200
    stats = r.json()
    system = stats["system"]
    for key in ("os", "python_version", "loom_version", "pytorch_version", "ram_total", "ram_free",
                "argv", "embedded_python"):
        assert key in system
    assert system["ram_total"] > system["ram_free"] > 0
    assert stats["devices"] and stats["devices"][0]["type"] in ("cpu", "cuda", "mps")


def test_free_clears_the_cache(loom_server: LoomTestServer):
    prompt = {"1": {"class_type": "IntConst", "inputs": {"value": 4}},
              "2": {"class_type": "Sink", "inputs": {"value": ["1", 0]}}}
    first = loom_server.queue_prompt(prompt)
    loom_server.wait_history(first)
    cached = loom_server.queue_prompt(prompt)
    loom_server.wait_history(cached)
    assert loom_server.ran(cached) == []
    r = loom_server.post("/free", json={"unload_models": True, "free_memory": True})
    assert r.status == 200
    assert loom_server.post("/free").status == 200  # an empty body is fine
    again = loom_server.queue_prompt(prompt)
    loom_server.wait_history(again)
    assert sorted(loom_server.ran(again)) == ["1", "2"]


def test_object_info_and_index(loom_server: LoomTestServer):
    info = loom_server.get("/object_info").json()
    assert info["Sleep"]["input"]["required"]["seconds"][0] == "FLOAT"
    assert info["Sink"]["output_node"] is True
    one = loom_server.get("/object_info/Choose").json()
    assert list(one) == ["Choose"] and one["Choose"]["input"]["required"]["mode"][0] == ["a", "b"]
    assert loom_server.get("/extensions").json() == []
    assert loom_server.get("/features").json()["max_upload_size"] == 100 * 2**20
    assert loom_server.get("/").status == 200


@pytest.mark.parametrize("path", ["/userdata/a.json", "/settings", "/upload/image"])
def test_bodies_over_the_limit_are_refused(loom_server_factory, path):
    server = loom_server_factory(max_upload_mb=1)
    r = server.post(path, data=b"x" * (2 * 2**20 + 10))
    assert r.status == 413


def test_extensions_of_packs_with_a_web_directory(loom_server_factory, tmp_path):
    pack = tmp_path / "nodes" / "webpack"
    (pack / "js" / "sub").mkdir(parents=True)
    (pack / "__init__.py").write_text(
        "from loom.nodeapi import Node, Output\n"
        "class Five(Node):\n"
        "    outputs = (Output('INT'),)\n"
        "    def run(self):\n"
        "        return (5,)\n"
        "NODES = [Five]\nWEB_DIRECTORY = './js'\n")
    (pack / "js" / "ext.js").write_text("console.log('hi')")
    (pack / "js" / "sub" / "more.js").write_text("// more")
    (pack / "secret.py").write_text("TOKEN = 1")
    server = loom_server_factory(custom_nodes_dir=tmp_path / "nodes")
    urls = server.get("/extensions").json()
    assert urls == ["/extensions/webpack/ext.js", "/extensions/webpack/sub/more.js"]
    r = server.get(urls[0])
    assert r.status == 200 and r.text == "console.log('hi')"
    assert server.get("/extensions/webpack/..%2Fsecret.py").status == 404
    assert server.get("/extensions/nope/ext.js").status == 404


def test_start_up_empties_the_temp_folder_but_keeps_outputs(loom_server_factory, tmp_path):
    base = tmp_path / "loom_base"
    (base / "temp").mkdir(parents=True)
    (base / "output").mkdir(parents=True)
    (base / "temp" / "old_preview.png").write_bytes(b"x")
    (base / "output" / "kept.png").write_bytes(b"x")
    loom_server_factory(base_dir=base)
    assert not (base / "temp" / "old_preview.png").exists()
    assert (base / "output" / "kept.png").exists()

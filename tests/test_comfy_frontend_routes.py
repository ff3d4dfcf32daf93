"""The small routes ComfyUI's front end (1.35–1.58) reads at start-up: users, user.css, the
Model Library, i18n, subgraph blueprints, folder paths. Shapes follow what its bundle parses."""

from __future__ import annotations

import json
import struct

from tests.server_fixture import LoomTestServer


def test_users_is_single_user_so_no_user_picker(loom_server_shared: LoomTestServer):
    for prefix in ("", "/api"):
        body = loom_server_shared.get(prefix + "/users").json()
        # The front end shows its user picker whenever the answer has a "users" key.
        assert "users" not in body
        assert body == {"storage": "server", "migrated": True}


def test_creating_a_user_fails_with_a_string_error(loom_server_shared: LoomTestServer):
    r = loom_server_shared.post("/api/users", json={"username": "alice"})
    assert r.status == 400
    error = r.json()["error"]
    assert isinstance(error, str) and "single-user" in error  # shown as it is, not [object Object]


def test_missing_user_css_is_a_css_404(loom_server_shared: LoomTestServer):
    for path in ("/user.css", "/api/userdata/user.css", "/userdata/user.css"):
        r = loom_server_shared.get(path)
        assert r.status == 404, path
        assert r.headers["Content-Type"].startswith("text/css"), path
    # Other missing user files keep the JSON error.
    r = loom_server_shared.get("/userdata/workflows%2Fnope.json")
    assert r.status == 404 and r.json()["error"]["type"] == "not_found"


def test_saved_user_css_is_served_as_a_stylesheet(loom_server: LoomTestServer):
    css = b"body { background: #123456; }"
    assert loom_server.post("/userdata/user.css", data=css).status == 200
    r = loom_server.get("/api/userdata/user.css")
    assert r.status == 200 and r.body == css
    assert r.headers["Content-Type"].startswith("text/css")
    assert "attachment" not in r.headers.get("Content-Disposition", "")
    assert r.headers["X-Content-Type-Options"] == "nosniff"


def _model(folder, rel: str, data: bytes = b"x") -> None:
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_model_library_lists_folders_and_files(loom_server: LoomTestServer):
    models = loom_server.settings.folders.models_dir
    _model(models, "checkpoints/b.safetensors")
    _model(models, "checkpoints/sub/a.ckpt")
    _model(models, "checkpoints/readme.txt")
    _model(models, "loras/style.safetensors")
    folders = loom_server.get("/api/experiment/models").json()
    by_name = {f["name"]: f for f in folders}
    assert {"checkpoints", "loras", "vae", "embeddings"} <= set(by_name)
    assert by_name["checkpoints"]["folders"] == ["models/checkpoints"]
    assert ".safetensors" in by_name["checkpoints"]["extensions"]
    # Where the disk keeps the models is nobody's business but the server's.
    text = json.dumps(folders)
    assert str(models) not in text and str(loom_server.settings.folders.base) not in text
    files = loom_server.get("/api/experiment/models/checkpoints").json()
    assert files == [{"name": "b.safetensors", "pathIndex": 0},
                     {"name": "sub/a.ckpt", "pathIndex": 0}]
    assert loom_server.get("/experiment/models/loras").json() == [
        {"name": "style.safetensors", "pathIndex": 0}]
    # A file added later shows on the next request.
    _model(models, "loras/new.safetensors")
    assert len(loom_server.get("/experiment/models/loras").json()) == 2
    r = loom_server.get("/experiment/models/nope")
    assert r.status == 404 and r.json()["error"]["type"] == "not_found"


def test_model_preview_images(loom_server: LoomTestServer):
    models = loom_server.settings.folders.models_dir
    _model(models, "checkpoints/sub/a.safetensors")
    _model(models, "checkpoints/sub/a.png", b"\x89PNG fake")
    _model(models, "loras/b.safetensors")
    _model(models, "loras/b.preview.jpeg", b"\xff\xd8 fake")
    _model(models, "loras/c.safetensors")
    r = loom_server.get("/api/experiment/models/preview/checkpoints/0/sub/a.safetensors.webp")
    assert r.status == 200 and r.body == b"\x89PNG fake"
    assert r.headers["Content-Type"] == "image/png"
    r = loom_server.get("/api/experiment/models/preview/loras/0/b.safetensors.webp")
    assert r.status == 200 and r.headers["Content-Type"] == "image/jpeg"
    for path in ("loras/0/c.safetensors.webp", "loras/0/missing.webp", "nope/0/a.webp",
                 "loras/0/..%2F..%2Fcheckpoints%2Fsub%2Fa.safetensors.webp",
                 "loras/0/%2Fetc%2Fpasswd.webp"):
        r = loom_server.get(f"/api/experiment/models/preview/{path}")
        assert r.status in (400, 404), path
        assert "error" in r.json()


def test_folder_paths_name_folders_without_disk_paths(loom_server_shared: LoomTestServer):
    paths = loom_server_shared.get("/internal/folder_paths").json()
    assert paths["checkpoints"] == ["models/checkpoints"]
    assert paths["loras"] == ["models/loras"]
    assert str(loom_server_shared.settings.folders.base) not in json.dumps(paths)
    assert loom_server_shared.get("/api/internal/folder_paths").json() == paths


def _safetensors(metadata: dict | None) -> bytes:
    header = {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    if metadata is not None:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + b"\0\0\0\0"


def test_view_metadata_reads_the_safetensors_header(loom_server: LoomTestServer):
    models = loom_server.settings.folders.models_dir
    _model(models, "loras/meta.safetensors", _safetensors({"ss_network_dim": "4", "title": "x"}))
    _model(models, "loras/plain.safetensors", _safetensors(None))
    _model(models, "loras/broken.safetensors", b"\xff" * 20)
    _model(models, "loras/old.ckpt", b"x")
    r = loom_server.get("/api/view_metadata/loras?filename=meta.safetensors")
    assert r.status == 200 and r.json() == {"ss_network_dim": "4", "title": "x"}
    assert loom_server.get("/view_metadata/loras?filename=plain.safetensors").json() == {}
    for query, status in [("filename=broken.safetensors", 400), ("filename=old.ckpt", 404),
                          ("filename=missing.safetensors", 404), ("", 400),
                          ("filename=../../x.safetensors", 400)]:
        r = loom_server.get(f"/view_metadata/loras?{query}")
        assert r.status == status, (query, r.text)
        assert "error" in r.json()
        assert str(models) not in r.text
    assert loom_server.get("/view_metadata/nope?filename=a.safetensors").status == 404


def test_i18n_and_global_subgraphs_are_empty_not_404(loom_server_shared: LoomTestServer):
    assert loom_server_shared.get("/api/i18n").json() == {}
    assert loom_server_shared.get("/api/global_subgraphs").json() == {}
    r = loom_server_shared.get("/api/global_subgraphs/abc")
    assert r.status == 404 and r.json()["error"]["type"] == "not_found"

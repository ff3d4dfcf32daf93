"""Each security rule, proven against the REAL Loom server (create_app on a free loopback port,
and main.py in a subprocess for the start-up rules), with a request that must be refused.

Requests that need exact bytes on the wire (encoded traversal, a forged Host, a body that is
announced but never sent) go through http.client; the rest through the shared test client.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import conftest
import pytest

from loom.config import REPO_ROOT
from tests.server_fixture import FIXTURE_NODES, LoomTestServer, free_port, start_main, ws_handshake_status

TOKEN = "tok-" + "x" * 28
EVIL = "http://evil.example"
SECRET = b"TOP SECRET - must never be served"


# -- helpers ------------------------------------------------------------------------------------

def raw(server: LoomTestServer, method: str, target: str, body: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request with ``target`` sent byte for byte (no URL normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.settings.port, timeout=30)
    hdrs = {"Host": f"127.0.0.1:{server.settings.port}", **(headers or {})}
    conn.request(method, target, body=body, headers=hdrs)
    resp = conn.getresponse()
    data = resp.read()
    out = {k.lower(): v for k, v in resp.getheaders()}
    conn.close()
    return resp.status, out, data


def png_bytes(color=(255, 0, 0)) -> bytes:
    return conftest.png_bytes(color=color)


def multipart(fields: dict[str, str], filename: str, data: bytes) -> tuple[bytes, str]:
    """A multipart body built by hand, so the filename goes out exactly as given."""
    boundary = "----loom" + uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                     f"{value}\r\n".encode())
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
                 f'filename="{filename}"\r\nContent-Type: image/png\r\n\r\n'.encode()
                 + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def ws_handshake(server: LoomTestServer, headers: dict[str, str] | None = None,
                 query: str = "") -> int:
    """101 when the websocket upgrade is accepted, else the refusal status."""
    return ws_handshake_status(f"{server.url}/ws{query}", headers)


_PARAMS = {"file": "wf.json", "dest": "wf2.json", "prompt_id": "abc", "id": "Comfy.Key",
           "node_class": "IntConst", "folder": "checkpoints", "pack": "p", "path": "a.js"}


def app_routes(server: LoomTestServer) -> list[tuple[str, str]]:
    """(method, concrete path) of every route the app has, the /api aliases included."""
    out = set()
    for route in server.app.router.routes():
        if route.method == "HEAD":
            continue
        canonical = route.resource.canonical
        path = re.sub(r"\{(\w+)(?::[^}]*)?\}", lambda m: _PARAMS.get(m.group(1), "x"), canonical)
        out.add((route.method, path))
    return sorted(out)


def assert_nothing_queued(server: LoomTestServer) -> None:
    assert server.get("/queue").json() == {"queue_running": [], "queue_pending": []}
    assert server.get("/history").json() == {}
    assert server.runs() == []


def fake_prompt() -> dict:
    return {"prompt": {"1": {"class_type": "IntConst", "inputs": {"value": 1}},
                       "2": {"class_type": "Sink", "inputs": {"value": ["1", 0]}}}}


@pytest.fixture
def outside(tmp_path):
    """A secret file and folder next to (outside) the server's base dir."""
    d = tmp_path / "outside"
    d.mkdir()
    (d / "secret.txt").write_bytes(SECRET)
    (d / "secret.png").write_bytes(png_bytes((1, 2, 3)) + SECRET)
    return d


@pytest.fixture
def server(loom_server_factory, tmp_path, outside) -> LoomTestServer:
    srv = loom_server_factory(base_dir=tmp_path / "base")
    f = srv.settings.folders
    (f.output_dir / "ok.png").write_bytes(png_bytes())
    (f.output_dir / "link.png").symlink_to(outside / "secret.png")
    (f.output_dir / "linkdir").symlink_to(outside, target_is_directory=True)
    (f.input_dir / "in.png").write_bytes(png_bytes())
    (f.input_dir / "linked.png").symlink_to(outside / "secret.png")
    (f.input_dir / "linkdir").symlink_to(outside, target_is_directory=True)
    (f.output_dir / "page.html").write_text("<script>alert(document.cookie)</script>")
    (f.output_dir / "pic.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>')
    (f.output_dir / "feed.xml").write_text("<x/>")
    (f.output_dir / "blob.unknownext").write_text("<html><script>1</script>")
    (f.user_dir / "private.json").write_text('{"private": true}')
    (f.models_dir / "checkpoints" / "m.safetensors").write_bytes(b"weights")
    return srv


# -- DNS rebinding ------------------------------------------------------------------------------

def test_dns_rebinding_host_refused(server):
    port = server.settings.port
    for host in ["evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "10.0.0.5"]:
        for method, target in [("GET", "/history"), ("GET", "/view?filename=ok.png"),
                               ("GET", "/object_info"), ("POST", "/prompt")]:
            body = json.dumps(fake_prompt()).encode() if method == "POST" else None
            status, headers, data = raw(server, method, target, body,
                                        {"Host": host, "Content-Type": "application/json"})
            assert status == 421, (host, target, status)
            assert headers["x-content-type-options"] == "nosniff"
            assert b"PNG" not in data and b"IntConst" not in data
    assert ws_handshake(server, {"Host": "evil.example"}) == 421
    assert_nothing_queued(server)
    # The same requests with a loopback Host are fine.
    for host in [f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"]:
        assert raw(server, "GET", "/view?filename=ok.png", headers={"Host": host})[0] == 200


# -- cross-site requests ------------------------------------------------------------------------

@pytest.mark.parametrize("attack", [
    {"Origin": EVIL, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"},
    {"Origin": EVIL},  # a browser without Fetch Metadata
    {"Origin": "null", "Sec-Fetch-Site": "cross-site"},  # sandboxed iframe / data: URL
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Origin": "http://localhost:1", "Sec-Fetch-Site": "same-site"},  # another local app
])
def test_every_state_changing_route_refuses_cross_site(server, attack):
    changing = [(m, p) for m, p in app_routes(server) if m in ("POST", "PUT", "PATCH", "DELETE")]
    assert ("POST", "/prompt") in changing and ("POST", "/api/upload/image") in changing
    body = json.dumps(fake_prompt()).encode()
    for method, path in changing:
        status, headers, data = raw(server, method, path, body,
                                    {**attack, "Content-Type": "text/plain"})
        assert status == 403, (method, path, status, data[:200])
        assert json.loads(data)["error"]["type"] == "cross_site"
    assert_nothing_queued(server)
    assert server.get("/userdata?dir=").json() == []


def test_same_origin_state_change_still_works(server):
    origin = f"http://127.0.0.1:{server.settings.port}"
    r = server.post("/prompt", json=fake_prompt(),
                    headers={"Origin": origin, "Sec-Fetch-Site": "same-origin"})
    assert r.status == 200, r.text
    server.wait_history(r.json()["prompt_id"])
    # Scripts (no Origin, no Fetch Metadata) too.
    assert server.post("/prompt", json=fake_prompt()).status == 200


def test_every_read_route_refuses_cross_site_embedding(server):
    """<img src>, <script src>, fetch(no-cors) from another site: refused on every GET route."""
    embed = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"}
    reads = [(m, p) for m, p in app_routes(server) if m == "GET"]
    assert ("GET", "/view") in reads and ("GET", "/history") in reads
    for _, path in reads + [("GET", "/view?filename=ok.png"), ("GET", "/api/view?filename=ok.png")]:
        status, _, data = raw(server, "GET", path, headers=embed)
        assert status == 403, (path, status)
        assert b"PNG" not in data
        # The editor's own requests to the same route are not refused by this rule.
        assert raw(server, "GET", path, headers={"Sec-Fetch-Site": "same-origin"})[0] != 403, path


def test_top_level_navigation_only_to_the_editor(server):
    nav = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
    assert raw(server, "GET", "/", headers=nav)[0] == 200
    for path in ["/view?filename=ok.png", "/history", "/userdata?dir=", "/queue", "/object_info"]:
        assert raw(server, "GET", path, headers=nav)[0] == 403, path
    # Typed in the address bar (Sec-Fetch-Site: none): allowed.
    assert raw(server, "GET", "/view?filename=ok.png", headers={"Sec-Fetch-Site": "none"})[0] == 200


def test_websocket_refuses_cross_site(server):
    own = f"http://127.0.0.1:{server.settings.port}"
    assert ws_handshake(server, {"Origin": own}) == 101
    assert ws_handshake(server) == 101  # scripts send no Origin
    for headers in [{"Origin": EVIL}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Origin": f"http://localhost:{server.settings.port + 1}"}]:
        assert ws_handshake(server, headers) == 403, headers


def test_allowed_origin_setting(loom_server_factory):
    srv = loom_server_factory(allowed_origins=["https://studio.example"])
    r = srv.post("/prompt", json=fake_prompt(), headers={"Origin": "https://studio.example"})
    assert r.status == 200, r.text
    assert srv.post("/prompt", json=fake_prompt(), headers={"Origin": EVIL}).status == 403


# -- authentication -----------------------------------------------------------------------------

def test_token_auth_on_every_route(loom_server_factory):
    srv = loom_server_factory(auth_token=TOKEN)
    routes = app_routes(srv)
    for method, path in routes:
        status, headers, _ = raw(srv, method, path, b"{}", {"Content-Type": "application/json"})
        if path in ("/login", "/api/login"):
            continue
        assert status == 401, (method, path, status)
        assert "www-authenticate" in headers
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for method, path in routes:
        status, _, _ = raw(srv, method, path, b"{}", {"Content-Type": "application/json", **auth})
        assert status != 401, (method, path)
    assert ws_handshake(srv) == 401
    assert ws_handshake(srv, query=f"?token={TOKEN}") == 401  # tokens in URLs leak; not accepted
    assert ws_handshake(srv, {"Authorization": "Bearer nope"}) == 401
    assert ws_handshake(srv, auth) == 101
    assert srv.post("/prompt", json=fake_prompt(), headers=auth).status == 200


def test_browser_login_cookie_covers_img_and_websocket(loom_server_factory):
    """Browsers cannot put headers on <img src=/view> or a websocket: the session cookie must."""
    srv = loom_server_factory(auth_token=TOKEN)
    (srv.settings.folders.output_dir / "ok.png").write_bytes(png_bytes())
    status, headers, _ = raw(srv, "GET", "/view?filename=ok.png", headers={"Sec-Fetch-Mode": "navigate"})
    assert status == 302 and headers["location"].startswith("/login")
    status, _, page = raw(srv, "GET", "/login")
    assert status == 200 and b"<form" in page
    assert raw(srv, "POST", "/login", json.dumps({"token": "wrong"}).encode(),
               {"Content-Type": "application/json"})[0] == 401
    status, headers, _ = raw(srv, "POST", "/login", f"token={TOKEN}&next=/".encode(),
                             {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 303
    cookie_header = headers["set-cookie"]
    assert "HttpOnly" in cookie_header and "SameSite=Strict" in cookie_header
    cookie = {"Cookie": cookie_header.split(";", 1)[0]}
    status, _, data = raw(srv, "GET", "/view?filename=ok.png", headers=cookie)
    assert status == 200 and data.startswith(b"\x89PNG")
    assert ws_handshake(srv, cookie) == 101
    # The cookie does not make cross-site requests possible (SameSite aside, the guard refuses).
    assert raw(srv, "POST", "/prompt", json.dumps(fake_prompt()).encode(),
               {**cookie, "Origin": EVIL, "Content-Type": "text/plain"})[0] == 403
    assert raw(srv, "POST", "/logout", b"", cookie)[0] == 200
    assert raw(srv, "GET", "/view?filename=ok.png", headers=cookie)[0] == 401


def test_basic_auth_user_password(loom_server_factory):
    import base64

    srv = loom_server_factory(auth_user="ann:correct horse")
    status, headers, _ = raw(srv, "GET", "/history")
    assert status == 401 and headers["www-authenticate"].startswith("Basic")
    good = {"Authorization": "Basic " + base64.b64encode(b"ann:correct horse").decode()}
    bad = {"Authorization": "Basic " + base64.b64encode(b"ann:wrong").decode()}
    assert raw(srv, "GET", "/history", headers=good)[0] == 200
    assert raw(srv, "GET", "/history", headers=bad)[0] == 401
    assert ws_handshake(srv, good) == 101


# -- path traversal -----------------------------------------------------------------------------

VIEW_ATTACKS = [
    "filename=../../outside/secret.txt",
    "filename=..%2F..%2Foutside%2Fsecret.txt",
    "filename=%2e%2e%2f%2e%2e%2foutside%2fsecret.txt",
    "filename=%252e%252e%252f%252e%252e%252foutside%252fsecret.txt",
    "filename=..%5C..%5Coutside%5Csecret.txt",
    "filename=..\\..\\outside\\secret.txt",
    "filename=%2Fetc%2Fpasswd",
    "filename=/etc/passwd",
    "filename=C:%5CWindows%5Cwin.ini",
    "filename=C:/Windows/win.ini",
    "filename=ok.png%00.txt",
    "filename=secret.txt&subfolder=..%2F..%2Foutside",
    "filename=secret.txt&subfolder=/tmp/../",
    "filename=passwd&subfolder=/etc",
    "filename=secret.txt&subfolder=linkdir",
    "filename=link.png",
    "filename=linked.png&type=input",
    "filename=secret.txt&type=input&subfolder=linkdir",
    "filename=private.json&type=user",
    "filename=private.json&type=..%2Fuser",
    "filename=private.json&subfolder=..%2Fuser",
    "filename=m.safetensors&type=models&subfolder=checkpoints",
    "filename=m.safetensors&subfolder=..%2Fmodels%2Fcheckpoints",
    "filename=loom.sqlite3&subfolder=..%2Fuser",
    "filename=..&subfolder=",
    "filename=.",
    "filename=",
]


@pytest.mark.parametrize("query", VIEW_ATTACKS)
def test_view_path_traversal_refused(server, query):
    for prefix in ("/view", "/api/view"):
        status, headers, data = raw(server, "GET", f"{prefix}?{query}")
        assert 400 <= status < 500, (query, status)
        assert SECRET not in data and b"root:" not in data and b"weights" not in data
        assert b"\"private\": true" not in data and b"SQLite" not in data
        assert headers["x-content-type-options"] == "nosniff"


def test_view_serves_only_output_input_temp(server):
    f = server.settings.folders
    (f.temp_dir / "t.png").write_bytes(png_bytes())
    for query in ["filename=ok.png", "filename=ok.png&type=output", "filename=in.png&type=input",
                  "filename=t.png&type=temp"]:
        status, headers, data = raw(server, "GET", f"/view?{query}")
        assert status == 200 and data.startswith(b"\x89PNG"), query
        assert headers["content-type"] == "image/png"
    for kind in ["models", "user", "custom_nodes", "base", "OUTPUT", "output/.."]:
        assert raw(server, "GET", f"/view?filename=ok.png&type={kind}")[0] == 400, kind


@pytest.mark.parametrize("name", ["page.html", "pic.svg", "feed.xml", "blob.unknownext"])
def test_view_never_renders_active_content(server, name):
    status, headers, data = raw(server, "GET", f"/view?filename={name}")
    assert status == 200
    assert headers["content-type"] == "application/octet-stream"
    assert headers["content-disposition"].startswith("attachment")
    assert headers["x-content-type-options"] == "nosniff"
    csp = headers["content-security-policy"]
    assert "sandbox" in csp and "default-src 'none'" in csp


def test_security_headers_everywhere(server):
    for method, path in app_routes(server):
        status, headers, _ = raw(server, method, path, b"{}", {"Content-Type": "application/json"})
        assert headers.get("x-content-type-options") == "nosniff", (method, path, status)
        assert headers.get("x-frame-options") == "DENY", (method, path)
        assert "frame-ancestors 'none'" in headers.get("content-security-policy", "") or \
            "sandbox" in headers.get("content-security-policy", ""), (method, path)


UPLOAD_ATTACKS = [
    ({}, "../../outside/evil.png"),
    ({}, "..\\..\\outside\\evil.png"),
    ({}, "/tmp/evil.png"),
    ({}, "C:\\evil.png"),
    ({}, ".."),
    ({}, "..%2f..%2fevil.png"),
    ({"subfolder": "../../outside"}, "evil.png"),
    ({"subfolder": "..\\..\\outside"}, "evil.png"),
    ({"subfolder": "/tmp"}, "evil.png"),
    ({"subfolder": "%2e%2e/%2e%2e/outside"}, "evil.png"),
    ({"subfolder": "linkdir"}, "evil.png"),
    ({"subfolder": "a\x00b"}, "evil.png"),
    ({"type": "../user"}, "evil.png"),
    ({"type": "user"}, "evil.png"),
    ({"type": "models"}, "evil.png"),
    ({"overwrite": "true"}, "linked.png"),  # a symlink in input/ to a file outside
]


@pytest.mark.parametrize("fields,filename", UPLOAD_ATTACKS)
def test_upload_path_traversal_contained(server, outside, fields, filename):
    before = sorted(p.name for p in outside.iterdir())
    secret_png = (outside / "secret.png").read_bytes()
    base = server.settings.folders.base
    body, ctype = multipart(fields, filename, png_bytes((0, 9, 9)))
    status, _, data = raw(server, "POST", "/upload/image", body, {"Content-Type": ctype})
    # Nothing outside input/ (or the folder the type names) was created or changed.
    assert sorted(p.name for p in outside.iterdir()) == before
    assert (outside / "secret.png").read_bytes() == secret_png
    assert not (base.parent / "evil.png").exists() and not (base / "evil.png").exists()
    assert not (server.settings.folders.user_dir / "evil.png").exists()
    if status == 200:
        # A path in the *filename* may be reduced to its last part, but must stay inside input/.
        reply = json.loads(data)
        assert reply["type"] == "input" and "/" not in reply["name"] and "\\" not in reply["name"]
        assert ".." not in reply["name"] and ".." not in reply["subfolder"]
        input_dir = server.settings.folders.input_dir.resolve()
        stored = input_dir / reply["subfolder"] / reply["name"]
        assert stored.resolve().is_relative_to(input_dir), stored
        assert stored.is_file() and not stored.is_symlink()
    else:
        assert 400 <= status < 500, (fields, filename, status, data)


def test_upload_refuses_non_images(server):
    for filename, content in [("x.html", b"<script>alert(1)</script>"),
                              ("x.svg", b'<svg xmlns="http://www.w3.org/2000/svg"/>'),
                              ("x.png", b"<html>not a png</html>")]:
        body, ctype = multipart({}, filename, content)
        status, _, data = raw(server, "POST", "/upload/image", body, {"Content-Type": ctype})
        assert status == 400, (filename, data)
    assert not any(p.suffix in (".html", ".svg") for p in server.settings.folders.input_dir.iterdir())


USERDATA_ATTACKS = ["..%2F..%2Foutside%2Fsecret.txt", "%2e%2e%2fsecret.txt", "%2e%2e",
                    "%2Fetc%2Fpasswd", "..%5C..%5Csecret.txt", "a%00b.json", "C:%5Cx.json",
                    "workflows%2F..%2F..%2Fx.json"]


@pytest.mark.parametrize("name", USERDATA_ATTACKS)
def test_userdata_path_traversal_refused(server, outside, name):
    before = sorted(p.name for p in outside.iterdir())
    for method in ("POST", "GET", "DELETE"):
        status, _, data = raw(server, method, f"/userdata/{name}", b'{"x": 1}')
        assert 400 <= status < 500, (method, name, status)
        assert SECRET not in data and b"root:" not in data
    status, _, _ = raw(server, "POST", f"/userdata/ok.json/move/{name}", b"")
    assert 400 <= status < 500
    assert sorted(p.name for p in outside.iterdir()) == before


def test_userdata_html_is_not_rendered(server):
    assert raw(server, "POST", "/userdata/x.html", b"<script>alert(1)</script>")[0] == 200
    status, headers, _ = raw(server, "GET", "/userdata/x.html")
    assert status == 200
    assert headers["content-type"].startswith("application/octet-stream")
    assert headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in headers["content-security-policy"]


def test_image_nodes_stay_in_their_folders(loom_server_factory, tmp_path, outside):
    srv = loom_server_factory(base_dir=tmp_path / "b2", builtin=True)
    f = srv.settings.folders
    (f.input_dir / "in.png").write_bytes(png_bytes())
    (f.input_dir / "linked.png").symlink_to(outside / "secret.png")
    for name in ["../../outside/secret.png", str(outside / "secret.png"), "linked.png",
                 "..\\..\\outside\\secret.png", "in.png\x00", "%2e%2e/%2e%2e/outside/secret.png"]:
        prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": name}},
                  "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
        r = srv.post("/prompt", json={"prompt": prompt})
        assert r.status == 400, (name, r.text)
        assert "1" in r.json()["node_errors"], r.text
    assert srv.get("/queue").json()["queue_pending"] == []

    # SaveImage: a filename_prefix never writes outside output/ (at /prompt or when it runs).
    (f.output_dir / "linkdir").symlink_to(outside, target_is_directory=True)
    marker = "evil-" + uuid.uuid4().hex[:8]
    for prefix in [f"../../outside/{marker}", f"/tmp/{marker}", f"..\\..\\{marker}",
                   f"linkdir/{marker}", f"%date:yyyy%/../../{marker}", f"C:\\{marker}"]:
        prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1,
                                                               "color": 0}},
                  "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0],
                                                              "filename_prefix": prefix}}}
        r = srv.post("/prompt", json={"prompt": prompt})
        if r.status == 200:
            entry = srv.wait_history(r.json()["prompt_id"])
            for image in entry.get("outputs", {}).get("2", {}).get("images", []):
                saved = (f.output_dir / image["subfolder"] / image["filename"]).resolve()
                assert saved.is_relative_to(f.output_dir.resolve()), (prefix, image)
        else:
            assert 400 <= r.status < 500, r.text
    leaked = [p for p in [*outside.rglob(f"{marker}*"), *tmp_path.glob(f"{marker}*"),
                          *(tmp_path / "b2").glob(f"{marker}*"), *Path("/tmp").glob(f"{marker}*")]]
    assert leaked == []


# -- upload size -------------------------------------------------------------------------------

def test_upload_size_limit(loom_server_factory):
    srv = loom_server_factory(max_upload_mb=1)
    big = png_bytes() + b"\0" * (2 * 2**20)
    body, ctype = multipart({}, "big.png", big)
    status, _, data = raw(srv, "POST", "/upload/image", body, {"Content-Type": ctype})
    assert status == 413, data
    assert not (srv.settings.folders.input_dir / "big.png").exists()
    assert raw(srv, "POST", "/prompt", b'{"prompt": "' + b"x" * (2 * 2**20) + b'"}',
               {"Content-Type": "application/json"})[0] == 413
    assert raw(srv, "POST", "/userdata/big.json", b"x" * (2 * 2**20))[0] == 413
    # A body announced as 1 GB is refused from its headers alone, before any of it is sent.
    conn = http.client.HTTPConnection("127.0.0.1", srv.settings.port, timeout=10)
    conn.putrequest("POST", "/upload/image")
    conn.putheader("Content-Type", ctype)
    conn.putheader("Content-Length", str(2**30))
    conn.endheaders()
    assert conn.getresponse().status == 413
    conn.close()


def test_chunked_upload_over_limit_is_413(loom_server_factory):
    """No Content-Length: the limit must hold while streaming, too."""
    srv = loom_server_factory(max_upload_mb=1)
    body, ctype = multipart({}, "big.png", png_bytes() + b"\0" * (3 * 2**20))

    def chunks():
        for i in range(0, len(body), 65536):
            yield body[i:i + 65536]

    for path, content_type in [("/upload/image", ctype), ("/prompt", "application/json"),
                               ("/userdata/big.json", "application/json")]:
        conn = http.client.HTTPConnection("127.0.0.1", srv.settings.port, timeout=30)
        try:
            conn.request("POST", path, body=chunks(), encode_chunked=True,
                         headers={"Content-Type": content_type, "Transfer-Encoding": "chunked"})
            status = conn.getresponse().status
        except (BrokenPipeError, ConnectionResetError):
            status = 413  # the server answered and closed before the whole body was sent
        finally:
            conn.close()
        assert status == 413, path


# -- malformed input ----------------------------------------------------------------------------

MALFORMED = [b"", b"{", b"[1,2", b"\xff\xfe\x00", b"null", b"[]", b"42", b'"prompt"',
             b'{"prompt": null}', b'{"prompt": 5}', b'{"prompt": []}', b'{"prompt": "x"}',
             b'{"prompt": {"1": 5}}', b'{"prompt": {"1": {"class_type": 5}}}',
             b'{"prompt": {"1": {"class_type": "IntConst", "inputs": 7}}}',
             b'{"prompt": {"1": {"class_type": "IntConst", "inputs": {"value": "NaN"}}}}',
             b'{"prompt": {"1": {"class_type": "Add", "inputs": {"a": ["9", 0], "b": [1]}}}}',
             b'{"prompt": {"1": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["1", 0]}}}}',
             b'{"prompt": {}, "client_id": 5}', b'{"prompt": {}, "extra_data": []}',
             b'{"prompt": {}, "number": "x"}', b'{"prompt": {}, "front": "yes"}',
             b'{"prompt": {"1": {"class_type": "IntConst", "inputs": {"value": 1e999}}}}',
             b"[" * 100_000 + b"]" * 100_000, b'{"prompt": ' + b'{"a": ' * 50_000]


@pytest.mark.parametrize("body", MALFORMED)
def test_malformed_prompt_is_a_clear_4xx(server, body):
    status, _, data = raw(server, "POST", "/prompt", body, {"Content-Type": "application/json"})
    assert 400 <= status < 500, (body, status, data[:300])
    err = json.loads(data)["error"]
    assert isinstance(err["message"], str) and err["message"]


@pytest.mark.parametrize("method,path,body", [
    ("POST", "/queue", b"{"), ("POST", "/queue", b'{"delete": 5}'), ("POST", "/queue", b"[]"),
    ("POST", "/history", b'{"delete": "x"}'), ("POST", "/history", b"\xff"),
    ("POST", "/settings", b"[]"), ("POST", "/settings/x", b"{"), ("POST", "/interrupt", b"{"),
    ("POST", "/free", b'{"unload_models": "maybe"}'), ("POST", "/users", b"5"),
    ("GET", "/history?max_items=abc", None), ("GET", "/history?max_items=-5", None),
    ("GET", "/history?offset=1e9999", None), ("GET", "/view", None),
    ("GET", "/history?max_items=9223372036854775808", None),
    ("GET", "/history?offset=-99999999999999999999999", None),
    ("POST", "/queue", b"[" * 100_000), ("POST", "/settings", b'{"a": ' * 100_000),
    ("POST", "/workflow/convert", b"[" * 100_000), ("POST", "/workflow/queue", b"[" * 100_000),
    ("POST", "/login", b"[" * 100_000),
    ("GET", "/view?filename=ok.png&type=", None), ("GET", "/userdata", None),
    ("GET", "/userdata?dir=..", None), ("GET", "/object_info/NoSuchNode", None),
    ("POST", "/upload/image", b"not multipart"), ("GET", "/models/..%2F..", None),
    ("GET", "/extensions/..%2F..%2Fetc/passwd", None),
])
def test_other_malformed_requests_are_4xx(server, method, path, body):
    status, _, data = raw(server, method, path, body, {"Content-Type": "application/json"})
    assert 400 <= status < 500 or status in (200, 204), (method, path, status, data[:300])
    assert status < 500
    assert SECRET not in data and b"root:" not in data


# -- start-up refusal (main.py) -----------------------------------------------------------------

def _main_cmd(base, port, *args):
    (base / "_none").mkdir(parents=True, exist_ok=True)
    return [sys.executable, str(REPO_ROOT / "main.py"), "--port", str(port), "--base-dir", str(base),
            "--custom-nodes-dir", str(FIXTURE_NODES), "--builtin-nodes-dir", str(base / "_none"),
            *args]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("listen", ["0.0.0.0", "::", "127.0.0.1,0.0.0.0"])
def test_main_refuses_network_without_auth(tmp_path, listen):
    port = free_port()
    proc = subprocess.run(_main_cmd(tmp_path, port, "--listen", listen), capture_output=True,
                          text=True, timeout=60, cwd=REPO_ROOT)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "without authentication" in out and "--auth-token" in out, out
    assert "--allow-unauthenticated-network-access" in out
    assert "Traceback" not in out
    assert not _port_open(port)


def _get(port: int, path: str, headers: dict | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers=headers or {})
    status = conn.getresponse().status
    conn.close()
    return status


def test_main_network_with_token_requires_it(tmp_path):
    port = free_port()
    proc = start_main(tmp_path, port, "--listen", "0.0.0.0", "--auth-token", TOKEN)
    try:
        assert _get(port, "/history") == 401
        assert _get(port, "/history", {"Authorization": "Bearer wrong"}) == 401
        assert _get(port, "/history", {"Authorization": f"Bearer {TOKEN}"}) == 200
    finally:
        proc.terminate()
        proc.wait(30)


def test_main_reads_the_token_from_the_environment(tmp_path, monkeypatch):
    """$LOOM_AUTH_TOKEN keeps the secret out of the process list."""
    monkeypatch.setenv("LOOM_AUTH_TOKEN", TOKEN)
    port = free_port()
    proc = start_main(tmp_path, port, "--listen", "0.0.0.0")
    try:
        assert _get(port, "/history") == 401
        assert _get(port, "/history", {"Authorization": f"Bearer {TOKEN}"}) == 200
    finally:
        proc.terminate()
        proc.wait(30)


def test_static_files_are_only_the_editors(loom_server_factory, tmp_path):
    web_dir = tmp_path / "web_dist"
    (web_dir / "node_modules" / "pkg").mkdir(parents=True)
    (web_dir / "index.html").write_text("<html>editor</html>")
    (web_dir / "app.js").write_text("console.log(1)")
    (web_dir / "node_modules" / "pkg" / "index.js").write_text("secret()")
    (web_dir / "vite.config.ts").write_text("export default {}")
    (web_dir / "notes.py").write_text("print(1)")
    server = loom_server_factory(web_dir=web_dir)
    assert server.get("/app.js").status == 200
    for path in ("/node_modules/pkg/index.js", "/vite.config.ts", "/notes.py"):
        r = server.get(path)
        assert r.status == 404 and "secret" not in r.text, path


def test_main_loud_flag_allows_unauthenticated_network(tmp_path):
    port = free_port()
    log_path = tmp_path / "server.log"
    proc = start_main(tmp_path, port, "--listen", "0.0.0.0",
                      "--allow-unauthenticated-network-access", log_path=log_path)
    try:
        assert _get(port, "/history") == 200
        # No auth on the network: only IP literals and this machine's names are valid Hosts.
        assert _get(port, "/history", {"Host": "rebind.evil.example"}) == 421
    finally:
        proc.terminate()
        proc.wait(30)
    assert "WITHOUT AUTHENTICATION" in log_path.read_text()

"""Unit tests of loom.server.security against a small aiohttp app (not the real Loom server).

The app is served on a free loopback port in a background thread and driven with http.client,
which lets a test send exactly the headers a browser (or an attacker's page) would.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from aiohttp import web

from loom.config import Settings
from loom.paths import Folders, UnsafePathError, safe_join
from loom.server.security import (
    InsecureConfigError,
    build_middlewares,
    check_startup_security,
    is_loopback_host,
    listens_on_loopback_only,
    session_cookie_name,
)
from tests.server_fixture import ws_handshake_status

TOKEN = "s3cret-token-0123456789abcdef"


# -- a tiny app with routes shaped like Loom's --------------------------------------------------

def make_app(settings: Settings, folder: Path) -> web.Application:
    app = web.Application(middlewares=build_middlewares(settings), client_max_size=1024)

    async def index(request):
        return web.Response(text="<html>editor</html>", content_type="text/html")

    async def view(request):
        try:
            path = safe_join(folder, request.query.get("filename", ""))
        except UnsafePathError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        if not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    async def prompt(request):
        data = await request.json()  # malformed JSON must become a 400 through the middleware
        return web.json_response({"got": data})

    async def upload(request):
        data = await request.read()
        return web.json_response({"size": len(data)})

    async def history(request):
        return web.json_response({"secret": "history"})

    async def ws(request):
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        await sock.send_json({"type": "status"})
        await sock.close()
        return sock

    app.router.add_get("/", index)
    app.router.add_get("/view", view)
    app.router.add_get("/api/view", view)
    app.router.add_post("/prompt", prompt)
    app.router.add_post("/upload/image", upload)
    app.router.add_get("/history", history)
    app.router.add_get("/ws", ws)
    return app


@contextmanager
def serve(settings: Settings, folder: Path):
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict = {}

    async def start():
        runner = web.AppRunner(make_app(settings, folder), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        box["runner"] = runner
        box["port"] = site._server.sockets[0].getsockname()[1]

    def run():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield box["port"]
    finally:
        asyncio.run_coroutine_threadsafe(box["runner"].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


class Client:
    def __init__(self, port: int):
        self.port = port

    def request(self, method: str, path: str, body: bytes | str | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        hdrs = {"Host": f"127.0.0.1:{self.port}"}
        hdrs.update(headers or {})
        if isinstance(body, str):
            body = body.encode()
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        out = {k.lower(): v for k, v in resp.getheaders()}
        out["_set-cookie"] = "\n".join(v for k, v in resp.getheaders() if k.lower() == "set-cookie")
        conn.close()
        return resp.status, out, data

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=b"{}", **kw):
        return self.request("POST", path, body=body, **kw)

    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_status(self, headers: dict[str, str] | None = None, path: str = "/ws") -> int:
        """The status of a websocket handshake (101 when accepted)."""
        return ws_handshake_status(f"http://127.0.0.1:{self.port}{path}", headers, timeout=5)


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "output"
    d.mkdir()
    (d / "a.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    (d / "page.html").write_text("<script>alert(1)</script>")
    (d / "pic.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'><script>1</script></svg>")
    (d / "data.xml").write_text("<x/>")
    (d / "noext").write_text("<html><script>1</script></html>")
    (tmp_path / "secret.txt").write_text("TOP SECRET")
    return d


@pytest.fixture
def open_client(folder):
    with serve(Settings(), folder) as port:
        yield Client(port)


@pytest.fixture
def token_client(folder):
    with serve(Settings(auth_token=TOKEN), folder) as port:
        yield Client(port)


# -- startup ------------------------------------------------------------------------------------

@pytest.mark.parametrize("listen", ["127.0.0.1", "localhost", "::1", "127.0.0.2", "127.0.0.1,::1", "",
                                    " 127.0.0.1 , "])
def test_loopback_listen_starts_without_auth(listen):
    assert listens_on_loopback_only(Settings(listen=listen))
    check_startup_security(Settings(listen=listen))


@pytest.mark.parametrize("listen", ["0.0.0.0", "::", "192.168.1.20", "127.0.0.1,0.0.0.0", ", 0.0.0.0",
                                    "myhost.example", "::ffff:10.0.0.1"])
def test_network_listen_without_auth_is_refused(listen):
    with pytest.raises(InsecureConfigError) as info:
        check_startup_security(Settings(listen=listen))
    msg = str(info.value)
    assert "without authentication" in msg and "--auth-token" in msg
    assert "--allow-unauthenticated-network-access" in msg
    assert isinstance(info.value, SystemExit)


def test_network_listen_with_auth_or_loud_flag_starts():
    check_startup_security(Settings(listen="0.0.0.0", auth_token=TOKEN))
    check_startup_security(Settings(listen="0.0.0.0", auth_user="ann:a-long-passphrase"))
    check_startup_security(Settings(listen="0.0.0.0", insecure_no_auth=True))


@pytest.mark.parametrize("user", ["nocolon", ":pw", "ann:"])
def test_malformed_auth_user_is_refused(user):
    with pytest.raises(InsecureConfigError):
        check_startup_security(Settings(listen="0.0.0.0", auth_user=user))


def test_is_loopback_host():
    for h in ["localhost", "LOCALHOST", "127.0.0.1", "127.9.9.9", "::1", "[::1]", "localhost."]:
        assert is_loopback_host(h), h
    for h in ["0.0.0.0", "::", "10.0.0.1", "evil.example", "localhost.evil.example", "127.0.0.1.nip.io",
              "", "[::]"]:
        assert not is_loopback_host(h), h


# -- DNS rebinding (Host header) ----------------------------------------------------------------

def test_foreign_host_header_refused_on_loopback(open_client):
    c = open_client
    for host in ["evil.example", f"evil.example:{c.port}", "192.168.1.2", "127.0.0.1.nip.io",
                 "[::1", "local host", f"evil.example@127.0.0.1:{c.port}", "127.0.0.1/x",
                 "127.0.0.1\\evil", ""]:
        status, headers, body = c.get("/history", headers={"Host": host})
        assert status == 421, host
        assert b"secret" not in body
        assert headers["x-content-type-options"] == "nosniff"
    for host in [f"127.0.0.1:{c.port}", f"localhost:{c.port}", f"[::1]:{c.port}", "localhost"]:
        assert c.get("/history", headers={"Host": host})[0] == 200, host


def test_allowed_origin_host_passes_host_check(folder):
    s = Settings(allowed_origins=["https://loom.example.com"])
    with serve(s, folder) as port:
        c = Client(port)
        assert c.get("/history", headers={"Host": "loom.example.com"})[0] == 200
        assert c.get("/history", headers={"Host": "other.example.com"})[0] == 421


# -- cross-site requests ------------------------------------------------------------------------

def test_same_origin_and_scripts_can_post(open_client):
    c = open_client
    assert c.post("/prompt", headers={"Origin": c.origin(),
                                      "Sec-Fetch-Site": "same-origin"})[0] == 200
    assert c.post("/prompt")[0] == 200  # curl / python: no Origin, no Sec-Fetch-*


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"},
    {"Origin": "null"},
    {"Origin": "http://localhost:1"},
    {"Origin": "http://127.0.0.1"},  # port differs (80)
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
    {"Origin": "garbage"},
])
def test_cross_site_state_change_refused(open_client, headers):
    c = open_client
    headers = {k: v.format(port=c.port) for k, v in headers.items()}
    for path in ["/prompt", "/upload/image"]:
        status, _, body = c.post(path, body=b'{"x": 1}', headers=headers)
        assert status == 403, (path, headers)
        err = json.loads(body)["error"]
        assert "refused" in err["message"] or "not allowed" in err["message"]


def test_cross_site_reads_of_data_routes_refused(open_client):
    c = open_client
    img = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"}
    assert c.get("/view?filename=a.png", headers=img)[0] == 403
    assert c.get("/history", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors",
                                      "Origin": "http://evil.example"})[0] == 403
    nav = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
    # A link from another site may open the editor, but never a data route.
    assert c.get("/", headers=nav)[0] == 200
    assert c.get("/view?filename=a.png", headers=nav)[0] == 403
    assert c.get("/history", headers=nav)[0] == 403
    # An <iframe> of the editor from another site is a cross-site navigation too: refused.
    assert c.get("/", headers={**nav, "Sec-Fetch-Dest": "iframe"})[0] == 403
    # Typed URL / bookmark and the editor's own fetches.
    assert c.get("/view?filename=a.png", headers={"Sec-Fetch-Site": "none"})[0] == 200
    assert c.get("/history", headers={"Sec-Fetch-Site": "same-origin"})[0] == 200


def test_allowed_origins_may_post(folder):
    s = Settings(allowed_origins=["https://studio.example:8443", "vscode-webview://abc"])
    with serve(s, folder) as port:
        c = Client(port)
        assert c.post("/prompt", headers={"Origin": "https://studio.example:8443",
                                          "Sec-Fetch-Site": "cross-site"})[0] == 200
        assert c.post("/prompt", headers={"Origin": "vscode-webview://abc"})[0] == 200
        for bad in ["https://studio.example", "https://evil@studio.example:8443",
                    "https://studio.example:8443/path", "vscode-webview://abcd"]:
            assert c.post("/prompt", headers={"Origin": bad})[0] == 403, bad


def test_websocket_cross_site_refused(open_client):
    c = open_client
    assert c.ws_status() == 101
    assert c.ws_status({"Origin": c.origin()}) == 101
    assert c.ws_status({"Origin": "http://evil.example"}) == 403
    assert c.ws_status({"Origin": "null"}) == 403
    assert c.ws_status({"Sec-Fetch-Site": "cross-site"}) == 403


# -- authentication -----------------------------------------------------------------------------

def test_token_required_everywhere(token_client):
    c = token_client
    for path in ["/", "/history", "/view?filename=a.png"]:
        status, headers, body = c.get(path)
        assert status == 401, path
        assert "Bearer" in headers["www-authenticate"]
        assert b"secret" not in body and b"PNG" not in body
    assert c.post("/prompt")[0] == 401
    assert c.get("/history", headers={"Authorization": "Bearer wrong"})[0] == 401
    assert c.get("/history", headers={"Authorization": f"Bearer {TOKEN}x"})[0] == 401
    assert c.get("/history", headers={"Authorization": "Basic !!!"})[0] == 401
    assert c.get("/history", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
    assert c.post("/prompt", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
    # ?token= is deliberately not a credential (it would leak into logs and Referer headers).
    assert c.get(f"/history?token={TOKEN}")[0] == 401
    assert c.ws_status(path=f"/ws?token={TOKEN}") == 401
    assert c.ws_status() == 401
    assert c.ws_status({"Authorization": f"Bearer {TOKEN}"}) == 101


def test_browser_navigation_redirects_to_login(token_client):
    status, headers, _ = token_client.get("/view?filename=a.png",
                                          headers={"Sec-Fetch-Mode": "navigate"})
    assert status == 302
    from urllib.parse import parse_qs, urlsplit
    location = urlsplit(headers["location"])
    assert location.path == "/login" and not location.netloc
    assert parse_qs(location.query) == {"next": ["/view?filename=a.png"]}
    status, headers, body = token_client.get("/login")
    assert status == 200 and b"<form" in body
    assert "frame-ancestors 'none'" in headers["content-security-policy"]


def test_login_sets_strict_httponly_session_cookie(token_client):
    c = token_client
    assert c.post("/login", body=json.dumps({"token": "wrong"}),
                  headers={"Content-Type": "application/json"})[0] == 401
    assert c.post("/login", body="[1]", headers={"Content-Type": "application/json"})[0] == 400
    assert c.post("/login", body="{", headers={"Content-Type": "application/json"})[0] == 400
    status, headers, _ = c.post("/login", body=json.dumps({"token": TOKEN}),
                                headers={"Content-Type": "application/json"})
    assert status == 200
    cookie_line = headers["_set-cookie"]
    assert "HttpOnly" in cookie_line and "SameSite=Strict" in cookie_line
    cookie = cookie_line.split(";", 1)[0]
    assert cookie.startswith(session_cookie_name(Settings()) + "=")
    assert c.get("/history", headers={"Cookie": cookie})[0] == 200
    assert c.ws_status({"Cookie": cookie}) == 101
    # A forged or tampered cookie is worthless.
    name, value = cookie.split("=", 1)
    sid, sig = value.rsplit(".", 1)
    tampered = f"{name}={sid}x.{sig}"
    assert c.get("/history", headers={"Cookie": tampered})[0] == 401
    assert c.get("/history", headers={"Cookie": f"{name}=abc.def"})[0] == 401
    # Logging out ends the session on the server, not just in the browser.
    assert c.post("/logout", headers={"Cookie": cookie})[0] == 200
    assert c.get("/history", headers={"Cookie": cookie})[0] == 401


def test_form_login_redirects_only_to_local_paths(token_client):
    c = token_client
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, headers, _ = c.post("/login", body=f"token={TOKEN}&next=/history", headers=form)
    assert status == 303 and headers["location"] == "/history"
    for evil in ["//evil.example/", "http://evil.example/", "/\\evil.example"]:
        status, headers, _ = c.post("/login", body=f"token={TOKEN}&next={evil}", headers=form)
        assert status == 303 and headers["location"] == "/", evil


def test_login_is_protected_from_cross_site_posts(token_client):
    status, _, _ = token_client.post("/login", body=json.dumps({"token": TOKEN}),
                                     headers={"Content-Type": "application/json",
                                              "Origin": "http://evil.example"})
    assert status == 403


def test_basic_auth(folder):
    with serve(Settings(auth_user="ann:pa:ss"), folder) as port:
        c = Client(port)
        status, headers, _ = c.get("/history")
        assert status == 401 and headers["www-authenticate"].startswith("Basic")
        # Basic auth: browsers show their own prompt, so navigations get the 401 too.
        assert c.get("/", headers={"Sec-Fetch-Mode": "navigate"})[0] == 401

        def basic(u, p):
            return {"Authorization": "Basic " + base64.b64encode(f"{u}:{p}".encode()).decode()}
        assert c.get("/history", headers=basic("ann", "pa:ss"))[0] == 200
        assert c.get("/history", headers=basic("ann", "pa"))[0] == 401
        assert c.get("/history", headers=basic("bob", "pa:ss"))[0] == 401
        assert c.get("/history", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 401
        status, headers, _ = c.post("/login", body=json.dumps({"username": "ann", "password": "pa:ss"}),
                                    headers={"Content-Type": "application/json"})
        assert status == 200 and session_cookie_name(Settings()) in headers["_set-cookie"]


def test_repeated_failures_are_throttled(token_client, monkeypatch):
    from loom.server import security

    monkeypatch.setattr(security, "THROTTLED_SPACING_S", 0.3)
    c = token_client
    statuses = [c.get("/history", headers={"Authorization": "Bearer nope"})[0] for _ in range(21)]
    assert set(statuses) == {401}
    # Past the limit, checks are spaced out (tests/test_auth_hardening.py: the right token
    # still gets in, a flood is refused unchecked).
    t0 = time.perf_counter()
    for _ in range(3):
        assert c.get("/history", headers={"Authorization": "Bearer nope"})[0] == 401
    assert time.perf_counter() - t0 >= 0.5


# -- headers and file responses -----------------------------------------------------------------

def test_security_headers_on_every_response(open_client):
    c = open_client
    for method, path in [("GET", "/"), ("GET", "/history"), ("GET", "/nope"), ("POST", "/history"),
                         ("GET", "/view?filename=../secret.txt")]:
        status, headers, _ = c.request(method, path)
        assert headers.get("x-content-type-options") == "nosniff", (method, path, status)
        assert headers.get("x-frame-options") == "DENY"
        assert "frame-ancestors 'none'" in headers.get("content-security-policy", "") or \
            "sandbox" in headers.get("content-security-policy", "")


@pytest.mark.parametrize("name", ["page.html", "pic.svg", "data.xml", "noext"])
def test_view_never_serves_active_content_inline(open_client, name):
    status, headers, body = open_client.get(f"/view?filename={name}")
    assert status == 200
    assert headers["content-type"] == "application/octet-stream"
    assert headers["content-disposition"].startswith("attachment")
    assert "sandbox" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    # The /api alias is covered as well.
    status, headers, _ = open_client.get(f"/api/view?filename={name}")
    assert headers["content-type"] == "application/octet-stream"


def test_view_serves_images_inline_with_sandbox_csp(open_client):
    status, headers, body = open_client.get("/view?filename=a.png")
    assert status == 200 and body.startswith(b"\x89PNG")
    assert headers["content-type"] == "image/png"
    assert "content-disposition" not in headers
    assert "sandbox" in headers["content-security-policy"]


def test_malformed_json_is_a_400(open_client):
    for body in [b"{", b"\xff\xfe", b"", b"not json"]:
        status, headers, data = open_client.post("/prompt", body=body,
                                                 headers={"Content-Type": "application/json"})
        assert status == 400, body
        assert "error" in json.loads(data)


def test_oversized_body_is_413(open_client):
    assert open_client.post("/upload/image", body=b"x" * 100)[0] == 200
    assert open_client.post("/upload/image", body=b"x" * 5000)[0] == 413


# -- safe_join (the path guard every file route uses) ------------------------------------------

@pytest.mark.parametrize("rel", ["../secret.txt", "a/../../secret.txt", "/etc/passwd", "C:\\x",
                                 "C:/x", "..\\secret.txt", "a\x00.png", "..", "x/../.."])
def test_safe_join_refuses_escapes(folder, rel):
    with pytest.raises(UnsafePathError):
        safe_join(folder, rel)


def test_safe_join_refuses_symlink_out(folder, tmp_path):
    (folder / "link.txt").symlink_to(tmp_path / "secret.txt")
    (folder / "dirlink").symlink_to(tmp_path)
    with pytest.raises(UnsafePathError):
        safe_join(folder, "link.txt")
    with pytest.raises(UnsafePathError):
        safe_join(folder, "dirlink/secret.txt")
    assert safe_join(folder, "a.png") == folder.resolve() / "a.png"


def test_safe_join_non_string(folder):
    for bad in [None, 1, ["a"], b"a.png"]:
        with pytest.raises(UnsafePathError):
            safe_join(folder, bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("path", ["/view?filename=../secret.txt", "/view?filename=%2e%2e%2fsecret.txt",
                                  "/view?filename=%252e%252e%252fsecret.txt",
                                  "/view?filename=..%5csecret.txt", "/view?filename=%2Fetc%2Fpasswd",
                                  "/view?filename=a.png%00", "/view?filename=C:%5cWindows"])
def test_view_traversal_refused(open_client, path):
    status, _, body = open_client.get(path)
    assert 400 <= status < 500
    assert b"TOP SECRET" not in body and b"root:" not in body


def test_folders_root_of_only_known_types(tmp_path):
    f = Folders.under(tmp_path)
    for kind in ["output", "input", "temp"]:
        assert f.root_of(kind).name == kind
    for kind in ["models", "user", "../output", ""]:
        with pytest.raises(UnsafePathError):
            f.root_of(kind)


def test_declared_oversized_body_refused_before_reading(folder):
    with serve(Settings(max_upload_mb=1), folder) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        # Headers only: the server must answer without waiting for the 50 MB it was promised.
        conn.putrequest("POST", "/upload/image")
        conn.putheader("Content-Length", str(50 * 1024 * 1024))
        conn.putheader("Content-Type", "application/octet-stream")
        conn.endheaders()
        resp = conn.getresponse()
        assert resp.status == 413
        assert "limit" in json.loads(resp.read())["error"]["message"]
        conn.close()


def test_cross_origin_cors_read_refused(open_client):
    c = open_client
    # Older browsers send no Sec-Fetch-*, but a CORS fetch() from another origin carries Origin.
    assert c.get("/history", headers={"Origin": "http://evil.example"})[0] == 403
    assert c.get("/history", headers={"Origin": "null"})[0] == 403
    assert c.get("/history", headers={"Origin": c.origin()})[0] == 200


def test_session_cookie_is_per_port():
    assert session_cookie_name(Settings(port=8188)) != session_cookie_name(Settings(port=8189))


def test_login_page_script_allowed_by_hash_only(token_client):
    _, headers, body = token_client.get("/login")
    csp = headers["content-security-policy"]
    assert "'unsafe-inline'" not in csp.split("script-src", 1)[1].split(";", 1)[0]
    import base64 as b64
    import hashlib
    import re
    script = re.search(rb"<script>(.*?)</script>", body, re.S).group(1)
    digest = b64.b64encode(hashlib.sha256(script).digest()).decode()
    assert f"'sha256-{digest}'" in csp


def test_sessions_are_bounded_and_expire(monkeypatch):
    from loom.server import security

    policy = security._Policy(Settings(auth_token=TOKEN))
    first = policy.new_session()
    assert policy.session_valid(first)
    for _ in range(security.MAX_SESSIONS):
        policy.new_session()
    assert len(policy.sessions) == security.MAX_SESSIONS
    assert not policy.session_valid(first)  # the oldest made room
    latest = policy.new_session()
    monkeypatch.setattr(security.time, "time", lambda: 10**12)
    assert not policy.session_valid(latest)  # expired


def test_listen_none_means_every_interface():
    assert not listens_on_loopback_only(Settings(listen=None))  # type: ignore[arg-type]


def test_cors_only_for_configured_origins(folder):
    allowed = "https://studio.example"
    with serve(Settings(allowed_origins=[allowed], auth_token=TOKEN), folder) as port:
        c = Client(port)
        preflight = {"Origin": allowed, "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "authorization, content-type",
                     "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"}
        status, headers, _ = c.request("OPTIONS", "/prompt", headers=preflight)
        assert status == 204  # before auth: preflights carry no credentials
        assert headers["access-control-allow-origin"] == allowed
        assert "POST" in headers["access-control-allow-methods"]
        assert headers["access-control-allow-headers"] == "authorization, content-type"
        auth = {"Authorization": f"Bearer {TOKEN}", "Origin": allowed, "Sec-Fetch-Site": "cross-site"}
        status, headers, _ = c.post("/prompt", headers=auth)
        assert status == 200 and headers["access-control-allow-origin"] == allowed
        # Still authenticated: the origin alone is no credential.
        assert c.post("/prompt", headers={"Origin": allowed})[0] == 401
        # Any other origin: no preflight answer, no CORS headers.
        status, headers, _ = c.request("OPTIONS", "/prompt", headers={**preflight, "Origin": EVIL_ORIGIN})
        assert status == 403 and "access-control-allow-origin" not in headers
        status, headers, _ = c.get("/history", headers={"Authorization": f"Bearer {TOKEN}",
                                                        "Origin": f"http://127.0.0.1:{port}"})
        assert status == 200 and "access-control-allow-origin" not in headers


EVIL_ORIGIN = "http://evil.example"

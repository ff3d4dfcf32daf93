"""Bodies and requests that used to hurt the server: huge numbers, lone surrogates, long names,
malformed multipart headers, big or slow bodies on the open login route, half-sent requests.
Each must be a clear 4xx (or a closed connection), never a 500 or a frozen server."""

from __future__ import annotations

import http.client
import json
import socket
import time

import pytest

from loom import jsonsafe

PROMPT = {
    "1": {"class_type": "IntConst", "inputs": {"value": 1}},
    "2": {"class_type": "Sink", "inputs": {"value": ["1", 0]}},
}


def raw_send(
    server, method: str, target: str, body: bytes = b"", headers: dict | None = None
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.settings.port, timeout=30)
    try:
        conn.request(
            method,
            target,
            body=body,
            headers={"Host": f"127.0.0.1:{server.settings.port}", **(headers or {})},
        )
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def post_json(server, path: str, text: str) -> tuple[int, dict]:
    status, data = raw_send(server, "POST", path, text.encode(), {"Content-Type": "application/json"})
    return status, json.loads(data)


# -- the one parser ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, why",
    [
        ('{"n": ' + "9" * 5000 + "}", "digits"),
        ('{"n": -' + "9" * 60 + "}", "digits"),
        ('{"n": 1e400}', "out of range"),
        ('{"n": -1e400}', "out of range"),
        ('{"n": NaN}', "NaN"),
        ('{"n": Infinity}', "Infinity"),
        ('{"\\ud800": 1}', "surrogate"),
        ('{"a": ["x", {"b": "\\udfff"}]}', "surrogate"),
        ('["\\ude00\\ud83d"]', "surrogate"),  # a pair in the wrong order is two lone halves
        ("[" * 100_000 + "]" * 100_000, "nested"),
    ],
)
def test_strict_json_refuses(text, why):
    with pytest.raises(jsonsafe.JSONError, match=why):
        jsonsafe.loads(text.encode())


def test_strict_json_accepts_what_is_text():
    assert jsonsafe.loads(b'["\\ud83d\\ude00", "\\u00e9", 18446744073709551615, 1.5e300]') == [
        "\U0001f600",
        "é",
        2**64 - 1,
        1.5e300,
    ]
    assert jsonsafe.loads('{"a": "é"}') == {"a": "é"}
    with pytest.raises(jsonsafe.JSONError, match="UTF-8"):
        jsonsafe.loads(b'{"a": "\xff"}')


# -- every JSON route uses it ----------------------------------------------------------------------

SURROGATE_BODIES = [
    (
        "/prompt",
        '{"prompt": {"1": {"class_type": "IntConst", "inputs": {"value": 1}}, '
        '"2": {"class_type": "Sink", "inputs": {"value": ["1", 0]}}}, "prompt_id": "\\ud800"}',
    ),
    (
        "/prompt",
        '{"prompt": {"\\ud800": {"class_type": "IntConst", "inputs": {"value": 1}}, '
        '"2": {"class_type": "Sink", "inputs": {"value": ["\\ud800", 0]}}}}',
    ),
    ("/prompt", '{"prompt": {}, "client_id": "\\udc00"}'),
    ("/settings", '{"\\ud800": 1}'),
    ("/settings/Comfy.x", '"\\ud800"'),
    ("/queue", '{"delete": ["\\ud800"]}'),
    ("/history", '{"delete": ["\\ud800"]}'),
    ("/interrupt", '{"prompt_id": "\\ud800"}'),
    ("/workflow/convert", '{"nodes": [], "links": [], "extra": {"\\ud800": 1}}'),
    ("/workflow/load", '{"nodes": [], "links": [], "extra": {"\\ud800": 1}}'),
    ("/api/prompt", '{"prompt": {"1": {"class_type": "StrConst", "inputs": {"value": "\\ud800"}}}}'),
]


@pytest.mark.parametrize("path, body", SURROGATE_BODIES)
def test_lone_surrogates_are_refused_at_parse_time(loom_server_shared, path, body):
    status, data = post_json(loom_server_shared, path, body)
    assert status == 400, data
    assert "surrogate" in json.dumps(data)
    # Nothing reached the store: history, queue and settings still read.
    for route in ("/history", "/queue", "/settings"):
        assert loom_server_shared.get(route).status == 200


@pytest.mark.parametrize("number", ["9" * 5000, "-" + "9" * 300, "1e400", "-1e400", "1" + "0" * 60])
@pytest.mark.parametrize(
    "path, template",
    [
        ("/prompt", '{"prompt": ' + json.dumps(PROMPT) + ', "number": {n}}'),
        (
            "/prompt",
            '{"prompt": {"1": {"class_type": "IntConst", "inputs": {"value": {n}}}, '
            '"2": {"class_type": "Sink", "inputs": {"value": ["1", 0]}}}}',
        ),
        ("/settings", '{"Comfy.number": {n}}'),
        ("/queue", '{"clear": {n}}'),
        ("/workflow/convert", '{"nodes": [{"id": {n}, "type": "IntConst"}], "links": []}'),
    ],
)
def test_huge_numbers_are_a_400(loom_server_shared, path, template, number):
    status, data = post_json(loom_server_shared, path, template.replace("{n}", number))
    assert status == 400, data
    assert data["error"]["type"] == "invalid_json", data


def test_big_but_sane_numbers_still_work(loom_server_shared):
    # u64 seeds and big client numbers are fine.
    r = loom_server_shared.post("/prompt", json={"prompt": PROMPT, "number": 10**30})
    assert r.status == 200, r.text
    loom_server_shared.post("/queue", json={"clear": True})


# -- long names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["a" * 300, "a" * 300 + ".png", "sub/" + "b" * 256 + "/x.png", "/".join(["c" * 200] * 15)]
)
def test_overlong_file_names_are_a_400(loom_server_factory, name):
    srv = loom_server_factory(builtin=True)
    r = srv.get("/view", params={"filename": name})
    assert r.status == 400, r.text
    assert "too long" in r.json()["error"]["message"]
    r = srv.get("/view", params={"filename": "x.png", "subfolder": name, "type": "input"})
    assert r.status == 400, r.text
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": name}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    r = srv.post("/prompt", json={"prompt": prompt})
    assert r.status == 400, r.text
    assert "too long" in r.json()["node_errors"]["1"]["errors"][0]["message"]


# -- multipart -----------------------------------------------------------------------------------

BAD_PARTS = [
    b'--x\r\nContent-Disposition: inline\x00; name="image"\r\n\r\nabc\r\n--x--\r\n',
    b"--x\r\nBad header line\r\n\r\nabc\r\n--x--\r\n",
    b"--x\r\n" + b"X-Long: " + b"a" * 20000 + b"\r\n\r\nabc\r\n--x--\r\n",
    b'--x\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
    b"Content-Transfer-Encoding: rot13\r\n\r\nabc\r\n--x--\r\n",
    b'--x\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
    b"Content-Encoding: gzip\r\n\r\nabc\r\n--x--\r\n",
    b'--x\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
    b"Content-Length: zz\r\n\r\nabc\r\n--x--\r\n",
    b"--x\r\nContent-Disposition: form-data; name*=UTF-8''%ff%fe\r\n\r\nabc\r\n--x--\r\n",
    b"--y\r\n\r\n--x--",
    b"--x\r\n\r\n",
]


@pytest.mark.parametrize("path", ["/upload/image", "/upload/mask", "/workflow/load"])
@pytest.mark.parametrize("body", BAD_PARTS)
def test_malformed_multipart_is_a_400(loom_server_shared, path, body):
    status, data = raw_send(
        loom_server_shared, "POST", path, body, {"Content-Type": "multipart/form-data; boundary=x"}
    )
    assert 400 <= status < 500, (status, data[:300])
    assert json.loads(data)["error"]["message"]


# -- the open login route ------------------------------------------------------------------------

TOKEN = "t" * 24


def test_login_reads_only_a_small_body_and_counts_bad_ones(loom_server_factory):
    srv = loom_server_factory(auth_token=TOKEN)
    big = b'{"token": "' + b"x" * (1 << 20) + b'"}'
    status, data = raw_send(srv, "POST", "/login", big, {"Content-Type": "application/json"})
    assert status == 413, data

    def chunks():  # chunked: no Content-Length to refuse it by
        for _ in range(64):
            yield b"a" * 65536

    conn = http.client.HTTPConnection("127.0.0.1", srv.settings.port, timeout=10)
    conn.request(
        "POST",
        "/login",
        body=chunks(),
        encode_chunked=True,
        headers={"Host": f"127.0.0.1:{srv.settings.port}", "Content-Type": "application/json"},
    )
    assert conn.getresponse().status == 413
    conn.close()
    # Malformed bodies count as failed attempts, like wrong tokens.
    for body in [b"{", b'{"token": 1e400}', b'["\\ud800"]', b"\xff"]:
        status, _ = raw_send(srv, "POST", "/login", body, {"Content-Type": "application/json"})
        assert status == 400
    for _ in range(16):
        status, _ = raw_send(srv, "POST", "/login", b"{", {"Content-Type": "application/json"})
        assert status == 400
    # Over the failure limit, attempts from this address are spaced out (see security.py).
    start = time.monotonic()
    for _ in range(3):
        raw_send(srv, "POST", "/login", b"{", {"Content-Type": "application/json"})
    assert time.monotonic() - start > 1.5


def test_login_form_and_json_still_work(loom_server_factory):
    srv = loom_server_factory(auth_token=TOKEN)
    status, data = raw_send(
        srv,
        "POST",
        "/login",
        f"token={TOKEN}&next=/x".encode(),
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 303, data
    status, data = raw_send(
        srv, "POST", "/login", json.dumps({"token": TOKEN}).encode(), {"Content-Type": "application/json"}
    )
    assert status == 200 and json.loads(data)["ok"] is True
    status, data = raw_send(srv, "POST", "/login", b"token=x", {"Content-Type": "text/csv"})
    assert status == 415


def test_control_routes_take_small_bodies_only(loom_server_shared):
    body = json.dumps({"delete": ["x" * 100] * 20000}).encode()  # 2 MB
    for path in ("/queue", "/history", "/interrupt", "/free"):
        status, data = raw_send(loom_server_shared, "POST", path, body, {"Content-Type": "application/json"})
        assert status == 413, (path, data[:200])


def test_a_big_prompt_body_is_parsed_off_the_event_loop(loom_server_shared, monkeypatch):
    import loom.server.routes._common as common

    threads = []
    real = common.loads

    def spy(raw):
        import threading

        threads.append(threading.current_thread().name)
        return real(raw)

    monkeypatch.setattr(common, "loads", spy)
    big = {"prompt": PROMPT, "extra_data": {"pad": "x" * (1 << 20)}}
    r = loom_server_shared.post("/prompt", json=big)
    assert r.status == 200, r.text
    small = loom_server_shared.post("/prompt", json={"prompt": PROMPT})
    assert small.status == 200
    assert threads[0] != "loom-test-server" and threads[1] == "loom-test-server", threads
    loom_server_shared.post("/queue", json={"clear": True})


# -- half-sent requests --------------------------------------------------------------------------


def _closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    sock.settimeout(seconds)
    got = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return True, got
            got += chunk
    except TimeoutError:
        return False, got


def test_half_sent_headers_are_closed(loom_server_factory):
    srv = loom_server_factory(request_timeout_s=1.0)
    socks = []
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", srv.settings.port))
        s.sendall(b"GET /queue HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        socks.append(s)
    start = time.monotonic()
    for s in socks:
        closed, _ = _closed_within(s, 10)
        assert closed
        s.close()
    assert time.monotonic() - start < 8
    assert srv.get("/queue").status == 200


def test_half_sent_bodies_get_a_408(loom_server_factory):
    srv = loom_server_factory(request_timeout_s=1.0)
    paths = {
        "/prompt": "application/json",
        "/upload/image": "multipart/form-data; boundary=x",
        "/userdata/w.json": "application/json",
        "/workflow/load": "application/json",
    }
    stalled = {}  # all four at once: each must time out on its own
    for path, ctype in paths.items():
        s = socket.create_connection(("127.0.0.1", srv.settings.port))
        s.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
            "Content-Length: 1000\r\n\r\n--x\r\n".encode()
        )
        stalled[path] = (s, time.monotonic())
    for path, (s, start) in stalled.items():
        closed, got = _closed_within(s, 10)
        s.close()
        assert got.startswith(b"HTTP/1.1 408"), (path, got[:200])
        # then closed: no lingering longer than the request timeout for a client that stalled
        assert closed and time.monotonic() - start < 5, path
    assert srv.get("/queue").status == 200

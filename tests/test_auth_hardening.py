"""Auth polish: no secrets in /system_stats, a throttle that lets the right credentials in,
login redirects checked as a browser reads them, TLS-only cookies, strong credentials on the
network."""

from __future__ import annotations

import asyncio
import sys
import time

import aiohttp
import pytest
from aiohttp import web

from loom.config import Settings
from loom.server import security
from loom.server.security import (
    InsecureConfigError,
    check_startup_security,
    redact_argv,
    safe_next,
    session_cookie_name,
)
from tests.test_security_unit import TOKEN, Client, serve

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "output").mkdir()
    return tmp_path / "output"


@pytest.fixture
def token_client(folder):
    with serve(Settings(auth_token=TOKEN), folder) as port:
        yield Client(port)


# -- secrets on the command line ---------------------------------------------------------------

def test_argv_redaction():
    argv = ["main.py", "--auth-token", "s3cret", "--port", "1", "--auth-user=ann:pw",
            "--auth-tok", "abbrev", "--auth-u=bob:pw2", "--listen", "0.0.0.0"]
    shown = redact_argv(argv)
    assert not any(s in " ".join(shown) for s in ("s3cret", "ann:pw", "abbrev", "bob:pw2"))
    assert shown == ["main.py", "--auth-token", "<redacted>", "--port", "1",
                     "--auth-user=<redacted>", "--auth-tok", "<redacted>", "--auth-u=<redacted>",
                     "--listen", "0.0.0.0"]


def test_system_stats_shows_no_secrets(loom_server, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["main.py", "--auth-token", "s3cret-value",
                                      "--auth-user=ann:hunter2-long"])
    r = loom_server.get("/system_stats")
    assert r.status == 200
    assert b"s3cret-value" not in r.body and b"hunter2" not in r.body
    assert r.json()["system"]["argv"][1:] == ["--auth-token", "<redacted>", "--auth-user=<redacted>"]


# -- throttle ------------------------------------------------------------------------------------

def test_the_right_token_gets_in_while_a_guesser_is_throttled(token_client, monkeypatch):
    monkeypatch.setattr(security, "THROTTLED_SPACING_S", 0.2)
    c = token_client
    statuses = [c.get("/history", headers={"Authorization": "Bearer nope"})[0]
                for _ in range(security.MAX_FAILURES + 3)]
    assert set(statuses[:security.MAX_FAILURES]) == {401}
    assert statuses[-1] == 401  # still checked, but spaced out
    # From the same address (a proxy, say) the right token still works...
    t0 = time.perf_counter()
    assert c.get("/history", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
    assert time.perf_counter() - t0 < 2
    # ...while a flood of guesses is held to one check per spacing: most are refused unchecked.

    async def flood():
        headers = {"Authorization": "Bearer nope", "Host": f"127.0.0.1:{c.port}"}
        async with aiohttp.ClientSession() as session:
            async def one():
                async with session.get(f"http://127.0.0.1:{c.port}/history", headers=headers) as r:
                    return r.status
            return await asyncio.gather(*(one() for _ in range(40)))

    t0 = time.perf_counter()
    results = asyncio.run(flood())
    took = time.perf_counter() - t0
    checked = results.count(401)
    assert results.count(429) >= 40 - security.THROTTLED_WAITING - 1
    assert checked <= security.THROTTLED_WAITING + 1
    assert took >= (checked - 1) * 0.2 * 0.9  # the checked ones were spaced out


# -- login redirect ------------------------------------------------------------------------------

@pytest.mark.parametrize("evil", ["/\t/evil.example/", "/\n/evil.example/", "/\r\n/evil.example",
                                  " //evil.example", "\t//evil.example", "/\\evil.example",
                                  "\\\\evil.example", "//evil.example", "https://evil.example",
                                  "javascript:alert(1)", "", None, 5])
def test_next_must_stay_on_this_server(evil):
    assert safe_next(evil) == "/"


def test_next_keeps_local_paths_and_encodes_what_a_header_cannot_carry():
    assert safe_next("/history?max_items=5#x") == "/history?max_items=5#x"
    assert safe_next("/a b/é") == "/a%20b/%C3%A9"
    assert safe_next("/x\x00y") == "/x%00y"
    assert safe_next("/./\t/x") == "/.//x"  # a path on this server, after the dot segment


def test_form_login_refuses_a_tab_smuggled_redirect(token_client):
    c = token_client
    body = f"token={TOKEN}&next=/%09/evil.example/"  # the form field holds "/\t/evil.example/"
    status, headers, _ = c.post("/login", body=body, headers=FORM)
    assert status == 303 and headers["location"] == "/"


# -- session cookie --------------------------------------------------------------------------------

@web.middleware
async def _tls_front(request, handler):
    """A TLS-terminating front: the request reaches the guards marked secure."""
    return await handler(request.clone(scheme="https"))


def test_over_tls_the_cookie_is_host_only(folder, monkeypatch):
    import tests.test_security_unit as unit

    def https_app(settings, where):
        app = make_app(settings, where)
        app.middlewares.insert(0, _tls_front)
        return app

    make_app = unit.make_app
    monkeypatch.setattr(unit, "make_app", https_app)
    settings = Settings(auth_token=TOKEN)
    with serve(settings, folder) as port:
        c = Client(port)
        status, headers, _ = c.post("/login", body=f"token={TOKEN}", headers={
            **FORM, "Origin": f"https://127.0.0.1:{port}"})
        assert status == 303
        line = headers["_set-cookie"]
        name = "__Host-" + session_cookie_name(settings)
        assert line.startswith(name + "=") and "Secure" in line and "Path=/" in line
        assert "Domain" not in line
        cookie = line.split(";", 1)[0]
        assert c.get("/history", headers={"Cookie": cookie})[0] == 200
        # The plain-HTTP name is not accepted over TLS.
        plain = cookie.replace("__Host-", "", 1)
        assert c.get("/history", headers={"Cookie": plain})[0] == 401


# -- credential strength -------------------------------------------------------------------------

@pytest.mark.parametrize("kw, words", [
    ({"auth_token": "abc"}, "--auth-token has 3 characters, fewer than 16"),
    ({"auth_token": "a" * 40}, "different characters"),
    ({"auth_user": "a:b"}, "password has 1 characters, fewer than 12"),
    ({"auth_user": "administrator:Administrator"}, "password is the user name"),
])
def test_weak_credentials_are_refused_beyond_loopback(kw, words):
    with pytest.raises(InsecureConfigError) as info:
        check_startup_security(Settings(listen="0.0.0.0", **kw))
    assert words in str(info.value) and "token_urlsafe" in str(info.value)
    check_startup_security(Settings(listen="127.0.0.1", **kw))  # loopback: the user's business


def test_strong_credentials_start_on_the_network():
    check_startup_security(Settings(listen="0.0.0.0", auth_token=TOKEN))
    check_startup_security(Settings(listen="0.0.0.0", auth_user="ann:correct horse battery"))

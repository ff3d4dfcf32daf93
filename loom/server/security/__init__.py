"""Request guards of the Loom server: startup refusal, Host/Origin checks, auth, safe headers.

This module holds the policy, authentication and sessions, and the middlewares; the origin
rules are in :mod:`.origins`, the response headers in :mod:`.headers`.

What each guard stops, in the order the middlewares run (outermost first):

1. ``headers``   — every response gets ``X-Content-Type-Options: nosniff``, anti-framing headers
   and, on file routes (``/view``, ``/userdata``), a sandboxing CSP; files whose type a browser
   could run (HTML, SVG, XML, unknown) are sent as ``application/octet-stream`` attachments.
   Malformed JSON / undecodable bodies that escape a route become a 400, never a 500.
2. ``host``      — DNS rebinding: while Loom listens on loopback only, a request whose ``Host``
   is not a loopback name/IP is refused (421). A rebinding page at ``evil.example`` resolving to
   127.0.0.1 sends ``Host: evil.example`` and cannot read anything. (Listening on the network
   without auth, only IP literals and this machine's names are accepted.) A body whose
   ``Content-Length`` is over ``--max-upload-mb`` is refused here with 413, before it is read;
   ``create_app``'s ``client_max_size`` and the upload route's streaming check cover chunked ones.
3. ``cross-site``— CSRF and cross-site reads: state-changing methods and the websocket upgrade
   are refused (403) for ``Sec-Fetch-Site: cross-site``/``same-site``, ``Origin: null`` or an
   ``Origin`` that is neither the request's own host nor in ``settings.allowed_origins``. GETs
   from other sites are refused too, except top-level navigations to the editor's pages.
   CORS headers (and preflight answers) are given to the ``allowed_origins`` only.
4. ``auth``      — when a token or user:password is configured: ``Authorization: Bearer``, HTTP
   Basic, or the session cookie set by ``POST /login``. Only the login page is open.

Browsers cannot set headers on a websocket or an ``<img src=/view>``; the session cookie
(HttpOnly, SameSite=Strict, HMAC-signed random id kept in memory) covers them. A ``?token=``
query parameter is deliberately *not* accepted: it would end up in access logs, browser history
and Referer headers.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, quote

from aiohttp import web

from loom.server.routes._common import ApiError, error_response, loads, read_body
from loom.server.security.headers import _add_headers
from loom.server.security.origins import (
    _is_websocket_upgrade,
    _origin_host_port,
    _own_host_names,
    _route_path,
    _split_host_port,
    is_loopback_host,
    listen_addresses,  # noqa: F401 (part of this package's interface)
    listens_on_loopback_only,
)

log = logging.getLogger("loom.security")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]

SESSION_COOKIE = "loom_session"  # + "_<port>": instances on one host keep their own
SESSION_SECONDS = 7 * 24 * 3600
LOGIN_PATH = "/login"
LOGOUT_PATH = "/logout"
# Pages a link on another site may open (top-level navigation): the editor and the login page.
NAVIGABLE_PATHS = frozenset({"/", "/index.html", LOGIN_PATH})
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Failed-credential throttle: past this many failures per client address in a window, that
# address's credential checks are spaced THROTTLED_SPACING_S apart (at most THROTTLED_WAITING
# waiting, the rest refused unchecked). Right credentials still get in: behind a proxy one
# guesser must not lock everyone out, and the spacing makes guessing hopeless.
MAX_FAILURES = 20
MAX_SESSIONS = 1000
FAILURE_WINDOW_S = 60.0
THROTTLED_SPACING_S = 1.0
THROTTLED_WAITING = 8
# Credentials accepted when listening beyond loopback (strength is length; see check_strength).
MIN_TOKEN_LENGTH = 16
MIN_PASSWORD_LENGTH = 12
MIN_DISTINCT_CHARACTERS = 5
# Command-line options whose values are secrets (argparse also takes unambiguous prefixes).
SECRET_OPTIONS = ("--auth-token", "--auth-user")
# Credentials and a `next` path fit in far less; the route is open to anyone.
LOGIN_MAX_BODY = 16 * 1024


class InsecureConfigError(SystemExit):
    """The server would be reachable from the network without authentication.

    A ``SystemExit`` so an uncaught raise in ``main.py`` prints the message and exits with
    status 1 without a traceback; ``str(err)`` is the message.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def auth_configured(settings: Any) -> bool:
    return bool(getattr(settings, "auth_token", None) or getattr(settings, "auth_user", None))


def check_startup_security(settings: Any) -> None:
    """Refuse to start when the server would be reachable from the network with no auth.

    Raises :class:`InsecureConfigError` (a ``SystemExit``) with a message for the command line.
    """
    auth_user = getattr(settings, "auth_user", None)
    if auth_user is not None and (":" not in auth_user or not auth_user.split(":", 1)[0]
                                  or not auth_user.split(":", 1)[1]):
        raise InsecureConfigError(
            "--auth-user must look like USER:PASSWORD (both non-empty).")
    token = getattr(settings, "auth_token", None)
    if token is not None and not token.strip():
        raise InsecureConfigError("--auth-token must not be empty.")
    if listens_on_loopback_only(settings) or auth_configured(settings):
        if not listens_on_loopback_only(settings):
            check_strength(token, auth_user)
        return
    if getattr(settings, "insecure_no_auth", False):
        log.warning(
            "!!! Listening on %s WITHOUT AUTHENTICATION: anyone who can reach this machine can "
            "run workflows, read every output and write files in input/. !!!",
            getattr(settings, "listen", ""))
        return
    raise InsecureConfigError(
        f"Refusing to listen on {getattr(settings, 'listen', '')!r} without authentication: "
        "anyone on the network could run workflows and read your images.\n"
        "Set --auth-token TOKEN (or --auth-user USER:PASSWORD), listen on 127.0.0.1, or, if you "
        "really mean it, pass --allow-unauthenticated-network-access.")


def check_strength(token: str | None, auth_user: str | None) -> None:
    """Refuse credentials a network guesser could find (the server listens beyond loopback)."""
    problems = []
    if token is not None:
        problems += _weakness(token, "--auth-token", MIN_TOKEN_LENGTH)
    if auth_user is not None:
        user, _, password = auth_user.partition(":")
        problems += _weakness(password, "the --auth-user password", MIN_PASSWORD_LENGTH)
        if password.lower() == user.lower():
            problems.append("the --auth-user password is the user name")
    if problems:
        raise InsecureConfigError(
            "Refusing to listen on the network with weak credentials: " + "; ".join(problems)
            + ". Make a strong token with `python -c 'import secrets; print(secrets.token_urlsafe())'`"
            ", or listen on 127.0.0.1 only.")


def _weakness(secret: str, what: str, min_length: int) -> list[str]:
    if len(secret) < min_length:
        return [f"{what} has {len(secret)} characters, fewer than {min_length}"]
    if len(set(secret)) < MIN_DISTINCT_CHARACTERS:
        return [f"{what} uses fewer than {MIN_DISTINCT_CHARACTERS} different characters"]
    return []


def redact_argv(argv: list[str]) -> list[str]:
    """``argv`` with the values of secret options replaced (for /system_stats and logs)."""
    out, hide_next = [], False
    for arg in argv:
        if hide_next:
            out.append("<redacted>")
            hide_next = False
            continue
        name, eq, _ = arg.partition("=")
        secret = len(name) > len("--au") and any(o.startswith(name) for o in SECRET_OPTIONS)
        if secret and eq:
            out.append(f"{name}=<redacted>")
        else:
            out.append(arg)
            hide_next = secret
    return out


def safe_next(value: Any) -> str:
    """Where to send the browser after a login: a path on this server, or ``/``.

    Checked as the browser will read the Location header: it drops tabs and newlines anywhere,
    strips leading/trailing spaces and control characters, and reads a backslash as ``/``, so
    ``/<TAB>/evil.example`` and ``/<BACKSLASH>evil.example`` are off-site (``//host``) links."""
    if not isinstance(value, str):
        return "/"
    cleaned = re.sub(r"[\t\n\r]", "", value).strip("".join(map(chr, range(33))))
    cleaned = cleaned.replace("\\", "/")
    if not cleaned.startswith("/") or cleaned.startswith("//") or len(cleaned) > 2048:
        return "/"
    # Whatever else a header cannot carry (controls, non-ASCII) is percent-encoded.
    return quote(cleaned, safe="/?&=#%:@!$'()*+,;~-._")


# -- helpers -----------------------------------------------------------------------------------

def _error(status: int, message: str, *, headers: dict[str, str] | None = None,
           reason: str = "") -> web.Response:
    response = error_response(status, reason or "forbidden", message, {"details": ""})
    response.headers.update(headers or {})
    return response


class _Gate:
    """The credential checks of one throttled address, one at a time."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.waiting = 0
        self.next_check = 0.0


class _Policy:
    """Everything the middlewares need from the settings, computed once."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.loopback_only = listens_on_loopback_only(settings)
        self.token: str | None = getattr(settings, "auth_token", None) or None
        self.user_pass: tuple[str, str] | None = None
        auth_user = getattr(settings, "auth_user", None)
        if auth_user and ":" in auth_user:
            user, password = auth_user.split(":", 1)
            self.user_pass = (user, password)
        self.auth_on = bool(self.token or self.user_pass)
        self.allowed_origins: set[tuple[str, str, int | None]] = set()
        # Non-web origins (an app's "vscode-webview://abc", "app://loom") match exactly.
        self.allowed_raw_origins: set[str] = set()
        for o in getattr(settings, "allowed_origins", None) or []:
            parsed = _origin_host_port(o)
            if parsed:
                self.allowed_origins.add(parsed)
            elif "://" in o and o.strip().lower() != "null":
                self.allowed_raw_origins.add(o.strip().lower().rstrip("/"))
            else:
                log.warning("Ignoring malformed allowed origin %r (want scheme://host[:port])", o)
        self.allowed_origin_hosts = {h for _, h, _ in self.allowed_origins}
        self.own_names = _own_host_names()
        self._secret = secrets.token_bytes(32)
        self.sessions: dict[str, float] = {}
        self.cookie_name = session_cookie_name(settings)
        mb = getattr(settings, "max_upload_mb", None)
        # Multipart framing adds a little to the file itself.
        self.max_body = int(mb * 1024 * 1024 + 64 * 1024) if mb else None
        self.failures: dict[str, list[float]] = {}
        self.gates: dict[str, _Gate] = {}

    # -- Host (DNS rebinding) --------------------------------------------------------------

    def host_allowed(self, request: web.Request) -> bool:
        raw = request.headers.get("Host")
        if raw is None:
            return True  # HTTP/1.0 or a raw client: no browser sends a request without Host
        parsed = _split_host_port(raw, None)
        if parsed is None:
            return False
        host = parsed[0]
        if host in self.allowed_origin_hosts:
            return True
        if self.loopback_only:
            return is_loopback_host(host)
        if self.auth_on:
            return True  # credentials are bound to the origin; a rebinding page has none
        # Network without auth (the loud flag): IP literals and this machine's own names only.
        h = host[1:-1] if host.startswith("[") else host
        try:
            ipaddress.ip_address(h)
            return True
        except ValueError:
            return host in self.own_names or is_loopback_host(host)

    # -- Origin / Sec-Fetch-Site -------------------------------------------------------------

    def explicitly_allowed(self, origin: str | None) -> bool:
        """``origin`` is one of ``settings.allowed_origins`` (not merely this server's own)."""
        if not origin:
            return False
        if origin.strip().lower().rstrip("/") in self.allowed_raw_origins:
            return True
        parsed = _origin_host_port(origin)
        return parsed is not None and parsed in self.allowed_origins

    def origin_matches(self, request: web.Request, origin: str) -> bool:
        if self.explicitly_allowed(origin):
            return True
        parsed = _origin_host_port(origin)
        if parsed is None:
            return False
        scheme, host, port = parsed
        own = _split_host_port(request.headers.get("Host", request.host or ""),
                               443 if scheme == "https" else 80)
        if own is None:
            return False
        return (host, port) == own

    def cross_site_reason(self, request: web.Request) -> str | None:
        """Why this request must be refused as cross-site, or None."""
        origin = request.headers.get("Origin")
        site = request.headers.get("Sec-Fetch-Site", "").strip().lower()
        path = _route_path(request)
        guarded = request.method in STATE_CHANGING or _is_websocket_upgrade(request)
        if origin is not None and origin.strip().lower() == "null":
            if guarded or site not in ("", "same-origin", "none"):
                return "requests from an opaque origin (Origin: null) are not allowed"
        if guarded:
            if origin is not None and origin.strip().lower() != "null":
                if self.origin_matches(request, origin):
                    return None
                return (f"cross-origin request from {origin!r} refused; only this server's own "
                        "pages (or --allowed-origin) may change state")
            if site in ("cross-site", "same-site"):
                return f"cross-site request refused (Sec-Fetch-Site: {site})"
            if origin is not None:
                return "requests from an opaque origin (Origin: null) are not allowed"
            return None
        # Reads (GET/HEAD/OPTIONS). A CORS-mode fetch() from another origin carries Origin.
        if origin is not None and not self.origin_matches(request, origin):
            return (f"cross-origin read from {origin!r} refused; only this server's own pages "
                    "(or --allowed-origin) may read its data")
        if site in ("cross-site", "same-site"):
            if origin is not None and self.origin_matches(request, origin):
                return None
            mode = request.headers.get("Sec-Fetch-Mode", "").strip().lower()
            dest = request.headers.get("Sec-Fetch-Dest", "").strip().lower()
            if (mode == "navigate" and dest in ("", "document") and request.method == "GET"
                    and path in NAVIGABLE_PATHS):
                return None
            return (f"cross-site read refused (Sec-Fetch-Site: {site}); open Loom directly "
                    "instead of through another site")
        return None

    # -- authentication ----------------------------------------------------------------------

    def _sign(self, sid: str) -> str:
        return hmac.new(self._secret, sid.encode(), hashlib.sha256).hexdigest()

    def new_session(self) -> str:
        now = time.time()
        for sid, exp in list(self.sessions.items()):
            if exp < now:
                del self.sessions[sid]
        while len(self.sessions) >= MAX_SESSIONS:  # oldest first (dicts keep insertion order)
            del self.sessions[next(iter(self.sessions))]
        sid = secrets.token_urlsafe(32)
        self.sessions[sid] = now + SESSION_SECONDS
        return f"{sid}.{self._sign(sid)}"

    def session_valid(self, cookie: str | None) -> bool:
        if not cookie or "." not in cookie:
            return False
        sid, sig = cookie.rsplit(".", 1)
        if not hmac.compare_digest(sig.encode(), self._sign(sid).encode()):
            return False
        exp = self.sessions.get(sid)
        if exp is None or exp < time.time():
            self.sessions.pop(sid, None)
            return False
        return True

    def cookie_for(self, request: web.Request) -> str:
        """The session cookie's name. Over TLS it has the ``__Host-`` prefix: the browser then
        keeps it to this exact origin (Secure, no Domain). Over plain HTTP a browser sends it to
        every port of the host; the per-port name keeps servers from clobbering each other's."""
        return f"__Host-{self.cookie_name}" if request.secure else self.cookie_name

    def end_session(self, cookie: str | None) -> None:
        if cookie and "." in cookie:
            self.sessions.pop(cookie.rsplit(".", 1)[0], None)

    def check_token(self, token: str) -> bool:
        return self.token is not None and hmac.compare_digest(
            token.encode("utf-8", "surrogateescape"), self.token.encode())

    def check_user(self, user: str, password: str) -> bool:
        if self.user_pass is None:
            return False
        ok_user = hmac.compare_digest(user.encode("utf-8", "surrogateescape"),
                                      self.user_pass[0].encode())
        ok_pass = hmac.compare_digest(password.encode("utf-8", "surrogateescape"),
                                      self.user_pass[1].encode())
        return ok_user and ok_pass

    def credentials(self, request: web.Request) -> bool | None:
        """True: valid credentials; False: credentials given but wrong; None: none given."""
        header = request.headers.get("Authorization")
        if header:
            scheme, _, value = header.strip().partition(" ")
            scheme = scheme.lower()
            value = value.strip()
            if scheme == "bearer":
                return self.check_token(value)
            if scheme == "basic":
                try:
                    decoded = base64.b64decode(value, validate=True).decode("utf-8")
                except (binascii.Error, UnicodeDecodeError):
                    return False
                user, sep, password = decoded.partition(":")
                return bool(sep) and self.check_user(user, password)
            return False
        cookie = request.cookies.get(self.cookie_for(request))
        if cookie:
            return True if self.session_valid(cookie) else None
        return None

    def throttled(self, request: web.Request) -> bool:
        key = request.remote or "?"
        now = time.monotonic()
        recent = [t for t in self.failures.get(key, []) if now - t < FAILURE_WINDOW_S]
        if recent:
            self.failures[key] = recent
        else:
            self.failures.pop(key, None)
            self.gates.pop(key, None)
        return len(recent) >= MAX_FAILURES

    async def admit(self, request: web.Request) -> bool:
        """Before credentials are checked: False to refuse the request unchecked (429).

        An address over the failure limit has its checks spaced out, one at a time, rather
        than refused: the right credentials get in after a short wait, guesses crawl."""
        if not self.throttled(request):
            return True
        gate = self.gates.setdefault(request.remote or "?", _Gate())
        if gate.waiting >= THROTTLED_WAITING:
            return False
        gate.waiting += 1
        try:
            async with gate.lock:
                loop = asyncio.get_running_loop()
                if (delay := gate.next_check - loop.time()) > 0:
                    await asyncio.sleep(delay)
                gate.next_check = loop.time() + THROTTLED_SPACING_S
        finally:
            gate.waiting -= 1
        return True

    def record_failure(self, request: web.Request) -> None:
        self.failures.setdefault(request.remote or "?", []).append(time.monotonic())
        if len(self.failures) > 10_000:  # bound memory under a scan from many addresses
            self.failures.clear()
            self.gates.clear()

    def unauthorized(self, request: web.Request, message: str) -> web.StreamResponse:
        headers = {}
        if self.user_pass is not None:
            headers["WWW-Authenticate"] = 'Basic realm="Loom", charset="UTF-8"'
        elif self.token is not None:
            headers["WWW-Authenticate"] = 'Bearer realm="Loom"'
        is_navigation = (request.method == "GET"
                         and request.headers.get("Sec-Fetch-Mode", "").lower() == "navigate")
        if is_navigation and self.user_pass is None:
            target = quote(request.path_qs, safe="/")
            raise web.HTTPFound(f"{LOGIN_PATH}?next={target}")
        return _error(401, message, headers=headers, reason="unauthorized")


def session_cookie_name(settings: Any) -> str:
    """Cookies ignore ports, so two Loom servers on one host would clobber each other's."""
    return f"{SESSION_COOKIE}_{getattr(settings, 'port', 0)}"


# -- middlewares -------------------------------------------------------------------------------

def build_middlewares(settings: Any) -> list:
    """The aiohttp middlewares enforcing the rules above, outermost first.

    Also adds ``POST /login``, ``GET /login`` and ``POST /logout`` handling (inside the auth
    middleware, so create_app needs no extra routes).
    """
    policy = _Policy(settings)
    return [_headers_middleware(policy), _host_middleware(policy),
            _cross_site_middleware(policy), _auth_middleware(policy)]


def _headers_middleware(policy: _Policy) -> Middleware:
    @web.middleware
    async def headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            _add_headers(request, exc, policy)
            raise
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            response = _error(400, f"Malformed request body: {exc}", reason="invalid_json")
        except RecursionError:
            response = _error(400, "The JSON in the request body is nested too deeply",
                              reason="invalid_json")
        _add_headers(request, response, policy)
        return response

    return headers_middleware


def _host_middleware(policy: _Policy) -> Middleware:
    @web.middleware
    async def host_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Refuse a declared-too-big body before anything reads it (create_app's client_max_size
        # still bounds chunked bodies that request.read()/post() consume).
        length = request.content_length
        if policy.max_body is not None and length is not None and length > policy.max_body:
            return _error(413, f"Request body of {length} bytes is over the limit of "
                          f"{policy.settings.max_upload_mb} MB (--max-upload-mb).",
                          reason="too_large")
        if not policy.host_allowed(request):
            return _error(421, f"Host header {request.headers.get('Host')!r} is not allowed: "
                          "open Loom as http://127.0.0.1:PORT or http://localhost:PORT (this check "
                          "stops DNS-rebinding attacks); behind a reverse proxy, pass "
                          "--allowed-origin https://your.host", reason="bad_host")
        return await handler(request)

    return host_middleware


def _cross_site_middleware(policy: _Policy) -> Middleware:
    @web.middleware
    async def cross_site_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if (request.method == "OPTIONS" and policy.explicitly_allowed(origin)
                and "Access-Control-Request-Method" in request.headers):
            # A CORS preflight from a configured origin: answered before auth (it never carries
            # credentials); the real request that follows is checked as usual.
            requested = request.headers.get("Access-Control-Request-Headers", "")
            allowed = ", ".join(h.strip() for h in requested.split(",")
                                if re.fullmatch(r"[A-Za-z0-9-]+", h.strip()))
            headers = {"Access-Control-Allow-Methods": "GET, POST, PUT, PATCH, DELETE",
                       "Access-Control-Max-Age": "600"}
            if allowed:
                headers["Access-Control-Allow-Headers"] = allowed
            return web.Response(status=204, headers=headers)
        reason = policy.cross_site_reason(request)
        if reason is not None:
            return _error(403, reason, reason="cross_site")
        return await handler(request)

    return cross_site_middleware


def _auth_middleware(policy: _Policy) -> Middleware:
    @web.middleware
    async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = _route_path(request)
        if path == LOGIN_PATH:
            if request.method == "POST":
                return await _login(policy, request)
            if request.method in ("GET", "HEAD"):
                return _login_page(policy)
        if path == LOGOUT_PATH and request.method == "POST":
            name = policy.cookie_for(request)
            policy.end_session(request.cookies.get(name))
            response = web.json_response({"ok": True})
            response.del_cookie(name, path="/", secure=request.secure)
            return response
        if not policy.auth_on:
            return await handler(request)
        if "Authorization" in request.headers and not await policy.admit(request):
            return _error(429, "Too many failed logins; wait a minute.", reason="throttled",
                          headers={"Retry-After": str(int(FAILURE_WINDOW_S))})
        ok = policy.credentials(request)
        if ok:
            return await handler(request)
        if ok is False:
            policy.record_failure(request)
            return policy.unauthorized(request, "Invalid credentials.")
        return policy.unauthorized(
            request, "Authentication required: send 'Authorization: Bearer TOKEN' (or HTTP "
            f"Basic user:password), or log in at {LOGIN_PATH}.")

    return auth_middleware


async def _login(policy: _Policy, request: web.Request) -> web.StreamResponse:
    if not policy.auth_on:
        return web.json_response({"ok": True, "auth": False})
    if not await policy.admit(request):
        return _error(429, "Too many failed logins; wait a minute.", reason="throttled",
                      headers={"Retry-After": str(int(FAILURE_WINDOW_S))})
    try:
        data = await _login_body(request, getattr(policy.settings, "request_timeout_s", 30.0))
    except ApiError as e:
        # Unreadable bodies count as failed attempts: otherwise they are free to send.
        policy.record_failure(request)
        return _error(e.status, e.message, reason=e.type)
    token, user, password = data.get("token"), data.get("username"), data.get("password")
    ok = False
    if isinstance(token, str) and token:
        ok = policy.check_token(token)
    elif isinstance(user, str) and isinstance(password, str):
        ok = policy.check_user(user, password)
    else:
        return _error(400, "Give 'token', or 'username' and 'password'.", reason="invalid_request")
    if not ok:
        policy.record_failure(request)
        return _error(401, "Wrong credentials.", reason="unauthorized")
    nxt = safe_next(data.get("next"))
    if request.content_type == "application/json":
        response: web.StreamResponse = web.json_response({"ok": True, "next": nxt})
    else:
        response = web.Response(status=303, headers={"Location": nxt})
    response.set_cookie(policy.cookie_for(request), policy.new_session(), httponly=True, samesite="Strict",
                        secure=request.secure, path="/", max_age=SESSION_SECONDS)
    return response


async def _login_body(request: web.Request, timeout: float) -> dict:
    """A login body (JSON or an urlencoded form) of at most ``LOGIN_MAX_BODY`` bytes: this route
    is open to anyone, so nothing bigger is read, and nothing is parsed on the event loop for
    long."""
    raw = await read_body(request, LOGIN_MAX_BODY, timeout)
    if request.content_type == "application/json":
        data = loads(raw)
    elif request.content_type in ("application/x-www-form-urlencoded", ""):
        try:
            data = dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True,
                                  max_num_fields=16, errors="strict"))
        except (UnicodeDecodeError, ValueError):
            data = None
    else:
        raise ApiError(415, "unsupported_media_type",
                       "Send the login as JSON or as an urlencoded form.")
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_request", "Login body must be an object with 'token' or "
                       "'username' and 'password'.")
    return data


_LOGIN_SCRIPT = """const n=new URLSearchParams(location.search).get("next");
if(n&&n.startsWith("/")&&!n.startsWith("//"))document.getElementById("next").value=n;"""
_LOGIN_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_LOGIN_SCRIPT.encode()).digest()).decode()

_LOGIN_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>Loom — log in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font-family:system-ui,sans-serif;background:#1e1e1e;color:#ddd;display:flex;
justify-content:center;margin-top:15vh}form{display:flex;flex-direction:column;gap:.6em;width:20em}
input,button{font-size:1em;padding:.5em}</style></head>
<body><form method="post" action="/login"><h2>Loom</h2>
__FIELDS__
<input type="hidden" name="next" id="next" value="/">
<button type="submit">Log in</button></form>
<script>__SCRIPT__</script>
</body></html>"""


def _login_page(policy: _Policy) -> web.Response:
    if policy.user_pass is not None and policy.token is None:
        fields = ('<input name="username" placeholder="user" autocomplete="username">'
                  '<input name="password" type="password" placeholder="password" '
                  'autocomplete="current-password">')
    elif policy.user_pass is None:
        fields = '<input name="token" type="password" placeholder="access token" autofocus>'
    else:
        fields = ('<input name="username" placeholder="user" autocomplete="username">'
                  '<input name="password" type="password" placeholder="password">'
                  '<div>or</div><input name="token" type="password" placeholder="access token">')
    page = _LOGIN_HTML.replace("__FIELDS__", fields).replace("__SCRIPT__", _LOGIN_SCRIPT)
    response = web.Response(text=page, content_type="text/html")
    # The inline script only copies ?next= into the form; allow exactly that.
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{_LOGIN_SCRIPT_HASH}'; "
        "form-action 'self'; frame-ancestors 'none'")
    response.headers["Cache-Control"] = "no-store"
    return response

"""Origin rules: which addresses are loopback, what the server listens on, and how ``Host`` and
``Origin`` values are read (for the DNS-rebinding and cross-site guards)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web


def listen_addresses(listen: str | Iterable[str] | None) -> list[str]:
    """``settings.listen`` as a list: one address or several, comma-separated; empty entries are
    dropped and nothing at all means 127.0.0.1 (as main.py binds). ``None`` (aiohttp's "every
    interface") is kept as ``""``, which counts as the network."""
    if listen is None:
        return [""]
    items = listen.split(",") if isinstance(listen, str) else [str(a) for a in listen]
    return [a.strip() for a in items if a.strip()] or ["127.0.0.1"]


def is_loopback_host(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1 (with or without brackets)."""
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def listens_on_loopback_only(settings: Any) -> bool:
    """An empty address, ``0.0.0.0``, ``::`` or any real interface counts as the network."""
    return all(is_loopback_host(a) for a in listen_addresses(getattr(settings, "listen", None)))


def _route_path(request: web.Request) -> str:
    """The request path with ComfyUI's optional ``/api`` prefix removed."""
    path = request.path
    if path == "/api" or path.startswith("/api/"):
        path = path[4:] or "/"
    return path


def _is_websocket_upgrade(request: web.Request) -> bool:
    return (request.headers.get("Upgrade", "").lower() == "websocket"
            or _route_path(request) == "/ws")


def _split_host_port(value: str, default_port: int | None) -> tuple[str, int | None] | None:
    """``host[:port]`` (IPv6 in brackets) -> (lowercase host, port); None when malformed."""
    value = value.strip().lower()
    if not value or any(c in value for c in "@/\\?#") or any(ord(c) <= 32 for c in value):
        return None
    try:
        parts = urlsplit("//" + value)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return None
    if not host:
        return None
    return host.rstrip("."), port if port is not None else default_port


def _origin_host_port(origin: str) -> tuple[str, str, int | None] | None:
    try:
        parts = urlsplit(origin.strip().lower())
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not host or "@" in parts.netloc \
            or parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return parts.scheme, host.rstrip("."), port


def _own_host_names() -> set[str]:
    names = {"localhost"}
    try:
        hostname = socket.gethostname().lower()
        names.update({hostname, hostname.split(".")[0], hostname.split(".")[0] + ".local"})
        names.add(socket.getfqdn().lower())
    except OSError:
        pass
    return {n for n in names if n}

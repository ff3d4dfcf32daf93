"""Start the REAL Loom server in tests and talk to it over HTTP and websocket.

Reusable by every test file (``tests/conftest.py`` imports the fixtures from here):

``loom_server``
    A running server (``create_app`` + aiohttp ``AppRunner`` on ``127.0.0.1``, a free port, its
    own event loop in a background thread) with a fresh temporary base dir, built-in packs not
    loaded, and the test pack ``tests/fixture_nodes/`` as ``custom_nodes``. Stopped after the
    test. It is a :class:`LoomTestServer`: ``.url``, ``.settings``, ``.app``, ``.state`` and a
    synchronous HTTP/websocket client (the :class:`LoomClient` methods are available on it)::

        def test_something(loom_server):
            ws = loom_server.ws()                          # websocket, own clientId
            r = loom_server.post("/prompt", json={"prompt": PROMPT, "client_id": ws.client_id})
            assert r.status == 200, r.json()
            events = ws.prompt_events(r.json()["prompt_id"])   # until "executing" node=None
            entry = loom_server.wait_history(r.json()["prompt_id"])
            assert loom_server.runs() == [...]             # which recorded test nodes ran

``loom_server_shared``
    The same, but one server per test module (faster for many small read-only tests).

``loom_server_factory``
    ``loom_server_factory(**settings_overrides)`` starts a server with other settings, e.g.
    ``auth_token="x"*20``, ``builtin=True`` (load the real ``nodes/`` packs),
    ``custom_nodes_dir=path``, ``workers=2``; ``base_dir=path`` reuses a base dir (restart), and
    ``port=`` the port of a stopped server (so a browser page reconnects to it).
    Every server it made is stopped after the test.

The server's own client methods send no credentials. For a server started with auth, make
another client: ``LoomClient(server.url, headers={"Authorization": "Bearer " + token})``
(close it at the end of the test).

Helpers for subprocess servers (``main.py``): :func:`free_port`, :func:`start_main`,
:class:`LoomClient` (a client for any URL).

The nodes of the test pack (IntConst, StrConst, Add, Inc, Choose, Sleep, Fail, Sink, StrSink,
SaveText, BadUi) are documented in ``tests/fixture_nodes/loom_test_nodes.py``; the recorded ones
append to ``<temp>/fixture_runs.log``, which :meth:`LoomTestServer.runs` reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json as jsonlib
import os
import queue as queuelib
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from loom.config import REPO_ROOT, Settings
from loom.paths import Folders

FIXTURE_NODES = Path(__file__).resolve().parent / "fixture_nodes"
RUNS_LOG = "fixture_runs.log"

__all__ = ["FIXTURE_NODES", "LoomClient", "LoomTestServer", "Response", "WsClient", "free_port",
           "loom_server", "loom_server_factory", "loom_server_shared", "make_settings", "start_main",
           "wait_until_serving"]


# -- a synchronous client ----------------------------------------------------------------------

@dataclass
class Response:
    status: int
    headers: Any  # multidict, case-insensitive
    body: bytes

    def json(self) -> Any:
        return jsonlib.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class _LoopThread:
    """An event loop in a daemon thread; ``run(coro)`` waits for a coroutine's result."""

    def __init__(self, name: str):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro, timeout: float | None = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        if not self.loop.is_running():
            self.loop.close()


class WsClient:
    """A websocket connection; received messages are kept in order (binary ones as bytes)."""

    def __init__(self, client: LoomClient, client_id: str | None, headers: dict | None = None):
        self.client = client
        self.messages: queuelib.Queue = queuelib.Queue()
        self.received: list[Any] = []  # every message taken off the queue so far
        self._ws = client._loop.run(self._connect(client_id, headers or {}))
        self._reader = asyncio.run_coroutine_threadsafe(self._read(), client._loop.loop)
        first = self.next(10)
        assert first["type"] == "status", first
        self.client_id = first["data"]["sid"]

    async def _connect(self, client_id, headers):
        session = await self.client._session()
        url = "/ws" + (f"?clientId={client_id}" if client_id else "")
        return await session.ws_connect(self.client.url + url, headers=headers, autoping=True)

    async def _read(self):
        async for msg in self._ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.messages.put(jsonlib.loads(msg.data))
            elif msg.type == aiohttp.WSMsgType.BINARY:
                self.messages.put(msg.data)
        self.messages.put(None)  # closed

    def next(self, timeout: float = 10) -> Any:
        try:
            msg = self.messages.get(timeout=timeout)
        except queuelib.Empty:
            raise TimeoutError(f"no websocket message within {timeout} s; got so far: "
                               f"{[m.get('type') if isinstance(m, dict) else m for m in self.received]}"
                               ) from None
        if msg is None:
            raise ConnectionError("websocket closed")
        self.received.append(msg)
        return msg

    def wait_for(self, type: str, timeout: float = 10, **data_match: Any) -> dict:
        """The next message of ``type`` whose data has the given items (others are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.next(max(0.01, deadline - time.monotonic()))
            if isinstance(msg, dict) and msg.get("type") == type and all(
                    msg["data"].get(k) == v for k, v in data_match.items()):
                return msg

    def prompt_events(self, prompt_id: str, timeout: float = 30) -> list[dict]:
        """The messages about ``prompt_id`` up to and including ``executing`` with node None."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            msg = self.next(max(0.01, deadline - time.monotonic()))
            if not isinstance(msg, dict) or msg["data"].get("prompt_id") != prompt_id:
                continue
            out.append(msg)
            if msg["type"] == "executing" and msg["data"].get("node") is None:
                return out

    def drain(self, wait: float = 0.1) -> list[Any]:
        """Messages that arrive within ``wait`` seconds."""
        out = []
        while True:
            try:
                out.append(self.next(wait))
            except TimeoutError:
                return out

    def send_json(self, data: Any) -> None:
        self.client._loop.run(self._ws.send_json(data))

    def close(self) -> None:
        try:
            self.client._loop.run(self._ws.close(), timeout=5)
        except Exception:
            pass


class LoomClient:
    """A synchronous HTTP + websocket client for a Loom server at ``url``."""

    def __init__(self, url: str, headers: dict | None = None):
        self.url = url.rstrip("/")
        self.headers = dict(headers or {})
        self._loop = _LoopThread("loom-test-client")
        self._http: aiohttp.ClientSession | None = None
        self._sockets: list[WsClient] = []

    async def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(headers=self.headers)
        return self._http

    async def _request(self, method, path, kwargs, timeout):
        session = await self._session()
        async with session.request(method, self.url + path, allow_redirects=False,
                                   timeout=aiohttp.ClientTimeout(total=timeout), **kwargs) as r:
            return Response(r.status, r.headers, await r.read())

    def request(self, method: str, path: str, *, timeout: float = 30, **kwargs) -> Response:
        """``kwargs`` as aiohttp's: ``json=``, ``data=`` (bytes, str or aiohttp.FormData),
        ``params=``, ``headers=``."""
        return self._loop.run(self._request(method, path, kwargs, timeout), timeout + 5)

    def get(self, path: str, **kwargs) -> Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs) -> Response:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs) -> Response:
        return self.request("DELETE", path, **kwargs)

    def ws(self, client_id: str | None = None, headers: dict | None = None) -> WsClient:
        sock = WsClient(self, client_id, headers)
        self._sockets.append(sock)
        return sock

    # -- prompt helpers -----------------------------------------------------------------------

    def queue_prompt(self, prompt: dict, client_id: str | None = None, **extra) -> str:
        r = self.post("/prompt", json={"prompt": prompt, "client_id": client_id, **extra})
        assert r.status == 200, r.text
        return r.json()["prompt_id"]

    def wait_history(self, prompt_id: str, timeout: float = 30) -> dict:
        """Poll ``/history/{id}`` until the entry exists; returns the entry."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.get(f"/history/{prompt_id}")
            assert r.status == 200, r.text
            entry = r.json().get(prompt_id)
            if entry is not None:
                return entry
            if time.monotonic() > deadline:
                raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout} s; "
                                   f"queue: {self.get('/queue').json()}")
            time.sleep(0.02)

    def run_prompt(self, prompt: dict, timeout: float = 30, **extra) -> dict:
        return self.wait_history(self.queue_prompt(prompt, **extra), timeout)

    def run_workflow(self, workflow: dict, timeout: float = 240) -> dict:
        """Queue an editor-format workflow (POST /workflow/queue); its history entry, which must
        be a success."""
        r = self.post("/workflow/queue", json={"workflow": workflow})
        assert r.status == 200, r.text
        entry = self.wait_history(r.json()["prompt_id"], timeout=timeout)
        assert entry["status"]["status_str"] == "success", entry["status"]
        return entry

    def saved_image(self, entry: dict, node_id: str):
        """The one image node ``node_id`` saved in history ``entry``, as RGB uint8 (via /view)."""
        import io

        import numpy as np
        from PIL import Image

        [image] = entry["outputs"][node_id]["images"]
        view = self.get("/view", params=image)
        assert view.status == 200
        with Image.open(io.BytesIO(view.body)) as png:
            return np.asarray(png.convert("RGB"))

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()
        if self._http is not None:
            try:
                self._loop.run(self._http.close(), timeout=5)
            except Exception:
                pass
        self._loop.stop()


# -- an in-process server ----------------------------------------------------------------------

def make_settings(base_dir: Path, *, builtin: bool = False, **overrides) -> Settings:
    """Settings for a test server under ``base_dir`` (fixture pack as custom nodes; built-in
    packs only with ``builtin=True``)."""
    base_dir = Path(base_dir)
    empty = base_dir / "_no_builtin_nodes"
    empty.mkdir(parents=True, exist_ok=True)
    values: dict[str, Any] = {
        "folders": Folders.under(base_dir),
        "custom_nodes_dir": FIXTURE_NODES,
        "builtin_nodes_dir": REPO_ROOT / "nodes" if builtin else empty,
        "web_dir": base_dir / "_no_web_dist",
    }
    values.update(overrides)
    return Settings(**values)


class LoomTestServer(LoomClient):
    def __init__(self, settings: Settings, registry=None, port: int = 0):
        from loom.server.app import create_app, make_runner

        self.settings = settings
        self._stopped = False
        self._server_loop = _LoopThread("loom-test-server")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        settings.port = sock.getsockname()[1]
        settings.listen = "127.0.0.1"

        async def start():
            self.app = create_app(settings, registry)
            self.runner = make_runner(self.app, handle_signals=False, shutdown_timeout=5)
            await self.runner.setup()
            await web.SockSite(self.runner, sock).start()

        try:
            self._server_loop.run(start())
        except BaseException:
            sock.close()
            self._server_loop.stop()
            raise
        super().__init__(f"http://127.0.0.1:{settings.port}")

    @property
    def state(self):
        from loom.server.state import STATE

        return self.app[STATE]

    def runs(self) -> list[tuple[str, str, str]]:
        """(prompt_id, node_id, class) of every recorded test node that ran, in order."""
        path = self.settings.folders.temp_dir / RUNS_LOG
        if not path.exists():
            return []
        return [tuple(line.split(" ", 2)) for line in path.read_text().splitlines() if line]

    def ran(self, prompt_id: str) -> list[str]:
        """Node ids of the recorded test nodes that ran for ``prompt_id``."""
        return [node for pid, node, _ in self.runs() if pid == prompt_id]

    def put_model(self, folder: str, name: str, data: bytes | Path) -> Path:
        """Write a model file (its bytes, or a copy of a file) into models folder ``folder``."""
        target = self.settings.folders.model_folder(folder) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data if isinstance(data, bytes) else Path(data).read_bytes())
        return target

    def stop(self) -> None:
        """Stop the server (as on Ctrl+C: a running prompt goes back to the queue)."""
        if self._stopped:
            return
        self._stopped = True
        super().close()
        try:
            self._server_loop.run(self.runner.cleanup(), timeout=30)
        finally:
            self._server_loop.stop()


@pytest.fixture
def loom_server_factory(tmp_path):
    servers: list[LoomTestServer] = []
    counter = iter(range(1000))

    def factory(*, base_dir: Path | None = None, registry=None, port: int = 0,
                **overrides) -> LoomTestServer:
        base = Path(base_dir) if base_dir is not None else tmp_path / f"loom{next(counter)}"
        server = LoomTestServer(make_settings(base, **overrides), registry, port=port)
        servers.append(server)
        return server

    yield factory
    for server in reversed(servers):
        server.stop()


@pytest.fixture
def loom_server(loom_server_factory) -> LoomTestServer:
    return loom_server_factory()


@pytest.fixture(scope="module")
def loom_server_shared(tmp_path_factory) -> LoomTestServer:
    """One server for a whole test module: for tests that only read, or that do not care what
    other tests of the module queued (starting a server costs ~0.1 s)."""
    server = LoomTestServer(make_settings(tmp_path_factory.mktemp("loom_shared")))
    yield server
    server.stop()


# -- a server in a subprocess (main.py) --------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    """Wait until a server started as ``proc`` answers ``GET url/object_info`` (scripts and
    benchmarks that run ``main.py`` themselves)."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the server exited")
        try:
            urllib.request.urlopen(url + "/object_info", timeout=2).read()
            return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError("the server did not start")


def start_main(base_dir: Path, port: int, *args: str, log_path: Path | None = None,
               timeout: float = 60) -> subprocess.Popen:
    """Run ``main.py`` (the fixture pack as custom nodes, no built-in packs) and wait until it
    answers. Its output goes to ``log_path`` (default ``base_dir/server.log``)."""
    empty = Path(base_dir) / "_no_builtin_nodes"
    empty.mkdir(parents=True, exist_ok=True)
    log_path = log_path or Path(base_dir) / "server.log"
    log = open(log_path, "ab")
    cmd = [sys.executable, str(REPO_ROOT / "main.py"), "--port", str(port), "--base-dir",
           str(base_dir), "--custom-nodes-dir", str(FIXTURE_NODES), "--builtin-nodes-dir",
           str(empty), *args]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"main.py exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise TimeoutError(f"main.py did not start within {timeout} s:\n{log_path.read_text()}")


def ws_handshake_status(url: str, headers: dict[str, str] | None = None, timeout: float = 10) -> int:
    """101 when the websocket upgrade at ``url`` is accepted (and its first message is the
    status), else the status of the refusal."""
    async def go():
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(url, headers=headers or {}) as ws:
                    msg = await ws.receive_json(timeout=timeout)
                    assert msg["type"] == "status"
                    return 101
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status
    return asyncio.run(go())


@contextlib.contextmanager
def main_process(base_dir: Path, port: int, *args: str, **kwargs):
    """:func:`start_main` as a context: ``(process, LoomClient)``; afterwards the client is
    closed and the process killed if it still runs."""
    proc = start_main(base_dir, port, *args, **kwargs)
    client = LoomClient(f"http://127.0.0.1:{port}")
    try:
        yield proc, client
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def kill_9(proc: subprocess.Popen) -> None:
    """SIGKILL, as a crash or the OOM killer would: no shutdown code runs."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


def add_chain(value: int = 1) -> dict:
    """A fixture-pack prompt: ``value + 10`` into a Sink (node "4")."""
    return {
        "1": {"class_type": "IntConst", "inputs": {"value": value}},
        "2": {"class_type": "IntConst", "inputs": {"value": 10}},
        "3": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
        "4": {"class_type": "Sink", "inputs": {"value": ["3", 0]}},
    }


def image_prompt(i: int, size: int) -> dict:
    """A model-free prompt whose outputs differ with ``i`` (cache and memory runs)."""
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": size, "height": size,
                                                     "batch_size": 1, "color": i * 7919 % 0xFFFFFF}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "ImageScale", "inputs": {"image": ["2", 0], "upscale_method":
                                                     "bilinear", "width": size * 3 // 2,
                                                     "height": size * 3 // 2, "crop": "disabled"}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }

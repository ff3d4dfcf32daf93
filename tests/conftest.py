"""Shared test set-up: offline, no sockets beyond loopback, torchvision fix in place; helpers
more than one test file needs (``png_bytes``, the ``folders`` fixture, the server harness)."""

import collections
import io
import os
import socket

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_OFFLINE", "1")

from loom.runtime import torchvision_fix  # noqa: E402

torchvision_fix.install()

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Several test workers already share the cores: one torch thread each, not one per core each.
    import torch  # noqa: E402

    torch.set_num_threads(1)

_real_connect = socket.socket.connect


def _loopback_only(self, address):
    """Fail any test that tries to reach beyond this machine (model hubs above all)."""
    if self.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]
        if not (host in ("localhost", "::1") or str(host).startswith("127.")):
            raise RuntimeError(f"test tried to open a network connection to {address!r}")
    return _real_connect(self, address)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _loopback_only)
    yield


def png_bytes(size=(4, 4), color=(255, 0, 0), mode="RGB", info=None) -> bytes:
    """A small PNG file (``from conftest import png_bytes``); ``info`` adds text chunks."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


@pytest.fixture
def folders(tmp_path):
    """Loom's folders (models, input, output, temp, user) created under ``tmp_path``."""
    from loom.paths import Folders

    f = Folders.under(tmp_path)
    f.create()
    return f
from tests.browser_fixture import *  # noqa: E402,F401,F403  (browser, page, editor_server)
from tests.server_fixture import *  # noqa: E402,F401,F403  (loom_server fixtures, see its docstring)


@pytest.fixture(scope="module")
def one_thread():
    """The tiny models run faster on one thread, and much faster when the machine is busy."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sd1(one_thread):
    """:func:`sd1_setup`'s SD 1.x set-up, once a module."""
    from sd_fixtures import sd1_setup

    return sd1_setup()


def pytest_collection_modifyitems(config, items):
    """Files with the most slow tests run first (each file keeps its order): parallel workers,
    which take one file at a time, then start the longest work early and finish together
    (the whole suite ~10% sooner on two workers)."""
    slow = collections.Counter(item.path for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.path])

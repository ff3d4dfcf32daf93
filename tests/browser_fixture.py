"""Drive a real browser (Debian's Chromium through Playwright) against a real Loom server.

``tests/conftest.py`` imports these fixtures. Playwright never downloads a browser here: it
starts the system Chromium (``/usr/bin/chromium``, or ``$LOOM_CHROMIUM``), which
``scripts/test.sh`` installs from Debian's packages when it is missing.

``browser``
    One headless Chromium per test module (closed at the module's end: see the fixture).
``page``
    A fresh browser context (own cookies, storage) and page per test, closed afterwards. Console
    errors and uncaught page exceptions are collected in ``page.loom_errors``, and responses
    with a status of 400 or more (``"404 http://…"``) in ``page.loom_bad_responses``, so a test
    can assert the page ran cleanly.
``editor_server``
    ``editor_server(**settings)`` starts a Loom server that serves the editor from ``web/``
    (built bundle in ``web/dist`` when present), with the built-in node packs loaded unless
    ``builtin=False``. It is a :class:`~tests.server_fixture.LoomTestServer`.

The sync Playwright API cannot run inside a running asyncio loop on the same thread; the test
servers run their loop in a background thread, so tests call Playwright from the main thread.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from loom.config import REPO_ROOT

__all__ = ["browser", "chromium_executable", "editor_server", "page"]

# Without the background-networking flags Chromium keeps trying to reach Google's hosts, which
# this machine's closed network refuses (and the test conftest forbids anyway).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
]


def chromium_executable() -> str | None:
    """The system Chromium, or None when it is not installed."""
    explicit = os.environ.get("LOOM_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


# Per module, not per session: while sync Playwright is open it keeps an event loop running on
# the main thread, and every later test that calls asyncio.run() would fail.
@pytest.fixture(scope="module")
def browser():
    exe = chromium_executable()
    if exe is None:
        message = ("Chromium is not installed: `apt-get install -y chromium` "
                   "(scripts/test.sh does this) or set $LOOM_CHROMIUM")
        if os.environ.get("CI"):
            pytest.fail(message)  # CI must run the browser tests, never skip them silently
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    errors: list[str] = []
    bad_responses: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    # "Failed to load resource" repeats a bad response without its URL: those are in the list below.
    pg.on("console", lambda msg: errors.append(f"console.{msg.type}: {msg.text}")
          if msg.type == "error" and not msg.text.startswith("Failed to load resource") else None)
    pg.on("response", lambda r: bad_responses.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    pg.loom_errors = errors  # type: ignore[attr-defined]
    pg.loom_bad_responses = bad_responses  # type: ignore[attr-defined]
    pg.set_default_timeout(15_000)
    try:
        yield pg
    finally:
        context.close()


@pytest.fixture
def editor_server(loom_server_factory):
    """A factory: a Loom server serving the real editor (``web/``), built-in packs loaded."""

    def factory(*, builtin: bool = True, **overrides):
        overrides.setdefault("web_dir", REPO_ROOT / "web" / "dist")
        return loom_server_factory(builtin=builtin, **overrides)

    return factory

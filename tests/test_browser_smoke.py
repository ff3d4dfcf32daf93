"""The browser harness itself: Debian's Chromium, driven by Playwright, loads a page from a real
Loom server and runs its script (so later editor tests fail for the editor's reasons only)."""

import pytest

pytestmark = pytest.mark.slow  # a browser: tens of seconds


def test_chromium_loads_loom_page_and_calls_the_api(editor_server, page):
    server = editor_server(builtin=False)
    page.goto(server.url + "/")
    assert page.title() != ""
    # The page can reach the API from its own origin (the same-origin rules let it through).
    info = page.evaluate("async () => (await fetch('/object_info')).json()")
    assert "IntConst" in info
    assert page.loom_errors == []

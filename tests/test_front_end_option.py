"""``--front-end``: Loom's editor by default; ComfyUI's official app from the installed
``comfyui-frontend-package`` with ``--front-end comfyui``, and a start-up error that says how to
install it when it is missing."""

from __future__ import annotations

import logging
import sys

import pytest

import main
from loom.config import Settings
from loom.server.app import create_app
from loom.server.front_end import COMFYUI_TESTED, FrontEndMissing, comfyui_static_dir
from tests.server_fixture import free_port


@pytest.fixture
def without_comfyui_package(monkeypatch):
    # A None entry in sys.modules is what Python's import system reads as "not installed".
    monkeypatch.setitem(sys.modules, "comfyui_frontend_package", None)


def test_default_front_end_is_loom(editor_server):
    server = editor_server(builtin=False)
    assert server.settings.front_end == "loom"
    page = server.get("/")
    assert page.status == 200 and b"ComfyUI" not in page.body
    assert server.state.web_root == server.settings.web_dir


def test_comfyui_front_end_is_served_from_the_installed_package(loom_server_factory):
    static = comfyui_static_dir()
    server = loom_server_factory(front_end="comfyui")
    page = server.get("/")
    assert page.status == 200 and page.body == (static / "index.html").read_bytes()
    assert page.headers["Content-Type"].startswith("text/html")
    # Its scripts, styles and fonts; the core extensions plugins import from.
    script = next((static / "assets").glob("index-*.js"))
    r = server.get(f"/assets/{script.name}")
    assert r.status == 200 and r.body == script.read_bytes()
    assert server.get("/materialdesignicons.min.css").status == 200
    core = next((static / "extensions" / "core").glob("*.js"))
    r = server.get(f"/extensions/core/{core.name}")
    assert r.status == 200 and r.body == core.read_bytes()
    for path in ("/extensions/core/..%2F..%2Findex.html", "/extensions/..%2Fassets/x.js",
                 "/assets/nope.js", "/..%2F__init__.py"):
        assert server.get(path).status == 404, path
    # Loom's API is the same behind it.
    assert "KSampler" not in server.get("/object_info").json()  # test pack only
    assert server.get("/api/users").json() == {"storage": "server", "migrated": True}


def test_missing_package_is_a_clear_error(without_comfyui_package, tmp_path):
    settings = Settings(front_end="comfyui")
    with pytest.raises(FrontEndMissing) as err:
        create_app(settings)
    message = str(err.value)
    assert "comfyui-frontend-package" in message and f"pip install {COMFYUI_TESTED}" in message
    assert "--front-end comfyui" in message


def test_main_refuses_to_start_and_says_how_to_install(without_comfyui_package, tmp_path,
                                                       caplog):
    with caplog.at_level(logging.ERROR):
        code = main.main(["--front-end", "comfyui", "--base-dir", str(tmp_path),
                          "--port", str(free_port()), "--disable-custom-nodes"])
    assert code == 1
    assert f"pip install {COMFYUI_TESTED}" in caplog.text


def test_help_documents_the_option(capsys):
    with pytest.raises(SystemExit):
        main.build_parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split()).replace("- ", "-")  # undo line wrapping
    assert "--front-end {loom,comfyui}" in text
    assert "comfyui-frontend-package" in text
    with pytest.raises(SystemExit):
        main.build_parser().parse_args(["--front-end", "other"])

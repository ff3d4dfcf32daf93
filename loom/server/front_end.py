"""Which browser app ``/`` serves: Loom's editor (the default) or ComfyUI's front end.

``--front-end comfyui`` serves the official ComfyUI app from the ``comfyui-frontend-package``
Python package (GPL-3.0, published by Comfy Org on PyPI) for people who prefer its interface.
Loom does not ship or depend on it: the user installs it, and the server says how when it is
missing. Either app talks to the same routes.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from loom.config import Settings

FRONT_ENDS = ("loom", "comfyui")
COMFYUI_PACKAGE = "comfyui_frontend_package"
# The version Loom is tested against (requirements-test.txt pins the same).
COMFYUI_TESTED = "comfyui-frontend-package==1.58.1"


class FrontEndMissing(RuntimeError):
    """The chosen front end is not installed; the message says how to install it."""


def comfyui_static_dir() -> Path:
    """The built ComfyUI app inside the installed package (its ``static/`` folder)."""
    how = (f"install it into Loom's Python environment: .venv/bin/pip install "
           f"{COMFYUI_TESTED} (or start without --front-end comfyui to use Loom's editor)")
    try:
        spec = importlib.util.find_spec(COMFYUI_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise FrontEndMissing("--front-end comfyui serves ComfyUI's front end from the Python "
                              f"package comfyui-frontend-package, which is not installed: {how}")
    static = Path(next(iter(spec.submodule_search_locations))) / "static"
    if not (static / "index.html").is_file():
        raise FrontEndMissing(f"the comfyui-frontend-package install has no {static}/index.html "
                              f"(a broken install?): {how}")
    return static


def web_root(settings: Settings) -> Path:
    """The folder of the app served at ``/``."""
    if settings.front_end == "comfyui":
        return comfyui_static_dir()
    if settings.front_end != "loom":
        raise FrontEndMissing(f"unknown front end {settings.front_end!r}; use one of "
                              f"{', '.join(FRONT_ENDS)}")
    return settings.web_dir

"""``/system_stats`` and ``/models``: what this machine has and which model files it holds."""

from __future__ import annotations

import asyncio
import os
import platform
import sys

from aiohttp import web

import loom
from loom.paths import MODEL_FOLDERS
from loom.server.routes._common import not_found
from loom.server.security import redact_argv
from loom.server.state import get_state
from loom.server.ws import server_features

routes = web.RouteTableDef()


def _system_stats() -> dict:
    import psutil

    # torch is imported here, lazily: the server module must not need it, and the first
    # import takes seconds, so this runs in a thread.
    try:
        import torch

        from loom.runtime.devices import describe_devices

        torch_version, devices = torch.__version__, describe_devices()
    except Exception as e:  # a broken torch install must not break the stats page
        torch_version, devices = f"unavailable ({type(e).__name__}: {e})", []
    mem = psutil.virtual_memory()
    return {
        "system": {
            "os": os.name if os.name != "posix" else sys.platform,
            "python_version": sys.version,
            "loom_version": loom.__version__,
            "comfyui_version": None,
            "pytorch_version": torch_version,
            "ram_total": mem.total,
            "ram_free": mem.available,
            "argv": redact_argv(sys.argv),
            "embedded_python": False,
            "platform": platform.platform(),
        },
        "devices": devices,
    }


def _memory(state) -> dict:
    """Loom's own figures (beyond ComfyUI's shape): process RSS and what the caches hold."""
    import psutil

    caches = state.workers.cache_stats() if state.workers is not None else []
    return {"rss": psutil.Process().memory_info().rss,
            "cache_bytes": sum(c["bytes"] for c in caches),
            "cache_max_bytes": sum(c["max_bytes"] for c in caches),
            "cache_model_bytes": sum(c["model_bytes"] for c in caches),
            "cache_entries": sum(c["entries"] for c in caches)}


@routes.get("/system_stats")
async def system_stats(request: web.Request) -> web.Response:
    stats = await asyncio.to_thread(_system_stats)
    stats["loom"] = {"memory": _memory(get_state(request))}
    return web.json_response(stats)


@routes.get("/models")
async def model_folders(request: web.Request) -> web.Response:
    return web.json_response(list(MODEL_FOLDERS))


@routes.get("/models/{folder}")
async def model_files(request: web.Request) -> web.Response:
    folder = request.match_info["folder"]
    if folder not in MODEL_FOLDERS:
        raise not_found(f"Unknown model folder {folder!r}; known: {', '.join(MODEL_FOLDERS)}")
    folders = get_state(request).settings.folders
    return web.json_response(await asyncio.to_thread(folders.list_models, folder))


@routes.get("/features")
async def features(request: web.Request) -> web.Response:
    """What this server supports (ComfyUI's feature flags, for its front end)."""
    return web.json_response(server_features(get_state(request).settings))

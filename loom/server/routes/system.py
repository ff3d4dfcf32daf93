"""``/system_stats`` and ``/models``: what this machine has and which model files it holds.

Also the routes of ComfyUI's Model Library: ``/experiment/models`` (the folders, each with its
file endings), ``/experiment/models/{folder}`` (``[{"name", "pathIndex"}]``),
``/view_metadata/{folder}?filename=`` (a safetensors file's ``__metadata__``),
``/experiment/models/preview/{folder}/0/{name}.webp`` (a picture next to the model) and
``/internal/folder_paths``. Folders are named as ``models/<folder>``, never by their absolute
path: a browser has no use for where the disk keeps them.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import struct
import sys

from aiohttp import web

import loom
from loom.paths import MODEL_FOLDERS, UnsafePathError, safe_join
from loom.server.routes._common import bad_request, not_found
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


def _models(state) -> dict:
    """The model manager's view: VRAM mode and budget, the files loaded (in RAM), and what is
    on the device (whole or streamed). Nothing is imported for a server that loaded none."""
    if not state.models.created:
        return {"mode": state.settings.vram, "loaded": [], "on_device": []}
    return state.models.get().stats()


@routes.get("/system_stats")
async def system_stats(request: web.Request) -> web.Response:
    stats = await asyncio.to_thread(_system_stats)
    state = get_state(request)
    stats["loom"] = {"memory": _memory(state), "models": await asyncio.to_thread(_models, state)}
    return web.json_response(stats)


@routes.get("/models")
async def model_folders(request: web.Request) -> web.Response:
    return web.json_response(list(MODEL_FOLDERS))


def _model_folder(request: web.Request) -> str:
    folder = request.match_info["folder"]
    if folder not in MODEL_FOLDERS:
        raise not_found(f"Unknown model folder {folder!r}; known: {', '.join(MODEL_FOLDERS)}")
    return folder


@routes.get("/models/{folder}")
async def model_files(request: web.Request) -> web.Response:
    folder = _model_folder(request)
    folders = get_state(request).settings.folders
    return web.json_response(await asyncio.to_thread(folders.list_models, folder))


@routes.get("/experiment/models")
async def model_library_folders(request: web.Request) -> web.Response:
    return web.json_response([{"name": name, "folders": [f"models/{name}"],
                               "extensions": list(extensions)}
                              for name, extensions in MODEL_FOLDERS.items()])


@routes.get("/experiment/models/{folder}")
async def model_library_files(request: web.Request) -> web.Response:
    folder = _model_folder(request)
    folders = get_state(request).settings.folders
    names = await asyncio.to_thread(folders.list_models, folder)
    return web.json_response([{"name": name, "pathIndex": 0} for name in names])


# A model's picture sits next to it: name.png, name.preview.png, ... (the conventions of
# ComfyUI and of model managers).
PREVIEW_SUFFIXES = (".webp", ".png", ".jpg", ".jpeg", ".preview.webp", ".preview.png",
                    ".preview.jpg", ".preview.jpeg")
PREVIEW_TYPES = {".webp": "image/webp", ".png": "image/png", ".jpg": "image/jpeg",
                 ".jpeg": "image/jpeg"}


@routes.get("/experiment/models/preview/{folder}/{path_index}/{filename:.+}")
async def model_preview(request: web.Request) -> web.StreamResponse:
    """The Model Library's thumbnail of a model: asked for as ``<model name>.webp``."""
    folder = _model_folder(request)
    name = request.match_info["filename"].removesuffix(".webp")
    stem = name.rsplit(".", 1)[0] if "." in name.rsplit("/", 1)[-1] else name
    root = get_state(request).settings.folders.model_folder(folder)
    for suffix in PREVIEW_SUFFIXES:
        try:
            path = safe_join(root, stem + suffix)
        except UnsafePathError:
            break
        if path.is_file():
            return web.FileResponse(path, headers={
                "Content-Type": PREVIEW_TYPES[path.suffix.lower()], "Cache-Control": "no-cache"})
    raise not_found(f"No preview image for {name!r} in models/{folder}/")


@routes.get("/internal/folder_paths")
async def folder_paths(request: web.Request) -> web.Response:
    return web.json_response({name: [f"models/{name}"] for name in MODEL_FOLDERS})


# A safetensors header larger than this is not a model's (they are kilobytes to a few MB).
MAX_SAFETENSORS_HEADER = 64 * 2**20


def safetensors_metadata(path) -> dict | None:
    """The ``__metadata__`` of a safetensors file's header; None when it is not one."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            return None
        (size,) = struct.unpack("<Q", head)
        if size > MAX_SAFETENSORS_HEADER:
            return None
        raw = f.read(size)
    try:
        header = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(header, dict):
        return None
    metadata = header.get("__metadata__")
    return metadata if isinstance(metadata, dict) else {}


@routes.get("/view_metadata/{folder}")
async def view_metadata(request: web.Request) -> web.Response:
    folder = _model_folder(request)
    filename = request.query.get("filename")
    if not filename:
        raise bad_request("query parameter 'filename' is required")
    if not filename.lower().endswith((".safetensors", ".sft")):
        raise not_found("Only safetensors files carry metadata")
    try:
        path = get_state(request).settings.folders.resolve_model(folder, filename)
    except FileNotFoundError:
        raise not_found(f"No model {filename!r} in models/{folder}/") from None
    if not path.is_file():
        raise not_found(f"{filename!r} is not a file")
    metadata = await asyncio.to_thread(safetensors_metadata, path)
    if metadata is None:
        raise bad_request(f"{filename!r} is not a readable safetensors file", "invalid_file")
    return web.json_response(metadata)


@routes.get("/features")
async def features(request: web.Request) -> web.Response:
    """What this server supports (ComfyUI's feature flags, for its front end)."""
    return web.json_response(server_features(get_state(request).settings))

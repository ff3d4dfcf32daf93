"""Loads node packs from a folder: the built-in ``nodes/`` and the user's ``custom_nodes/``.

A pack is a module (``name.py``) or a package (``name/__init__.py``) that exports its nodes as
``NODES = [NodeClass, ...]`` (the node's name is ``class_type`` if the class sets it, else the
class name) and/or ``NODE_CLASS_MAPPINGS = {"Name": NodeClass}``. Classes declared in ComfyUI's
style (``INPUT_TYPES``/``RETURN_TYPES``/``FUNCTION``) are adapted (see comfy_style.py). A pack
that fails to import or declares a node wrongly is recorded with its traceback and skipped:
Loom starts anyway.

A pack may also define ``warm_up()``: the heavy imports its nodes need (diffusers, say). The
server runs every pack's warm-up once, in a thread, before it serves (:func:`run_warm_ups`), so
neither a request's validation nor two workers at once pay for (or race on) a first import.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import time
import traceback
from pathlib import Path

from loom.nodeapi.comfy_style import adapt, is_comfy_style
from loom.nodeapi.registry import NodeRegistry, PackInfo, check_declaration

log = logging.getLogger("loom.nodes")


def discover_packs(folder: Path) -> list[tuple[str, Path]]:
    """(name, path) of each pack in ``folder``, sorted so load order is stable."""
    if not folder.is_dir():
        return []
    packs = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith((".", "_")) or entry.name.endswith(".disabled"):
            continue
        if entry.is_dir() and (entry / "__init__.py").is_file():
            packs.append((entry.name, entry))
        elif entry.is_file() and entry.suffix == ".py":
            packs.append((entry.stem, entry))
    return packs


def import_pack(module_name: str, path: Path):
    """Import a pack from its path under ``module_name`` (packages keep relative imports)."""
    if path.is_dir():
        spec = importlib.util.spec_from_file_location(
            module_name, path / "__init__.py", submodule_search_locations=[str(path)])
    else:
        spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def exported_nodes(module) -> dict[str, type]:
    """The pack's nodes by name; ComfyUI-style classes are adapted to Loom nodes."""
    nodes: dict[str, type] = {}
    for cls in getattr(module, "NODES", None) or []:
        nodes[getattr(cls, "class_type", None) or cls.__name__] = cls
    nodes.update(getattr(module, "NODE_CLASS_MAPPINGS", None) or {})
    display = getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None) or {}
    for class_type, cls in list(nodes.items()):
        if is_comfy_style(cls):
            nodes[class_type] = cls = adapt(class_type, cls)
            if class_type in display:
                cls.display_name = str(display[class_type])
    return nodes


def load_packs(registry: NodeRegistry, folder: Path, *, builtin: bool) -> list[PackInfo]:
    """Load every pack in ``folder`` into ``registry``; failures are recorded, never raised."""
    prefix = "loom_nodes" if builtin else "custom_nodes"
    infos = []
    for name, path in discover_packs(folder):
        info = PackInfo(name=name, path=str(path), builtin=builtin)
        module_name = f"{prefix}.{name}"
        start = time.perf_counter()
        try:
            module = import_pack(module_name, path)
            nodes = exported_nodes(module)
            if not nodes and not builtin:
                raise ImportError(f"{path} exports no nodes (define NODES or NODE_CLASS_MAPPINGS)")
            # Check every declaration before registering any: a pack loads whole or not at all.
            for class_type, cls in nodes.items():
                check_declaration(class_type, cls)
            python_module = "nodes" if builtin else f"custom_nodes.{name}"
            for class_type, cls in nodes.items():
                registry.register(class_type, cls, python_module)
                info.nodes.append(class_type)
            warm_up = getattr(module, "warm_up", None)
            if callable(warm_up):
                registry.warm_ups.append((name, warm_up))
        except (Exception, SystemExit):  # plugins do call sys.exit() on a missing dependency
            info.error = traceback.format_exc()
            log.error("Node pack %s failed to load and was skipped:\n%s", path, info.error)
        info.seconds = time.perf_counter() - start
        registry.packs[f"{prefix}.{name}"] = info
        infos.append(info)
    if not builtin and infos:
        ok = sum(1 for i in infos if not i.error)
        log.info("Loaded %d of %d custom node packs from %s", ok, len(infos), folder)
    return infos


def run_warm_ups(registry: NodeRegistry) -> None:
    """Each pack's ``warm_up()``, once; a failure is logged (its nodes report it when used)."""
    for name, warm_up in registry.warm_ups:
        start = time.perf_counter()
        try:
            warm_up()
        except BaseException:  # noqa: BLE001 - a plugin's warm-up must not stop the server
            log.exception("Warm-up of node pack %s failed", name)
            continue
        log.info("Warmed up %s in %.1f s", name, time.perf_counter() - start)

"""Workflow templates: Loom's own (``workflow_templates/``) and the ones node packs ship.

Loom's template folder holds ``index.json`` (the list of categories and templates, in the shape
ComfyUI's front end reads: ``[{"moduleName", "title", "templates": [{"name", "title",
"description", "mediaType", "mediaSubtype", ...}]}]``), one UI workflow per template
(``NAME.json``) and ``input/``, the sample images the templates load: serving a template copies
the ones it uses into the input folder when missing (ComfyUI's front end uploads a template's
inputs the same way), so it runs as it is. A template's
thumbnail (``NAME-1.svg``) is drawn on request from its title and nodes unless a file of that
name exists.

A node pack may ship workflows in an ``example_workflows/`` (ComfyUI's convention) or
``workflow_templates/`` folder next to its code; they are listed per pack.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from html import escape
from pathlib import Path

from loom.nodeapi.registry import NodeRegistry
from loom.paths import UnsafePathError, safe_join

log = logging.getLogger("loom.templates")

# One path segment: a template name plus its suffix (no folders, nothing hidden).
FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\- ]{0,200}$")
THUMBNAIL_NAME = re.compile(r"^(?P<name>.+)-(?P<index>[0-9]{1,2})\.svg$")
# What a template folder may serve: workflows and images a browser shows without running them.
# SVG only from Loom's own folder (a pack's SVG could carry script).
FILE_TYPES = {".json": "application/json", ".png": "image/png", ".jpg": "image/jpeg",
              ".jpeg": "image/jpeg", ".webp": "image/webp"}
PACK_TEMPLATE_FOLDERS = ("example_workflows", "workflow_templates")
SAMPLE_INPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


class TemplateCatalog:
    """Loom's template folder, read on every request (it is small; edits show at once)."""

    def __init__(self, folder: Path):
        self.folder = folder

    def index(self) -> list[dict]:
        """The categories of ``index.json`` (``[]`` when the folder has none)."""
        path = self.folder / "index.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as e:
            log.error("Cannot read the template index %s: %s", path, e)
            return []
        return data if isinstance(data, list) else []

    def entry(self, name: str) -> dict | None:
        for category in self.index():
            for template in category.get("templates") or []:
                if isinstance(template, dict) and template.get("name") == name:
                    return template
        return None

    def file(self, filename: str) -> Path | None:
        """A file of the folder that may be served (a workflow or an image), or None."""
        if not FILE_NAME.match(filename) or Path(filename).suffix.lower() not in {*FILE_TYPES, ".svg"}:
            return None
        try:
            path = safe_join(self.folder, filename)
        except UnsafePathError:
            return None
        return path if path.is_file() else None

    def workflow(self, name: str) -> dict | None:
        path = self.file(f"{name}.json")
        if path is None:
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def thumbnail(self, filename: str) -> str | None:
        """The SVG card drawn for ``NAME-N.svg`` when NAME is a template, else None."""
        match = THUMBNAIL_NAME.match(filename)
        if match is None:
            return None
        name = match["name"]
        entry = self.entry(name)
        workflow = self.workflow(name)
        if entry is None and workflow is None:
            return None
        title = str((entry or {}).get("title") or name)
        return thumbnail_svg(title, node_titles(workflow or {}))

    def seed_inputs(self, workflow: dict, input_dir: Path) -> list[str]:
        """Copy the sample images ``workflow`` loads into ``input_dir`` where missing (what
        ComfyUI's front end does by uploading a template's inputs); returns the names copied."""
        samples = self.folder / "input"
        if not samples.is_dir():
            return []
        wanted = _widget_strings(workflow)
        copied = []
        for src in sorted(samples.iterdir()):
            if (src.name not in wanted or not src.is_file()
                    or src.suffix.lower() not in SAMPLE_INPUT_SUFFIXES):
                continue
            dest = input_dir / src.name
            if dest.exists() or dest.is_symlink():
                continue
            try:
                input_dir.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest)
                copied.append(src.name)
            except OSError as e:
                log.warning("Could not copy the sample input %s to %s: %s", src.name, input_dir, e)
        if copied:
            log.info("Copied the template's sample inputs to the input folder: %s",
                     ", ".join(copied))
        return copied


def _widget_strings(workflow: dict) -> set[str]:
    """Every string widget value of a workflow's nodes (image names among them)."""
    found = set()
    for node in workflow.get("nodes") or []:
        values = node.get("widgets_values") if isinstance(node, dict) else None
        if isinstance(values, dict):
            values = list(values.values())
        if isinstance(values, list):
            found.update(v for v in values if isinstance(v, str))
    return found


def pack_template_folders(registry: NodeRegistry) -> dict[str, Path]:
    """Pack name -> its folder of example workflows, for the custom packs that loaded."""
    out: dict[str, Path] = {}
    for info in registry.packs.values():
        if info.error or info.builtin:
            continue
        base = Path(info.path)
        if not base.is_dir():  # a single-module pack has no folder of its own
            continue
        for name in PACK_TEMPLATE_FOLDERS:
            folder = base / name
            if folder.is_dir() and not folder.is_symlink():
                out[info.name] = folder
                break
    return out


def pack_templates(registry: NodeRegistry) -> dict[str, list[str]]:
    """``GET /workflow_templates``: pack name -> names of its workflows (without ``.json``)."""
    out = {}
    for pack, folder in sorted(pack_template_folders(registry).items()):
        names = sorted(p.stem for p in folder.glob("*.json")
                       if p.is_file() and FILE_NAME.match(p.name))
        if names:
            out[pack] = names
    return out


def pack_file(registry: NodeRegistry, pack: str, filename: str) -> Path | None:
    folder = pack_template_folders(registry).get(pack)
    if folder is None or not FILE_NAME.match(filename):
        return None
    if Path(filename).suffix.lower() not in FILE_TYPES:
        return None
    try:
        path = safe_join(folder, filename)
    except UnsafePathError:
        return None
    return path if path.is_file() else None


def node_titles(workflow: dict) -> list[str]:
    """The titles of a workflow's nodes, in execution order."""
    nodes = [n for n in workflow.get("nodes") or [] if isinstance(n, dict)]
    nodes.sort(key=lambda n: n.get("order") if isinstance(n.get("order"), int) else 0)
    return [str(n.get("title") or n.get("type") or "?") for n in nodes]


def thumbnail_svg(title: str, nodes: list[str]) -> str:
    """A 512x512 card: the template's title over a column of its nodes (the top left stays free
    for the badges front ends draw over thumbnails)."""
    shown = nodes[:8]
    rows = []
    for i, label in enumerate(shown):
        y = 152 + i * 42
        rows.append(f'<rect x="96" y="{y}" width="320" height="32" rx="6" fill="#2b3340" '
                    f'stroke="#5b6b82"/><text x="256" y="{y + 21}" font-size="16" '
                    f'text-anchor="middle" fill="#d7dde8">{escape(label[:36])}</text>')
        if i:
            rows.append(f'<line x1="256" y1="{y - 12}" x2="256" y2="{y}" stroke="#8fb3ff" '
                        'stroke-width="2"/>')
    if len(nodes) > len(shown):
        rows.append(f'<text x="256" y="{152 + len(shown) * 42 + 14}" font-size="14" '
                    f'text-anchor="middle" fill="#8a94a6">+{len(nodes) - len(shown)} more</text>')
    return ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 512 512" width="512" '
            'height="512"><rect width="512" height="512" fill="#171b22"/>'
            '<text x="256" y="118" font-family="sans-serif" font-size="30" font-weight="bold" '
            f'text-anchor="middle" fill="#ffffff">{escape(title[:40])}</text>'
            '<g font-family="sans-serif">' + "".join(rows) + "</g></svg>")

"""Extract real ComfyUI workflows from its PyPI packages, for the converter's test fixtures.

Reads wheels already downloaded with ``pip download --no-deps`` (this script never touches the
network):

- ``comfyui-frontend-package`` (GPL-3.0): the default workflow its editor opens on first start,
  a JavaScript object literal in the bundle (``defaultGraph``), turned into JSON by Node.js;
- ``comfyui-workflow-templates-media-image`` and similar template wheels (MIT): template JSONs
  by name.

    pip download --no-deps comfyui-frontend-package==1.35.9 -d /tmp/wheels
    python scripts/extract_comfy_workflows.py /tmp/wheels/*.whl --templates image2image \
        inpaint_example --out tests/data/workflows
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import zipfile
from pathlib import Path

# Where a bundle defines the default graph: `defaultGraph = {` (readable builds) or
# `defaultGraph={` / `<minified name>={` assigned to comfyAPI.defaultGraph.defaultGraph.
_NAMED = re.compile(r"\bdefaultGraph\s*=\s*\{")
_EXPORT = re.compile(r"comfyAPI\.defaultGraph\.defaultGraph\s*=\s*([A-Za-z_$][\w$]*)")


def _object_at(src: str, start: int) -> str:
    """The balanced ``{...}`` JavaScript literal starting at ``start`` (strings skipped)."""
    depth, i, quote = 0, start, None
    while i < len(src):
        c = src[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "\"'`":
            quote = c
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return src[start : i + 1]
        i += 1
    raise ValueError("unbalanced object literal")


def default_graph(js: str) -> dict | None:
    literal = None
    m = _NAMED.search(js)
    if m:
        literal = _object_at(js, m.end() - 1)
    else:
        export = _EXPORT.search(js)
        if export:
            name = re.escape(export.group(1))
            m = re.search(rf"(?<![\w$.]){name}\s*=\s*\{{last_node_id", js)
            if m:
                literal = _object_at(js, js.index("{", m.start()))
    if literal is None:
        return None
    out = subprocess.run(["node", "-e", "process.stdout.write(JSON.stringify(eval('(' + "
                          "require('fs').readFileSync(0, 'utf8') + ')')))"],
                         input=literal, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("wheels", nargs="+", type=Path, help="front-end or templates wheels to read")
    ap.add_argument("--templates", nargs="*", default=[], help="template names to extract")
    ap.add_argument("--out", type=Path, required=True, help="folder the workflows are written to")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for wheel in args.wheels:
        name, version = wheel.name.split("-")[:2]
        with zipfile.ZipFile(wheel) as z:
            if name == "comfyui_frontend_package":
                for member in z.namelist():
                    if member.endswith(".js") and "/assets/" in member:
                        graph = default_graph(z.read(member).decode("utf-8", "replace"))
                        if graph is not None:
                            path = args.out / f"default.frontend-{version}.json"
                            path.write_text(json.dumps(graph, indent=1) + "\n")
                            print(f"{wheel.name}: {member} -> {path}")
                            break
                continue
            for member in z.namelist():
                stem = Path(member).stem
                if member.endswith(".json") and "/templates/" in member and stem in args.templates:
                    dist = name.removeprefix("comfyui_workflow_templates").strip("_") or "templates"
                    path = args.out / f"{stem}.{dist}-{version}.json"
                    path.write_text(json.dumps(json.loads(z.read(member)), indent=1) + "\n")
                    print(f"{wheel.name}: {member} -> {path}")


if __name__ == "__main__":
    main()

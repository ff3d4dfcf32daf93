"""Text nodes: string widgets, an optional input, a file list that follows the input folder, and
the ``fingerprint`` and ``validate_inputs`` hooks."""

from __future__ import annotations

import os

from loom.nodeapi import Combo, Node, Output, String
from loom.paths import safe_join


class JoinStrings(Node, category="example/text", display_name="Join Strings (example)"):
    """Joins two or three strings with a separator; empty parts are skipped."""

    class_type = "ExampleJoinStrings"
    inputs = {
        "first": String("", tooltip="The first part"),
        "second": String("", tooltip="The second part"),
        "separator": String(", ", tooltip="Put between the parts"),
        "third": String("", optional=True, multiline=True, tooltip="An optional third part"),
    }
    outputs = (Output("STRING", "text"),)

    # run() gets one keyword per input; give optional ones a default.
    def run(self, first: str, second: str, separator: str, third: str = ""):
        return (separator.join(p for p in (first, second, third) if p),)


def _text_files(ctx) -> list[str]:
    """Choices computed at each use (``/object_info``, validation), so new files show up."""
    paths = ctx.paths if ctx is not None else None  # no folders when a test calls it bare
    root = paths.input_dir if paths is not None else None
    if root is None or not os.path.isdir(root):
        return []
    return sorted(f for f in os.listdir(root) if f.endswith(".txt") and not f.startswith("."))


class LoadTextFile(Node, category="example/text", display_name="Load Text File (example)"):
    """Reads a .txt file from the input folder."""

    class_type = "ExampleLoadTextFile"
    inputs = {"file": Combo(_text_files, tooltip="A .txt file in Loom's input folder")}
    outputs = (Output("STRING", "text"),)

    @classmethod
    def fingerprint(cls, ctx, file=None, **_):
        # Loom caches a node's outputs until its inputs change. This node's result also depends
        # on the file's content, so say when that changed: size and modification time.
        try:
            st = safe_join(ctx.paths.input_dir, file).stat()
        except (OSError, ValueError, AttributeError):
            return None
        return (st.st_size, st.st_mtime_ns)

    @classmethod
    def validate_inputs(cls, ctx, file=None, **_):
        # Runs when a prompt is queued, before anything executes: return a message to refuse it.
        path = safe_join(ctx.paths.input_dir, file)  # never trust a client's path
        if path.stat().st_size > 10_000_000:
            return f"{file!r} is larger than 10 MB"
        return None

    def run(self, file: str):
        # ctx.paths has the folders of this Loom installation (input, output, temp, models).
        path = safe_join(self.ctx.paths.input_dir, file)
        return (path.read_text(encoding="utf-8"),)

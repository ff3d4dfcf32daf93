"""Trivial nodes for server tests (loaded as a custom node pack by tests/server_fixture.py).

Nodes marked "recorded" append ``<prompt_id> <node_id> <class>`` to ``<temp>/fixture_runs.log``
when they run, so a test (or a server in another process) can tell exactly which nodes ran.
``Inc`` is not recorded: it is the cheap link of the benchmark's 1,000-node chain.
"""

from __future__ import annotations

import time

from loom.nodeapi import Combo, Float, Int, Link, Node, NodeResult, Output, String

RUNS_LOG = "fixture_runs.log"


class _Recorded(Node):
    def record(self) -> None:
        settings = self.ctx.settings
        if settings is None:
            return
        with open(settings.folders.temp_dir / RUNS_LOG, "a", encoding="utf-8") as f:
            f.write(f"{self.ctx.prompt_id} {self.ctx.node_id} {type(self).__name__}\n")


class IntConst(_Recorded):
    """A constant integer (range -1000..1000, to test min/max validation)."""

    category = "testing"
    inputs = {"value": Int(0, min=-1000, max=1000)}
    outputs = (Output("INT"),)

    def run(self, value):
        self.record()
        return (value,)


class StrConst(_Recorded):
    category = "testing"
    inputs = {"value": String("")}
    outputs = (Output("STRING"),)

    def run(self, value):
        self.record()
        return (value,)


class Add(_Recorded):
    category = "testing"
    inputs = {"a": Link("INT"), "b": Link("INT")}
    outputs = (Output("INT"),)

    def run(self, a, b):
        self.record()
        return (a + b,)


class Inc(Node):
    """value + 1; with no input it starts from ``start``. Not recorded (benchmark node)."""

    category = "testing"
    inputs = {"value": Link("INT", optional=True), "start": Int(0)}
    outputs = (Output("INT"),)

    def run(self, start, value=None):
        return ((start if value is None else value) + 1,)


class Choose(_Recorded):
    category = "testing"
    inputs = {"mode": Combo(["a", "b"], default="a")}
    outputs = (Output("STRING"),)

    def run(self, mode):
        self.record()
        return (mode,)


class Sleep(_Recorded):
    """Passes ``value`` on after ``seconds``, reporting progress and checking for interrupt
    every 10 ms."""

    category = "testing"
    inputs = {"seconds": Float(0.1, min=0, max=3600), "value": Link("INT", optional=True)}
    outputs = (Output("INT"),)

    def run(self, seconds, value=0):
        self.record()
        steps = max(1, int(seconds / 0.01))
        for i in range(steps):
            time.sleep(0.01)
            self.ctx.progress(i + 1, steps)
        return (value,)


class Painter(Node):
    """Reports ``steps`` progress steps, each with a preview image (a solid colour), then
    outputs ``value``: what a sampler does with its step previews."""

    category = "testing"
    inputs = {"steps": Int(3, min=1, max=100), "value": Link("INT", optional=True)}
    outputs = (Output("INT"),)

    def run(self, steps, value=0):
        import torch

        for i in range(steps):
            preview = torch.zeros(64, 96, 3)
            preview[..., 0] = 1.0  # red
            self.ctx.progress(i + 1, steps, preview)
        return (value,)


class Fail(_Recorded):
    category = "testing"
    inputs = {"message": String("boom"), "value": Link("INT", optional=True)}
    outputs = (Output("INT"),)

    def run(self, message, value=0):
        self.record()
        raise RuntimeError(message)


class Sink(_Recorded):
    """Output node: shows the value it gets (``{"value": [v]}`` in the UI outputs)."""

    category = "testing"
    output_node = True
    inputs = {"value": Link("INT")}
    outputs = ()

    def run(self, value):
        self.record()
        return NodeResult(ui={"value": [value]})


class StrSink(_Recorded):
    category = "testing"
    output_node = True
    inputs = {"text": Link("STRING")}
    outputs = ()

    def run(self, text):
        self.record()
        return NodeResult(ui={"text": [text]})


class SaveText(_Recorded):
    """Output node writing ``text`` to output/<prefix>_<n>.txt (atomically), returning the file
    reference the way image savers do."""

    category = "testing"
    output_node = True
    inputs = {"text": String("hello"), "prefix": String("loom_test")}
    outputs = ()

    def run(self, text, prefix):
        from loom.store.files import atomic_write

        self.record()
        folder = self.ctx.settings.folders.output_dir
        n = len(list(folder.glob(f"{prefix}_*.txt")))
        name = f"{prefix}_{n:05d}.txt"
        atomic_write(folder / name, text.encode())
        return NodeResult(ui={"texts": [{"filename": name, "subfolder": "", "type": "output"}]})


class BadUi(Node):
    """Output node whose UI output is not JSON (a set): the server must survive it."""

    category = "testing"
    output_node = True
    inputs = {}
    outputs = ()

    def run(self):
        return NodeResult(ui={"values": {1, 2}})


NODES = [IntConst, StrConst, Add, Inc, Choose, Sleep, Painter, Fail, Sink, StrSink, SaveText, BadUi]

"""Plugin packs through the real loader: failures are reported and contained, the example pack
(the template for plugin authors) loads and works."""

from __future__ import annotations

import logging
import shutil
import textwrap
import threading
from pathlib import Path

import pytest
import torch

from loom.engine.executor import Executor
from loom.engine.validate import validate_prompt
from loom.graph.errors import PromptError
from loom.nodeapi import Interrupted, NodeRegistry, RunContext
from loom.nodeapi.loader import load_packs
from loom.paths import Folders

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "custom_nodes" / "example_pack"

GOOD_MODULE = """
from loom.nodeapi import Int, Node, Output

class AddOne(Node):
    inputs = {"x": Int(0)}
    outputs = (Output("INT"),)

    def run(self, x):
        return (x + 1,)

NODES = [AddOne]
"""


def write(folder: Path, name: str, source: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


@pytest.fixture
def custom_nodes(tmp_path) -> Path:
    folder = tmp_path / "custom_nodes"
    folder.mkdir()
    return folder


def load(folder: Path) -> tuple[NodeRegistry, dict]:
    registry = NodeRegistry()
    infos = load_packs(registry, folder, builtin=False)
    return registry, {i.name: i for i in infos}


# -- failures are contained and reported -----------------------------------------------------------


def test_pack_that_raises_on_import_is_reported_and_the_others_load(custom_nodes, caplog):
    write(custom_nodes, "a_good.py", GOOD_MODULE)
    write(custom_nodes, "b_broken/__init__.py", """
        import math
        def helper():
            raise RuntimeError("this pack needs a library that is missing")
        helper()
    """)
    shutil.copytree(EXAMPLE, custom_nodes / "example_pack")
    with caplog.at_level(logging.ERROR, logger="loom.nodes"):
        registry, infos = load(custom_nodes)

    broken = infos["b_broken"]
    assert broken.nodes == []
    assert broken.error.startswith("Traceback")
    assert "this pack needs a library that is missing" in broken.error
    assert "b_broken/__init__.py" in broken.error and "helper()" in broken.error
    assert any("b_broken" in r.getMessage() and "missing" in r.getMessage() for r in caplog.records)

    assert infos["a_good"].error is None and infos["a_good"].nodes == ["AddOne"]
    assert infos["example_pack"].error is None
    assert {"AddOne", "ExampleBrightnessContrast", "ExampleJoinStrings"} <= set(registry.classes)
    assert set(registry.packs) == {"custom_nodes.a_good", "custom_nodes.b_broken",
                                   "custom_nodes.example_pack"}


def test_pack_that_exits_on_import_does_not_stop_loom(custom_nodes):
    write(custom_nodes, "quitter.py", "import sys\nsys.exit('missing dependency, giving up')\n")
    write(custom_nodes, "z_good.py", GOOD_MODULE)
    registry, infos = load(custom_nodes)
    assert "SystemExit" in infos["quitter"].error
    assert "AddOne" in registry


@pytest.mark.parametrize("body,expected", [
    ("NODES = [object]", "is not a subclass"),
    ("""
     class NoRun(Node):
         outputs = (Output("INT"),)
     NODES = [NoRun]
     """, "does not implement run()"),
    ("""
     class BadInput(Node):
         inputs = {"x": ("INT", {"default": 0})}
         def run(self, x):
             return ()
     NODES = [BadInput]
     """, "is not an input declaration"),
    ("""
     class BadOutputs(Node):
         outputs = [Output("INT")]
         def run(self):
             return (1,)
     NODES = [BadOutputs]
     """, "outputs must be a tuple"),
    ("X = 1", "exports no nodes"),
    ("""
     class Misspelt(Node):
         inputs = {"strength": Int(1)}
         outputs = (Output("INT"),)
         def run(self, strenght):
             return (strenght,)
     NODES = [Misspelt]
     """, "Misspelt: run() has no parameter for the declared input(s) 'strength'"),
    ("""
     class Undeclared(Node):
         inputs = {"a": Int(1)}
         outputs = (Output("INT"),)
         def run(self, a, b):
             return (a + b,)
     NODES = [Undeclared]
     """, "Undeclared: run() requires 'b', which the node does not declare"),
])
def test_bad_declaration_is_reported_and_nothing_of_the_pack_registers(custom_nodes, body, expected):
    source = """from loom.nodeapi import Int, Node, Output

class FineNode(Node):
    outputs = (Output("INT"),)
    def run(self):
        return (1,)
""" + textwrap.dedent(body)
    if "NODES = [" in source:
        source = source.replace("NODES = [", "NODES = [FineNode, ")
    write(custom_nodes, "bad.py", source)
    registry, infos = load(custom_nodes)
    assert expected in infos["bad"].error
    assert "FineNode" not in registry  # a pack loads whole or not at all
    assert infos["bad"].nodes == []


def test_run_signatures_that_load(custom_nodes):
    """**kwargs takes any declared input; a parameter with a default need not be declared."""
    write(custom_nodes, "fine.py", """
        from loom.nodeapi import Int, Node, Output

        class Any_(Node):
            inputs = {"a": Int(1), "b": Int(2, optional=True)}
            outputs = (Output("INT"),)
            def run(self, **kwargs):
                return (sum(kwargs.values()),)

        class Defaults(Node):
            inputs = {"a": Int(1)}
            outputs = (Output("INT"),)
            def run(self, a, scale=2):
                return (a * scale,)

        NODES = [Any_, Defaults]
    """)
    registry, infos = load(custom_nodes)
    assert infos["fine"].error is None
    assert {"Any_", "Defaults"} <= set(registry.classes)


def test_node_class_mappings_style(custom_nodes):
    write(custom_nodes, "mapped.py", """
        from loom.nodeapi import Node, Output, String

        class Shout(Node):
            inputs = {"text": String("")}
            outputs = (Output("STRING"),)
            def run(self, text):
                return (text.upper(),)

        class ComfyStyle:
            @classmethod
            def INPUT_TYPES(cls):
                return {"required": {"n": ("INT", {"default": 2, "min": 0, "max": 10})}}
            RETURN_TYPES = ("INT",)
            FUNCTION = "double"
            CATEGORY = "test"
            def double(self, n):
                return (n * 2,)

        NODE_CLASS_MAPPINGS = {"MyShout": Shout, "MyDouble": ComfyStyle}
        NODE_DISPLAY_NAME_MAPPINGS = {"MyDouble": "Double it"}
    """)
    registry, infos = load(custom_nodes)
    assert infos["mapped"].error is None
    assert sorted(infos["mapped"].nodes) == ["MyDouble", "MyShout"]
    assert registry.get("MyShout")().run(text="hi") == ("HI",)
    info = registry.describe("MyDouble")
    assert info["display_name"] == "Double it"
    assert info["python_module"] == "custom_nodes.mapped"
    assert info["input"]["required"]["n"][1]["max"] == 10
    assert registry.get("MyDouble")().run(n=4) == (8,)


def test_disabled_hidden_and_non_packs_are_skipped(custom_nodes):
    write(custom_nodes, "off_pack.disabled/__init__.py", "raise RuntimeError('must not import')")
    write(custom_nodes, "off_module.py.disabled", "raise RuntimeError('must not import')")
    write(custom_nodes, "_private.py", "raise RuntimeError('must not import')")
    write(custom_nodes, ".hidden/__init__.py", "raise RuntimeError('must not import')")
    write(custom_nodes, "notes.txt", "not python")
    write(custom_nodes, "on.py", GOOD_MODULE)
    registry, infos = load(custom_nodes)
    assert list(infos) == ["on"]
    assert list(registry.classes) == ["AddOne"]


def test_missing_folder_loads_nothing(tmp_path):
    registry, infos = load(tmp_path / "does-not-exist")
    assert infos == {} and registry.classes == {}


# -- the example pack ----------------------------------------------------------------------------


@pytest.fixture
def example(custom_nodes):
    shutil.copytree(EXAMPLE, custom_nodes / "example_pack")
    registry, infos = load(custom_nodes)
    assert infos["example_pack"].error is None, infos["example_pack"].error
    return registry


def test_example_pack_is_documented():
    readme = (EXAMPLE / "README.md").read_text()
    for topic in ("NODES", "NODE_CLASS_MAPPINGS", ".disabled", "--disable-custom-nodes",
                  "fingerprint", "validate_inputs", "self.ctx.progress", "optional=True"):
        assert topic in readme, topic


def test_example_declarations_as_the_editor_sees_them(example):
    assert sorted(example.packs["custom_nodes.example_pack"].nodes) == [
        "ExampleBrightnessContrast", "ExampleJoinStrings", "ExampleLoadTextFile"]
    info = example.describe("ExampleBrightnessContrast")
    brightness = info["input"]["required"]["brightness"]
    assert brightness[0] == "FLOAT"
    assert (brightness[1]["min"], brightness[1]["max"], brightness[1]["default"]) == (-1.0, 1.0, 0.0)
    assert "tooltip" in brightness[1]
    assert info["input"]["optional"]["mask"][0] == "MASK"
    assert info["output"] == ["IMAGE"] and info["category"] == "example/image"
    assert info["python_module"] == "custom_nodes.example_pack"
    join = example.describe("ExampleJoinStrings")
    assert list(join["input"]["optional"]) == ["third"]
    assert join["output_name"] == ["text"]


def test_brightness_contrast_runs_with_progress_and_mask(example):
    node_cls = example.get("ExampleBrightnessContrast")
    seen = []
    ctx = RunContext(on_progress=lambda v, t, p=None: seen.append((v, t)))
    image = torch.full((3, 4, 4, 3), 0.25)
    (out,) = node_cls(ctx).run(image=image, brightness=0.5, contrast=1.0)
    assert torch.allclose(out, torch.full_like(out, 0.75))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    (flat,) = node_cls(ctx).run(image=image, brightness=0.0, contrast=0.0)
    assert torch.allclose(flat, torch.full_like(flat, 0.5))

    mask = torch.zeros(1, 2, 2)
    mask[0, :, 1] = 1.0  # right half only; a 2x2 mask is resized to the 4x4 image
    (masked,) = node_cls(ctx).run(image=image[:1], brightness=0.5, contrast=1.0, mask=mask)
    assert masked[0, :, 0].eq(0.25).all() and masked[0, :, 3].eq(0.75).all()


def test_brightness_contrast_stops_when_interrupted(example):
    ctx = RunContext(interrupt=threading.Event())
    ctx.interrupt.set()
    with pytest.raises(Interrupted):
        example.get("ExampleBrightnessContrast")(ctx).run(
            image=torch.zeros(2, 2, 2, 3), brightness=0.1, contrast=1.0)


def test_text_nodes_through_validation_and_the_executor(example, tmp_path):
    folders = Folders.under(tmp_path / "loom")
    folders.create()
    (folders.input_dir / "names.txt").write_text("Ada")
    ctx = RunContext(paths=folders)
    prompt = {
        "1": {"class_type": "ExampleLoadTextFile", "inputs": {"file": "names.txt"}},
        "2": {"class_type": "ExampleJoinStrings",
              "inputs": {"first": "Hello", "second": ["1", 0], "separator": " "}},
    }
    executor = Executor(paths=folders)
    result = executor.execute(validate_prompt(prompt, example, ctx, partial_outputs=["2"]), "p1")
    assert result.status == "success", result.error

    # Output values are not in the result; call the node the way the executor does.
    assert example.get("ExampleJoinStrings")(ctx).run(
        first="Hello", second="Ada", separator=" ", third="!") == ("Hello Ada !",)

    # fingerprint: the same file is cached, a rewritten file re-runs the node.
    again = executor.execute(validate_prompt(prompt, example, ctx, partial_outputs=["2"]), "p2")
    assert "1" in again.cached
    (folders.input_dir / "names.txt").write_text("Grace Hopper")
    third = executor.execute(validate_prompt(prompt, example, ctx, partial_outputs=["2"]), "p3")
    assert "1" in third.executed
    assert example.get("ExampleLoadTextFile")(ctx).run(file="names.txt") == ("Grace Hopper",)

    # The file list is checked from the declaration, reported in ComfyUI's error shape.
    bad = {"1": {"class_type": "ExampleLoadTextFile", "inputs": {"file": "missing.txt"}}}
    with pytest.raises(PromptError) as err:
        validate_prompt(bad, example, ctx, partial_outputs=["1"])
    [problem] = err.value.to_json()["node_errors"]["1"]["errors"]
    assert problem["type"] == "value_not_in_list" and "missing.txt" in problem["message"]


# -- in the real server ------------------------------------------------------------------------


def test_server_starts_with_a_broken_pack_and_can_skip_all_packs(custom_nodes, loom_server_factory):
    write(custom_nodes, "broken.py", "raise ImportError('no module named imaginary_dependency')\n")
    shutil.copytree(EXAMPLE, custom_nodes / "example_pack")

    server = loom_server_factory(custom_nodes_dir=custom_nodes)
    info = server.get("/object_info").json()
    assert "ExampleJoinStrings" in info
    assert info["ExampleJoinStrings"]["python_module"] == "custom_nodes.example_pack"
    packs = {p["module"]: p for p in server.get("/node_packs").json()}
    assert "imaginary_dependency" in packs["custom_nodes.broken"]["error"]
    broken = packs["custom_nodes.broken"]
    assert "Traceback" in broken["error"] and broken["nodes"] == []
    assert packs["custom_nodes.example_pack"]["error"] is None
    assert "ExampleJoinStrings" in packs["custom_nodes.example_pack"]["nodes"]
    ran = server.run_prompt({"1": {"class_type": "ExampleJoinStrings",
                                   "inputs": {"first": "a", "second": "b", "separator": "+"}}},
                            partial_execution_targets=["1"])
    assert ran["status"]["status_str"] == "success", ran["status"]

    off = loom_server_factory(custom_nodes_dir=custom_nodes, disable_custom_nodes=True)
    assert not any(name.startswith("Example") for name in off.get("/object_info").json())
    assert not any(key.startswith("custom_nodes.") for key in off.state.registry.packs)

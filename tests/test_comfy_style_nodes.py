"""ComfyUI-style node classes in a plugin pack load and run through the adapter."""

from loom.engine.executor import Executor
from loom.engine.validate import validate_prompt
from loom.graph.errors import PromptError
from loom.nodeapi import NodeRegistry
from loom.nodeapi.loader import load_packs

PACK = '''
import math

class Multiply:
    """Multiplies two numbers."""
    CATEGORY = "math"
    RETURN_TYPES = ("FLOAT",)
    RETURN_NAMES = ("product",)
    FUNCTION = "go"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0}),
                             "mode": (["mul", "add"],)},
                "optional": {"b": ("FLOAT", {"default": 2.0})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    def go(self, a, mode, b=2.0, unique_id=None):
        return (a * b if mode == "mul" else a + b,)

    @classmethod
    def VALIDATE_INPUTS(cls, a):
        return True if a != 3.0 else "three is not allowed"


class Show:
    """Shows a number (the docstring loses to DESCRIPTION)."""
    DESCRIPTION = "Shows x in the editor."
    OUTPUT_NODE = True
    RETURN_TYPES = ()
    FUNCTION = "show"
    CATEGORY = "utils"
    calls = 0

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"x": ("FLOAT",)}}

    def show(self, x):
        Show.calls += 1
        return {"ui": {"text": [str(x)]}}

    @classmethod
    def IS_CHANGED(cls, x=None):
        return float("nan")


NODE_CLASS_MAPPINGS = {"Multiply": Multiply, "Show": Show}
NODE_DISPLAY_NAME_MAPPINGS = {"Multiply": "Multiply (float)"}
'''


def load(tmp_path):
    (tmp_path / "comfy_pack.py").write_text(PACK)
    reg = NodeRegistry()
    [info] = load_packs(reg, tmp_path, builtin=False)
    assert info.error is None, info.error
    return reg


def test_declaration_is_translated(tmp_path):
    reg = load(tmp_path)
    info = reg.describe("Multiply")
    assert info["display_name"] == "Multiply (float)" and info["category"] == "math"
    assert info["input"]["required"]["a"][1]["max"] == 10.0
    assert info["input"]["required"]["mode"][0] == ["mul", "add"]
    assert info["input"]["optional"]["b"][0] == "FLOAT"
    assert info["input"]["hidden"] == {"unique_id": "UNIQUE_ID"}
    assert info["output"] == ["FLOAT"] and info["output_name"] == ["product"]
    assert info["python_module"] == "custom_nodes.comfy_pack"
    assert reg.describe("Show")["output_node"] is True
    assert info["description"] == "Multiplies two numbers."  # the docstring when no DESCRIPTION
    assert reg.describe("Show")["description"] == "Shows x in the editor."


def test_runs_with_ui_output_and_is_changed_nan(tmp_path):
    reg = load(tmp_path)
    prompt = {"1": {"class_type": "Multiply", "inputs": {"a": 2.0, "mode": "mul", "b": 4.0}},
              "2": {"class_type": "Show", "inputs": {"x": ["1", 0]}}}
    ex = Executor()
    result = ex.execute(validate_prompt(prompt, reg), "p")
    assert result.status == "success" and result.outputs == {"2": {"text": ["8.0"]}}
    again = ex.execute(validate_prompt(prompt, reg), "p2")
    assert again.executed == ["2"]  # IS_CHANGED -> NaN: Show re-runs; Multiply is cached
    assert again.outputs == {"2": {"text": ["8.0"]}}


def test_validate_inputs_hook(tmp_path):
    reg = load(tmp_path)
    prompt = {"1": {"class_type": "Multiply", "inputs": {"a": 3.0, "mode": "add"}},
              "2": {"class_type": "Show", "inputs": {"x": ["1", 0]}}}
    try:
        validate_prompt(prompt, reg)
    except PromptError as e:
        [err] = e.node_errors["1"]["errors"]
        assert err["type"] == "custom_validation_failed" and "three" in err["message"]
    else:
        raise AssertionError("VALIDATE_INPUTS was not applied")

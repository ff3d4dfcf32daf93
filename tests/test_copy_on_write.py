"""No node can change a cached upstream value in place: CONDITIONING outputs (and a MODEL's
options) are sealed; nodes derive new values from copies (ControlNet apply, area, combine)."""

from __future__ import annotations

import pytest
import torch

from loom.engine.executor import Executor
from loom.engine.validate import validate_prompt
from loom.frozen import FrozenDict, FrozenList, freeze
from loom.nodeapi import Float, Link, Node, NodeRegistry, Output, RunContext
from loom.nodeapi.node import ALWAYS_RUN
from loom.runtime.control import ControlModel
from loom.runtime.sd.types import DiffusionModel
from nodes.conditioning import ConditioningCombine, ConditioningSetArea
from nodes.controlnet import ControlNetApply, ControlNetApplyAdvanced


class MakeCond(Node):
    inputs = {"value": Float(1.0)}
    outputs = (Output("CONDITIONING"),)
    runs = 0

    def run(self, value):
        MakeCond.runs += 1
        return ([[torch.full((1, 2, 3), value), {"pooled_output": None, "tag": "upstream"}]],)


class Mutate(Node):
    """A badly written plugin: changes its input in place."""

    inputs = {"conditioning": Link("CONDITIONING"), "how": Float(0.0)}
    outputs = (Output("CONDITIONING"),)

    def run(self, conditioning, how):
        if how == 0:
            conditioning[0][1]["tag"] = "changed"
        elif how == 1:
            conditioning.append(conditioning[0])
        else:
            conditioning[0][1].update(tag="changed")
        return (conditioning,)


class Derive(Node):
    """A well written one: copies, then changes the copy."""

    inputs = {"conditioning": Link("CONDITIONING")}
    outputs = (Output("CONDITIONING"),)

    def run(self, conditioning):
        out = []
        for tensor, d in conditioning:
            d = d.copy()
            d["tag"] = "derived"
            out.append([tensor, d])
        return (out,)


class Keep(Node):
    output_node = True
    inputs = {"conditioning": Link("CONDITIONING")}
    outputs = ()
    seen: list = []

    @classmethod
    def fingerprint(cls, ctx, **_):
        return ALWAYS_RUN

    def run(self, conditioning):
        Keep.seen.append(conditioning)
        return ()


@pytest.fixture
def engine(tmp_path):
    registry = NodeRegistry()
    for cls in (MakeCond, Mutate, Derive, Keep):
        registry.register(cls.__name__, cls, "tests")
    executor = Executor()

    def run(prompt):
        validated = validate_prompt(prompt, registry, RunContext())
        return executor.execute(validated, f"p{len(Keep.seen)}-{id(prompt)}")

    return run


def test_a_node_changing_its_conditioning_input_fails_clearly_and_the_cache_is_intact(engine):
    Keep.seen.clear()
    base = {"1": {"class_type": "MakeCond", "inputs": {"value": 2.0}},
            "9": {"class_type": "Keep", "inputs": {"conditioning": ["1", 0]}}}
    assert engine(base).status == "success"
    runs = MakeCond.runs
    for how in (0.0, 1.0, 2.0):
        bad = dict(base, **{"2": {"class_type": "Mutate",
                                  "inputs": {"conditioning": ["1", 0], "how": how}},
                            "9": {"class_type": "Keep", "inputs": {"conditioning": ["2", 0]}}})
        result = engine(bad)
        assert result.status == "error"
        assert "copy it first" in str(result.error)
    good = dict(base, **{"2": {"class_type": "Derive", "inputs": {"conditioning": ["1", 0]}},
                         "9": {"class_type": "Keep", "inputs": {"conditioning": ["2", 0]}}})
    assert engine(good).status == "success"
    assert Keep.seen[-1][0][1]["tag"] == "derived"
    assert engine(base).status == "success"
    assert MakeCond.runs == runs  # the upstream node's output came from the cache ...
    assert Keep.seen[-1][0][1]["tag"] == "upstream"  # ... unchanged
    assert len(Keep.seen[-1]) == 1


def test_frozen_values_copy_to_plain_ones():
    cond = freeze([[torch.ones(1), {"a": 1, "nested": {"b": [1]}}]])
    assert isinstance(cond, FrozenList) and isinstance(cond[0][1], FrozenDict)
    with pytest.raises(TypeError):
        cond[0][1]["nested"]["b"].append(2)
    copy = dict(cond[0][1])
    copy["a"] = 2
    assert cond[0][1]["a"] == 1 and type(cond[0][1].copy()) is dict
    assert type(cond + [1]) is list and type(list(cond)) is list
    import pickle

    assert pickle.loads(pickle.dumps(FrozenDict(a=1))) == {"a": 1}


def test_model_options_are_read_only():
    model = DiffusionModel(unet=None, family="sd1", prediction_type="epsilon",
                           options={"sampling_hooks": ()})
    with pytest.raises(TypeError):
        model.options["sampling_hooks"] = ("x",)
    import dataclasses

    derived = dataclasses.replace(model, options=dict(model.options, extra=1))
    assert "extra" not in model.options and derived.options["extra"] == 1


def test_controlnet_apply_and_other_nodes_leave_their_input_untouched():
    upstream = freeze([[torch.ones(1, 2, 3), {"pooled_output": None}]])
    negative = freeze([[torch.zeros(1, 2, 3), {"pooled_output": None}]])
    net = ControlModel(module=torch.nn.Linear(1, 1), kind="controlnet", family="sd1")
    image = torch.zeros(1, 8, 8, 3)
    (one,) = ControlNetApply().run(upstream, net, image, 0.5)
    pos, neg = ControlNetApplyAdvanced().run(upstream, negative, net, image, 0.7, 0.1, 0.9)
    (stacked, _) = ControlNetApplyAdvanced().run(pos, neg, net, image, 0.3, 0.0, 1.0)
    ConditioningSetArea().run(upstream, 64, 64, 0, 0, 1.0)
    ConditioningCombine().run(upstream, negative)
    assert "control" not in upstream[0][1] and "control" not in negative[0][1]
    assert one[0][1]["control"].strength == 0.5
    assert pos[0][1]["control"] is neg[0][1]["control"]  # one control for both sides
    assert stacked[0][1]["control"].previous is pos[0][1]["control"]
    with pytest.raises(ValueError, match="start_percent"):
        ControlNetApplyAdvanced().run(upstream, negative, net, image, 1.0, 0.8, 0.2)

"""The engine without a server: validation errors, execution order, cache, interrupt, errors."""

import threading

import pytest

from loom.engine.cache import OutputCache
from loom.engine.executor import Executor
from loom.engine.validate import validate_prompt
from loom.graph.errors import PromptError
from loom.nodeapi import ALWAYS_RUN, Combo, Float, Int, Link, Node, NodeRegistry, NodeResult, Output, String

RUNS: list[str] = []


class Const(Node):
    inputs = {"value": Int(0, min=-100, max=100)}
    outputs = (Output("INT"),)

    def run(self, value):
        RUNS.append(self.ctx.node_id)
        return (value,)


class Add(Node):
    inputs = {"a": Link("INT"), "b": Link("INT", optional=True), "k": Int(0)}
    outputs = (Output("INT"),)

    def run(self, a, k, b=0):
        RUNS.append(self.ctx.node_id)
        return (a + b + k,)


class Pick(Node):
    inputs = {"choice": Combo(["x", "y"]), "scale": Float(1.0, min=0.0, max=2.0), "text": String("")}
    outputs = (Output("STRING"),)

    def run(self, choice, scale, text):
        RUNS.append(self.ctx.node_id)
        return (f"{choice}{scale}{text}",)


class Sink(Node):
    output_node = True
    inputs = {"x": Link("*")}

    def run(self, x):
        RUNS.append(self.ctx.node_id)
        return NodeResult((), {"values": [x]})


class Boom(Node):
    inputs = {"x": Link("INT")}
    outputs = (Output("INT"),)

    def run(self, x):
        raise ValueError("kaboom")


class Slow(Node):
    inputs = {"x": Link("INT"), "steps": Int(1000)}
    outputs = (Output("INT"),)

    def run(self, x, steps):
        for i in range(steps):
            if i == 3:
                self.ctx.interrupt.set()  # the user presses interrupt during the 4th step
            self.ctx.progress(i + 1, steps)
        return (x,)


class Volatile(Node):
    inputs = {"value": Int(0)}
    outputs = (Output("INT"),)

    @classmethod
    def fingerprint(cls, ctx, value):
        return ALWAYS_RUN

    def run(self, value):
        RUNS.append(self.ctx.node_id)
        return (value,)


@pytest.fixture
def registry():
    reg = NodeRegistry()
    for cls in (Const, Add, Pick, Sink, Boom, Slow, Volatile):
        reg.register(cls.__name__, cls)
    RUNS.clear()
    return reg


def diamond():
    return {
        "1": {"class_type": "Const", "inputs": {"value": 1}},
        "2": {"class_type": "Const", "inputs": {"value": 2}},
        "3": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["2", 0], "k": 0}},
        "4": {"class_type": "Add", "inputs": {"a": ["1", 0], "k": 10}},
        "5": {"class_type": "Sink", "inputs": {"x": ["3", 0]}},
        "6": {"class_type": "Sink", "inputs": {"x": ["4", 0]}},
    }


def run(registry, executor, prompt, pid="p"):
    RUNS.clear()
    return executor.execute(validate_prompt(prompt, registry), pid)


def errors_of(registry, prompt):
    with pytest.raises(PromptError) as info:
        validate_prompt(prompt, registry)
    return info.value


def test_runs_in_dependency_order_and_reports_outputs(registry):
    result = run(registry, Executor(), diamond())
    assert result.status == "success"
    assert result.outputs == {"5": {"values": [3]}, "6": {"values": [11]}}
    for before, after in (("1", "3"), ("2", "3"), ("3", "5"), ("1", "4"), ("4", "6")):
        assert RUNS.index(before) < RUNS.index(after)
    assert sorted(RUNS) == ["1", "2", "3", "4", "5", "6"]  # each node once


def test_identical_prompt_runs_nothing_and_change_reruns_only_dependants(registry):
    ex = Executor()
    run(registry, ex, diamond())
    again = run(registry, ex, diamond())
    assert RUNS == [] and again.executed == []
    assert sorted(again.cached) == ["1", "2", "3", "4", "5", "6"]
    assert again.outputs == {"5": {"values": [3]}, "6": {"values": [11]}}

    changed = diamond()
    changed["2"]["inputs"]["value"] = 5
    result = run(registry, ex, changed)
    assert sorted(result.executed) == ["2", "3", "5"]
    assert result.outputs["5"] == {"values": [6]}


def test_fingerprint_always_run_reruns_node_and_dependants(registry):
    prompt = {"1": {"class_type": "Volatile", "inputs": {"value": 1}},
              "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "k": 1}},
              "3": {"class_type": "Sink", "inputs": {"x": ["2", 0]}}}
    ex = Executor()
    run(registry, ex, prompt)
    assert sorted(run(registry, ex, prompt).executed) == ["1", "2", "3"]


def test_error_event_carries_node_and_traceback(registry):
    events = []
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 1}},
              "2": {"class_type": "Boom", "inputs": {"x": ["1", 0]}},
              "3": {"class_type": "Sink", "inputs": {"x": ["2", 0]}}}
    result = Executor().execute(validate_prompt(prompt, registry), "p", lambda e, d: events.append((e, d)))
    assert result.status == "error"
    err = dict(events)["execution_error"]
    assert err["node_id"] == "2" and err["node_type"] == "Boom"
    assert err["exception_message"] == "kaboom" and err["exception_type"] == "builtins.ValueError"
    assert any("kaboom" in line for line in err["traceback"])
    assert err["executed"] == ["1"]
    assert events[-1] == ("executing", {"node": None, "prompt_id": "p"})


def test_interrupt_inside_a_node_stops_within_one_step(registry):
    events = []
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 1}},
              "2": {"class_type": "Slow", "inputs": {"x": ["1", 0], "steps": 1000}},
              "3": {"class_type": "Sink", "inputs": {"x": ["2", 0]}}}
    ex = Executor()
    result = ex.execute(validate_prompt(prompt, registry), "p", lambda e, d: events.append((e, d)))
    assert result.status == "interrupted"
    progress = [d["value"] for e, d in events if e == "progress"]
    assert progress == [1, 2, 3, 4]
    assert dict(events)["execution_interrupted"]["node_id"] == "2"
    # the next prompt runs normally (the flag is cleared)
    assert run(registry, ex, diamond()).status == "success"


def test_interrupt_between_nodes(registry):
    ex = Executor()
    seen = []

    def emit(event, data):
        if event == "executing" and data["node"] == "1":
            ex.interrupt.set()
        seen.append(event)

    prompt = {"1": {"class_type": "Const", "inputs": {"value": 1}},
              "2": {"class_type": "Sink", "inputs": {"x": ["1", 0]}}}
    result = ex.execute(validate_prompt(prompt, registry), "p", emit)
    assert result.status == "interrupted" and result.executed == ["1"]


def test_a_runs_own_interrupt_flag_set_before_it_starts_is_kept(registry):
    """A worker hands each prompt its own stop flag: set before the run starts (an interrupt
    between claim and start), the run stops before its first node; the executor's own flag and
    the next run are untouched."""
    import threading

    ex = Executor()
    flag = threading.Event()
    flag.set()
    seen = []
    result = ex.execute(validate_prompt(diamond(), registry), "p", lambda e, d: seen.append(e),
                        interrupt=flag)
    assert result.status == "interrupted" and result.executed == []
    assert flag.is_set() and not ex.interrupt.is_set()
    assert seen[0] == "execution_start" and "execution_interrupted" in seen
    again = ex.execute(validate_prompt(diamond(), registry), "q", interrupt=threading.Event())
    assert again.status == "success"


@pytest.mark.parametrize("inputs,kind,name", [
    ({"value": 101}, "value_bigger_than_max", "value"),
    ({"value": -101}, "value_smaller_than_min", "value"),
    ({"value": "many"}, "invalid_input_type", "value"),
    ({}, "required_input_missing", "value"),
])
def test_constant_errors(registry, inputs, kind, name):
    err = errors_of(registry, {"1": {"class_type": "Const", "inputs": inputs},
                               "2": {"class_type": "Sink", "inputs": {"x": ["1", 0]}}})
    assert err.type == "prompt_outputs_failed_validation"
    node = err.node_errors["1"]
    assert node["class_type"] == "Const" and node["dependent_outputs"] == ["2"]
    assert node["errors"][0]["type"] == kind and node["errors"][0]["details"] == name
    assert name in node["errors"][0]["message"]


def test_combo_and_float_errors(registry):
    err = errors_of(registry, {"1": {"class_type": "Pick", "inputs": {"choice": "z", "scale": 3, "text": ""}},
                               "2": {"class_type": "Sink", "inputs": {"x": ["1", 0]}}})
    kinds = {e["type"] for e in err.node_errors["1"]["errors"]}
    assert kinds == {"value_not_in_list", "value_bigger_than_max"}
    msg = next(e for e in err.node_errors["1"]["errors"] if e["type"] == "value_not_in_list")["message"]
    assert "'z'" in msg and "'x'" in msg  # says what was sent and what is allowed


def test_link_errors(registry):
    err = errors_of(registry, {
        "1": {"class_type": "Pick", "inputs": {"choice": "x", "scale": 1, "text": ""}},
        "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["9", 0], "k": 0}},
        "3": {"class_type": "Add", "inputs": {"a": ["2", 3], "k": 0}},
        "4": {"class_type": "Sink", "inputs": {"x": ["3", 0]}},
    })
    e2 = {e["type"]: e for e in err.node_errors["2"]["errors"]}
    assert set(e2) == {"return_type_mismatch", "bad_linked_input"}
    assert "STRING" in e2["return_type_mismatch"]["message"]
    assert err.node_errors["3"]["errors"][0]["type"] == "bad_linked_input"


def test_unknown_class_and_no_outputs_and_shape(registry):
    err = errors_of(registry, {"1": {"class_type": "Nope", "inputs": {}}})
    assert err.type == "invalid_prompt" and "Nope" in err.message
    no_outputs = {"1": {"class_type": "Const", "inputs": {"value": 1}}}
    assert errors_of(registry, no_outputs).type == "prompt_no_outputs"
    for bad in ([], {}, {"1": 5}, {"1": {"inputs": {}}}, {"1": {"class_type": "Const", "inputs": []}}):
        assert errors_of(registry, bad).type == "invalid_prompt"


def test_cycle_is_a_validation_error_not_a_hang(registry):
    err = errors_of(registry, {
        "1": {"class_type": "Add", "inputs": {"a": ["2", 0], "k": 0}},
        "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "k": 0}},
        "3": {"class_type": "Sink", "inputs": {"x": ["2", 0]}},
    })
    types = [e["type"] for n in err.node_errors.values() for e in n["errors"]]
    assert "dependency_cycle" in types


def test_partial_execution_targets(registry):
    prompt = validate_prompt(diamond(), registry, partial_outputs=["6"])
    RUNS.clear()
    Executor().execute(prompt, "p")
    assert sorted(RUNS) == ["1", "4", "6"]


def test_deep_chain_does_not_hit_recursion_limit(registry):
    prompt = {"0": {"class_type": "Const", "inputs": {"value": 0}}}
    for i in range(1, 5000):
        prompt[str(i)] = {"class_type": "Add", "inputs": {"a": [str(i - 1), 0], "k": 1}}
    prompt["s"] = {"class_type": "Sink", "inputs": {"x": ["4999", 0]}}
    assert run(registry, Executor(), prompt).outputs["s"] == {"values": [4999]}


def test_cache_lru_bounds_by_count_and_bytes():
    cache = OutputCache(max_entries=2, max_bytes=10_000)
    cache.put("a", (b"x" * 10,), None)
    cache.put("b", (b"x" * 10,), None)
    cache.get("a")  # a is now most recently used
    cache.put("c", (b"x" * 10,), None)
    assert "a" in cache and "c" in cache and "b" not in cache
    cache.put("big", (b"x" * 9_000,), None)
    cache.put("big2", (b"x" * 9_000,), None)  # both cannot fit: the older goes
    assert "big2" in cache and "big" not in cache
    cache.put("huge", (b"x" * 20_000,), None)  # bigger than the whole budget: not kept
    assert "huge" not in cache and cache.stats()["bytes"] <= 10_000


def test_cache_counts_tensor_bytes():
    import torch

    cache = OutputCache(max_entries=100, max_bytes=1_000_000)
    cache.put("t1", (torch.zeros(100_000),), None)  # 400 kB
    cache.put("t2", (torch.zeros(100_000),), None)
    cache.put("t3", (torch.zeros(100_000),), None)  # 1.2 MB total: t1 evicted
    assert "t1" not in cache and "t3" in cache


def test_executor_is_reentrant_across_threads(registry):
    """Two workers, each with its own executor, can run at once."""
    results = []

    def worker():
        results.append(run(registry, Executor(), diamond()).status)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["success"] * 4


def _model(n_floats: int):
    """A MODEL wrapper around a real module holding ``n_floats`` fp32 weights."""
    import torch

    from loom.runtime.sd.types import DiffusionModel

    unet = torch.nn.Linear(n_floats, 1, bias=False)
    return DiffusionModel(unet=unet, family="sd1", prediction_type="epsilon")


def test_cache_counts_shared_model_weights_once_and_evicts_old_checkpoints():
    mb = 2**20
    cache = OutputCache(max_entries=100, max_bytes=1 << 30, max_model_bytes=10 * mb)
    a = _model(mb)  # 4 MB of weights
    cache.put("load-a", (a,), None)
    cache.put("lora-a", (a.with_patches(()),), None)  # shares a's module: not counted twice
    cache.put("cond", ((b"x" * 100,),), None)
    assert cache.stats()["model_bytes"] == 4 * mb and cache.stats()["models"] == 1
    b = _model(mb)
    cache.put("load-b", (b,), None)  # 8 MB: both fit
    assert "load-a" in cache and "load-b" in cache
    cache.get("load-a")  # a used again: b is now the least recently used model
    c = _model(mb)
    cache.put("load-c", (c,), None)  # 12 MB > 10 MB: b goes, a (recently used) and c stay
    assert "load-b" not in cache and "load-a" in cache and "load-c" in cache
    assert "lora-a" in cache and "cond" in cache  # plain entries are not evicted for weights
    assert cache.stats()["model_bytes"] == 8 * mb


def test_a_model_larger_than_the_budget_is_still_reused():
    mb = 2**20
    cache = OutputCache(max_entries=100, max_bytes=1 << 30, max_model_bytes=2 * mb)
    big = _model(mb)  # 4 MB > 2 MB budget
    cache.put("load-big", (big,), None)
    cache.put("cond", ((b"x",),), None)  # later, smaller outputs of the same prompt
    cache.put("latent", ((b"y",),), None)
    assert "load-big" in cache  # kept: the prompt in use needs it next time
    other = _model(mb)
    cache.put("load-other", (other,), None)
    assert "load-big" not in cache and "load-other" in cache
    assert cache.stats()["model_bytes"] == 4 * mb


def test_plain_byte_budget_never_evicts_the_loaded_model():
    mb = 2**20
    cache = OutputCache(max_entries=100, max_bytes=3 * mb, max_model_bytes=100 * mb)
    cache.put("load", (_model(1024),), None)
    for i in range(5):
        cache.put(f"img{i}", (b"x" * mb,), None)
    assert "load" in cache and "img0" not in cache and "img4" in cache

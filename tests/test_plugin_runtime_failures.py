"""Plugins that misbehave at run time (import-time failures: test_plugins.py).

Whatever a node's code raises — ``sys.exit()``, a bare ``BaseException``, ``KeyboardInterrupt``
— in ``run``, ``validate_inputs``, ``fingerprint`` or a COMBO choices function, it costs only
the prompt (or the node) it belongs to: the server, its workers and every other node go on."""

from __future__ import annotations

import shutil
import textwrap

import pytest

from tests.server_fixture import FIXTURE_NODES

PLUGIN = textwrap.dedent("""
    import sys

    from loom.nodeapi import Combo, Int, Link, Node, Output


    class Boom(BaseException):
        pass


    class ExitInRun(Node):
        inputs = {"value": Link("INT"), "how": Combo(["exit", "base", "keyboard", "generator"])}
        outputs = (Output("INT"),)

        def run(self, value, how):
            if how == "exit":
                sys.exit(3)
            if how == "base":
                raise Boom("boom")
            if how == "keyboard":
                raise KeyboardInterrupt()
            raise GeneratorExit()


    class ExitInValidate(Node):
        inputs = {"value": Int(0)}
        outputs = (Output("INT"),)

        @classmethod
        def validate_inputs(cls, ctx, value=0):
            sys.exit(4)

        def run(self, value):
            return (value,)


    class ExitInFingerprint(Node):
        inputs = {"value": Int(0)}
        outputs = (Output("INT"),)

        @classmethod
        def fingerprint(cls, ctx, value=0):
            sys.exit(5)

        def run(self, value):
            return (value,)


    def _bad_choices(ctx):
        raise RuntimeError("the model list is broken")


    def _exit_choices(ctx):
        sys.exit(6)


    class BadChoices(Node):
        inputs = {"choice": Combo(_bad_choices), "value": Int(0)}
        outputs = (Output("INT"),)

        def run(self, choice, value):
            return (value,)


    class ExitChoices(Node):
        inputs = {"choice": Combo(_exit_choices)}
        outputs = (Output("INT"),)

        def run(self, choice):
            return (1,)


    NODES = [ExitInRun, ExitInValidate, ExitInFingerprint, BadChoices, ExitChoices]
""")


@pytest.fixture
def server(loom_server_factory, tmp_path):
    packs = tmp_path / "custom_nodes"
    packs.mkdir()
    shutil.copy(FIXTURE_NODES / "loom_test_nodes.py", packs / "loom_test_nodes.py")
    (packs / "misbehaving.py").write_text(PLUGIN)
    return loom_server_factory(custom_nodes_dir=packs)


def good_prompt(value: int = 1) -> dict:
    return {
        "1": {"class_type": "IntConst", "inputs": {"value": value}},
        "2": {"class_type": "Sink", "inputs": {"value": ["1", 0]}},
    }


def assert_still_works(server, value: int) -> None:
    entry = server.run_prompt(good_prompt(value))
    assert entry["status"]["status_str"] == "success", entry
    assert server.get("/queue").json()["queue_running"] == []


@pytest.mark.parametrize(
    "how, expected", [("exit", "SystemExit"), ("base", "Boom"), ("generator", "GeneratorExit")]
)
def test_base_exceptions_in_run_end_the_prompt_not_the_worker(server, how, expected):
    for attempt in range(2):  # the second run proves the worker survived the first
        ws = server.ws()
        prompt = {
            "1": {"class_type": "IntConst", "inputs": {"value": attempt}},
            "2": {"class_type": "ExitInRun", "inputs": {"value": ["1", 0], "how": how}},
            "3": {"class_type": "Sink", "inputs": {"value": ["2", 0]}},
        }
        prompt_id = server.queue_prompt(prompt, client_id=ws.client_id)
        events = ws.prompt_events(prompt_id)
        errors = [e["data"] for e in events if e["type"] == "execution_error"]
        assert len(errors) == 1, events
        assert errors[0]["node_id"] == "2" and errors[0]["exception_type"].endswith(expected)
        entry = server.wait_history(prompt_id)
        assert entry["status"]["status_str"] == "error"
        assert_still_works(server, 10 + attempt)
    assert all(w.alive for w in server.state.workers.workers)


def test_keyboard_interrupt_in_run_interrupts_the_prompt(server):
    ws = server.ws()
    prompt = {
        "1": {"class_type": "IntConst", "inputs": {"value": 1}},
        "2": {"class_type": "ExitInRun", "inputs": {"value": ["1", 0], "how": "keyboard"}},
        "3": {"class_type": "Sink", "inputs": {"value": ["2", 0]}},
    }
    prompt_id = server.queue_prompt(prompt, client_id=ws.client_id)
    types = [e["type"] for e in ws.prompt_events(prompt_id)]
    assert "execution_interrupted" in types or "execution_error" in types, types
    assert_still_works(server, 7)
    assert all(w.alive for w in server.state.workers.workers)


def test_exit_in_validate_inputs_is_a_validation_error(server):
    for value in (1, 2):  # twice: the server is still there after the first
        prompt = {
            "1": {"class_type": "ExitInValidate", "inputs": {"value": value}},
            "2": {"class_type": "Sink", "inputs": {"value": ["1", 0]}},
        }
        r = server.post("/prompt", json={"prompt": prompt})
        assert r.status == 400, r.text
        error = r.json()["node_errors"]["1"]["errors"][0]
        assert "SystemExit" in error["message"], error
    assert_still_works(server, 3)


def test_exit_in_fingerprint_reruns_the_node(server):
    prompt = {
        "1": {"class_type": "ExitInFingerprint", "inputs": {"value": 5}},
        "2": {"class_type": "Sink", "inputs": {"value": ["1", 0]}},
    }
    for _ in range(2):
        entry = server.run_prompt(prompt)
        assert entry["status"]["status_str"] == "success", entry
    assert all(w.alive for w in server.state.workers.workers)


def test_combo_choices_that_raise_isolate_their_node(server):
    r = server.get("/object_info")
    assert r.status == 200, r.text
    info = r.json()
    assert "IntConst" in info and "Sink" in info
    for name in ("BadChoices", "ExitChoices"):
        assert name in info, sorted(info)
        assert info[name]["error"], info[name]
        assert info[name]["input"]["required"]["choice"][0] == []
    assert "the model list is broken" in info["BadChoices"]["error"]
    assert info["BadChoices"]["input"]["required"]["value"][0] == "INT"
    assert "error" not in info["IntConst"]
    r = server.get("/object_info/BadChoices")
    assert r.status == 200 and r.json()["BadChoices"]["error"]

    # Other nodes validate, convert and run.
    assert_still_works(server, 4)
    workflow = {
        "nodes": [
            {
                "id": 1,
                "type": "IntConst",
                "widgets_values": [2],
                "inputs": [],
                "outputs": [{"name": "INT", "type": "INT", "links": [1]}],
                "mode": 0,
            },
            {
                "id": 2,
                "type": "Sink",
                "widgets_values": [],
                "inputs": [{"name": "value", "type": "INT", "link": 1}],
                "outputs": [],
                "mode": 0,
            },
        ],
        "links": [[1, 1, 0, 2, 0, "INT"]],
        "version": 0.4,
    }
    r = server.post("/workflow/convert", json=workflow)
    assert r.status == 200, r.text
    # The broken node itself is refused with a clear message, not a 500.
    for name in ("BadChoices", "ExitChoices"):
        prompt = {
            "1": {"class_type": name, "inputs": {"choice": "x", "value": 1}},
            "2": {"class_type": "Sink", "inputs": {"value": ["1", 0]}},
        }
        r = server.post("/prompt", json={"prompt": prompt})
        assert r.status == 400, r.text
        message = r.json()["node_errors"]["1"]["errors"][0]["message"]
        assert "choices" in message and "'choice'" in message, message
    assert_still_works(server, 5)

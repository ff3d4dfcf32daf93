"""POST /prompt validation errors of each type, and malformed input everywhere -> 4xx JSON."""

from __future__ import annotations

import pytest

from tests.server_fixture import LoomTestServer

SINK = {"class_type": "Sink", "inputs": {"value": ["1", 0]}}
# A valid prompt that would stay queued for a while (so a wrongly accepted request shows).
OK = {"1": {"class_type": "Sleep", "inputs": {"seconds": 60}}, "2": {"class_type": "Sink", "inputs": {
    "value": ["1", 0]}}}


def post_prompt(server: LoomTestServer, prompt) -> tuple[int, dict]:
    r = server.post("/prompt", json={"prompt": prompt})
    return r.status, r.json()


def node_error_types(body: dict, node_id: str) -> list[str]:
    return [e["type"] for e in body["node_errors"][node_id]["errors"]]


@pytest.mark.parametrize("prompt, bad_node, error_type", [
    ({"1": {"class_type": "Add", "inputs": {"a": ["2", 0]}},
      "2": {"class_type": "IntConst", "inputs": {"value": 1}}, "3": SINK},
     "1", "required_input_missing"),
    ({"1": {"class_type": "Add", "inputs": {"a": ["2", 0], "b": ["2", 0]}},
      "2": {"class_type": "StrConst", "inputs": {"value": "x"}}, "3": SINK},
     "1", "return_type_mismatch"),
    ({"1": {"class_type": "Choose", "inputs": {"mode": "c"}},
      "3": {"class_type": "StrSink", "inputs": {"text": ["1", 0]}}},
     "1", "value_not_in_list"),
    ({"1": {"class_type": "IntConst", "inputs": {"value": -5000}}, "3": SINK},
     "1", "value_smaller_than_min"),
    ({"1": {"class_type": "IntConst", "inputs": {"value": 5000}}, "3": SINK},
     "1", "value_bigger_than_max"),
    ({"1": {"class_type": "IntConst", "inputs": {"value": "abc"}}, "3": SINK},
     "1", "invalid_input_type"),
    ({"1": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
      "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["1", 0]}}, "3": SINK},
     "1", "dependency_cycle"),
    ({"3": {"class_type": "Sink", "inputs": {"value": ["9", 0]}}}, "3", "bad_linked_input"),
])
def test_node_validation_errors(loom_server_shared: LoomTestServer, prompt, bad_node, error_type):
    status, body = post_prompt(loom_server_shared, prompt)
    assert status == 400, body
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert error_type in node_error_types(body, bad_node)
    assert body["node_errors"][bad_node]["dependent_outputs"] == ["3"]
    assert body["node_errors"][bad_node]["class_type"] == prompt[bad_node]["class_type"]
    # Nothing was queued.
    assert loom_server_shared.get("/prompt").json()["exec_info"]["queue_remaining"] == 0


@pytest.mark.parametrize("prompt, error_type", [
    ({"1": {"class_type": "NoSuchNode", "inputs": {}}}, "invalid_prompt"),
    ({"1": {"class_type": "IntConst", "inputs": {"value": 1}}}, "prompt_no_outputs"),
    ([1, 2, 3], "invalid_prompt"),
    ({}, "invalid_prompt"),
    ({"1": {"inputs": {}}}, "invalid_prompt"),
    ({"1": {"class_type": "Sink", "inputs": [1]}}, "invalid_prompt"),
    ("text", "invalid_prompt"),
])
def test_prompt_level_errors(loom_server_shared: LoomTestServer, prompt, error_type):
    status, body = post_prompt(loom_server_shared, prompt)
    assert status == 400
    assert body["error"]["type"] == error_type
    assert body["error"]["message"]
    assert "node_errors" in body


def test_unknown_class_error_names_it(loom_server_shared: LoomTestServer):
    _, body = post_prompt(loom_server_shared, {"7": {"class_type": "NoSuchNode", "inputs": {}}})
    assert "NoSuchNode" in body["error"]["message"]
    assert body["error"]["extra_info"]["node_id"] == "7"


def test_missing_prompt(loom_server_shared: LoomTestServer):
    r = loom_server_shared.post("/prompt", json={"client_id": "x"})
    assert r.status == 400 and r.json()["error"]["type"] == "no_prompt"


def test_partial_execution_targets(loom_server: LoomTestServer):
    prompt = {"1": {"class_type": "IntConst", "inputs": {"value": 1}},
              "2": {"class_type": "Sink", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "Sink", "inputs": {"value": ["1", 0]}}}
    pid = loom_server.queue_prompt(prompt, partial_execution_targets=["3"])
    entry = loom_server.wait_history(pid)
    assert list(entry["outputs"]) == ["3"] and entry["prompt"][4] == ["3"]
    r = loom_server.post("/prompt", json={"prompt": prompt, "partial_execution_targets": ["9"]})
    assert r.status == 400 and r.json()["error"]["type"] == "invalid_prompt"


def test_duplicate_prompt_id_while_queued(loom_server: LoomTestServer):
    ws = loom_server.ws()
    sleep = {"1": {"class_type": "Sleep", "inputs": {"seconds": 60}},
             "2": {"class_type": "Sink", "inputs": {"value": ["1", 0]}}}
    blocker = loom_server.queue_prompt(sleep, client_id=ws.client_id)
    ws.wait_for("progress", prompt_id=blocker)
    ok = {"1": {"class_type": "IntConst", "inputs": {"value": 1}}, "3": SINK}
    assert loom_server.queue_prompt(ok, prompt_id="mine") == "mine"
    r = loom_server.post("/prompt", json={"prompt": ok, "prompt_id": "mine"})
    assert r.status == 400 and r.json()["error"]["type"] == "duplicate_prompt_id"
    loom_server.post("/interrupt")


BAD_BODIES = [b"{not json", b"[1, 2]", b"\xff\xfe\x00", b'"text"', b"null", b'{"number": NaN}',
              b'{"prompt": {}, "extra_data": {"x": Infinity}}', b'{"number": 1e400}']
BODY_ROUTES = ["/prompt", "/queue", "/history", "/interrupt", "/free", "/settings",
               "/api/prompt", "/api/queue"]


@pytest.mark.parametrize("path", BODY_ROUTES)
@pytest.mark.parametrize("body", BAD_BODIES)
def test_malformed_json_bodies_give_400(loom_server_shared: LoomTestServer, path, body):
    r = loom_server_shared.post(path, data=body, headers={"Content-Type": "application/json"})
    assert r.status == 400, (path, body, r.status, r.text)
    error = r.json()["error"]
    assert error["type"] and error["message"]


@pytest.mark.parametrize("path, body", [
    ("/prompt", {"prompt": OK, "front": "yes"}),
    ("/prompt", {"prompt": OK, "client_id": 5}),
    ("/prompt", {"prompt": OK, "extra_data": []}),
    ("/prompt", {"prompt": OK, "number": "1"}),
    ("/prompt", {"prompt": OK, "number": True}),
    ("/prompt", {"prompt": OK, "prompt_id": 12}),
    ("/prompt", {"prompt": OK, "prompt_id": ""}),
    ("/prompt", {"prompt": OK, "partial_execution_targets": "3"}),
    ("/prompt", {"prompt": OK, "partial_execution_targets": [{"a": 1}]}),
    ("/queue", {"clear": "yes"}),
    ("/queue", {"delete": "abc"}),
    ("/queue", {"delete": [1, 2]}),
    ("/history", {"clear": 1}),
    ("/history", {"delete": {"a": 1}}),
    ("/interrupt", {"prompt_id": 5}),
    ("/free", {"unload_models": "x"}),
    ("/free", {"free_memory": 1}),
])
def test_wrong_types_give_400(loom_server_shared: LoomTestServer, path, body):
    r = loom_server_shared.post(path, json=body)
    assert r.status == 400, (path, body, r.text)
    assert r.json()["error"]["type"] == "invalid_request"
    assert r.json()["error"]["message"]
    assert loom_server_shared.get("/prompt").json()["exec_info"]["queue_remaining"] == 0


@pytest.mark.parametrize("path", [
    "/history?max_items=abc", "/history?max_items=-3", "/history?offset=x",
    "/userdata?dir=workflows&recurse=maybe", "/userdata", "/view", "/view?filename=a.png&type=etc",
    "/view?filename=../secret.png", "/userdata/..%2Fx.json",
])
def test_bad_queries_give_400(loom_server_shared: LoomTestServer, path):
    r = loom_server_shared.get(path)
    assert r.status == 400, (path, r.status, r.text)
    assert r.json()["error"]["message"]


def test_unknown_routes_and_methods_are_json_errors(loom_server_shared: LoomTestServer):
    r = loom_server_shared.get("/api/no/such/route")
    assert r.status == 404 and r.json()["error"]["type"] == "not_found"
    r = loom_server_shared.request("PUT", "/prompt", json={})
    assert r.status == 405 and r.json()["error"]["type"] == "method_not_allowed"
    assert "POST" in r.headers.get("Allow", "")
    r = loom_server_shared.get("/object_info/NoSuchNode")
    assert r.status == 404 and "NoSuchNode" in r.json()["error"]["message"]

"""The server's HTTP API against a real server: queue, history, errors, /api prefix."""

from __future__ import annotations

from tests.server_fixture import LoomTestServer, add_chain


def test_queue_and_history(loom_server: LoomTestServer):
    r = loom_server.post("/prompt", json={"prompt": add_chain(5)})
    assert r.status == 200, r.text
    body = r.json()
    assert body["node_errors"] == {}
    assert isinstance(body["number"], int)
    entry = loom_server.wait_history(body["prompt_id"])
    assert entry["outputs"] == {"4": {"value": [15]}}
    assert entry["status"]["status_str"] == "success"
    assert entry["status"]["completed"] is True
    assert entry["prompt"][1] == body["prompt_id"]
    assert entry["prompt"][2]["3"]["class_type"] == "Add"
    assert entry["prompt"][4] == ["4"]
    events = [m[0] for m in entry["status"]["messages"]]
    assert events == ["execution_start", "execution_cached", "execution_success"]
    assert sorted(loom_server.ran(body["prompt_id"])) == ["1", "2", "3", "4"]
    assert loom_server.get("/prompt").json() == {"exec_info": {"queue_remaining": 0}}
    assert loom_server.get("/queue").json() == {"queue_running": [], "queue_pending": []}


def test_api_prefix(loom_server: LoomTestServer):
    r = loom_server.post("/api/prompt", json={"prompt": add_chain(2)})
    assert r.status == 200, r.text
    pid = r.json()["prompt_id"]
    loom_server.wait_history(pid)
    assert pid in loom_server.get("/api/history").json()
    assert "Sink" in loom_server.get("/api/object_info").json()
    assert loom_server.get("/api/queue").status == 200

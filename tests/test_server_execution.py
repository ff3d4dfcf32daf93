"""Running prompts through the real server: events, cache, interrupt, errors, workers."""

from __future__ import annotations

import time

from tests.server_fixture import LoomTestServer, add_chain


def sleeper(seconds: float = 30, value: int = 7) -> dict:
    return {
        "1": {"class_type": "IntConst", "inputs": {"value": value}},
        "2": {"class_type": "Sleep", "inputs": {"seconds": seconds, "value": ["1", 0]}},
        "3": {"class_type": "Sink", "inputs": {"value": ["2", 0]}},
    }


def types(events: list[dict]) -> list[str]:
    return [e["type"] for e in events]


def test_event_sequence_goes_to_the_submitting_client_only(loom_server: LoomTestServer):
    ws = loom_server.ws()
    other = loom_server.ws()
    pid = loom_server.queue_prompt(add_chain(5), client_id=ws.client_id)
    # (progress_state messages are checked in test_ws_protocol.py)
    events = [e for e in ws.prompt_events(pid) if e["type"] != "progress_state"]
    assert types(events) == ["execution_start", "execution_cached", "executing", "executing",
                             "executing", "executing", "executed", "execution_success",
                             "executing"]
    assert events[1]["data"]["nodes"] == []
    assert [e["data"]["node"] for e in events if e["type"] == "executing"] == ["1", "2", "3", "4",
                                                                              None]
    executed = events[6]["data"]
    assert executed["node"] == "4" and executed["output"] == {"value": [15]}
    assert all(e["data"]["prompt_id"] == pid for e in events)
    # History is written before the last event: a client may fetch it right away.
    assert pid in loom_server.get(f"/history/{pid}").json()
    # The other client saw status broadcasts only.
    seen = other.drain(0.3)
    assert seen and all(m["type"] == "status" for m in seen)
    assert seen[-1]["data"]["status"]["exec_info"]["queue_remaining"] == 0


def test_status_message_on_connect_and_client_id(loom_server: LoomTestServer):
    ws = loom_server.ws("my-tab-1")
    assert ws.client_id == "my-tab-1"
    assert ws.received[0]["data"]["status"] == {"exec_info": {"queue_remaining": 0}}
    generated = loom_server.ws()
    assert generated.client_id and generated.client_id != "my-tab-1"


def test_events_of_prompts_without_client_go_to_everybody(loom_server: LoomTestServer):
    a, b = loom_server.ws(), loom_server.ws()
    pid = loom_server.queue_prompt(add_chain(1))
    assert types(a.prompt_events(pid))[-2:] == ["execution_success", "executing"]
    assert types(b.prompt_events(pid))[-2:] == ["execution_success", "executing"]


def test_cache_reruns_exactly_the_dependants_of_a_change(loom_server: LoomTestServer):
    def graph(a: int) -> dict:
        return {
            "a": {"class_type": "IntConst", "inputs": {"value": a}},
            "b": {"class_type": "IntConst", "inputs": {"value": 2}},
            "c": {"class_type": "Add", "inputs": {"a": ["a", 0], "b": ["b", 0]}},
            "d": {"class_type": "IntConst", "inputs": {"value": 3}},
            "e": {"class_type": "Add", "inputs": {"a": ["c", 0], "b": ["d", 0]}},
            "s1": {"class_type": "Sink", "inputs": {"value": ["e", 0]}},
            "s2": {"class_type": "Sink", "inputs": {"value": ["d", 0]}},
        }

    ws = loom_server.ws()
    first = loom_server.queue_prompt(graph(1), client_id=ws.client_id)
    ws.prompt_events(first)
    assert sorted(loom_server.ran(first)) == ["a", "b", "c", "d", "e", "s1", "s2"]

    again = loom_server.queue_prompt(graph(1), client_id=ws.client_id)
    events = ws.prompt_events(again)
    assert loom_server.ran(again) == []  # nothing executed
    assert sorted(events[1]["data"]["nodes"]) == ["a", "b", "c", "d", "e", "s1", "s2"]
    assert "executing" not in types(events[:-1])
    entry = loom_server.wait_history(again)
    assert entry["outputs"] == {"s1": {"value": [6]}, "s2": {"value": [3]}}

    changed = loom_server.queue_prompt(graph(100), client_id=ws.client_id)
    events = ws.prompt_events(changed)
    assert sorted(loom_server.ran(changed)) == ["a", "c", "e", "s1"]
    assert sorted(events[1]["data"]["nodes"]) == ["b", "d", "s2"]
    assert loom_server.wait_history(changed)["outputs"]["s1"] == {"value": [105]}


def test_interrupt_a_long_node_while_the_server_keeps_answering(loom_server: LoomTestServer):
    ws = loom_server.ws()
    pid = loom_server.queue_prompt(sleeper(60), client_id=ws.client_id)
    progress = ws.wait_for("progress", prompt_id=pid)
    assert progress["data"]["node"] == "2" and progress["data"]["max"] == 6000

    t0 = time.perf_counter()
    queue = loom_server.get("/queue").json()
    assert time.perf_counter() - t0 < 0.5
    assert [item[1] for item in queue["queue_running"]] == [pid]
    assert loom_server.get("/prompt").json()["exec_info"]["queue_remaining"] == 1

    # Interrupting another prompt id leaves it running.
    assert loom_server.post("/interrupt", json={"prompt_id": "not-this-one"}).json() == {
        "interrupted": False}
    t0 = time.perf_counter()
    assert loom_server.post("/interrupt", json={"prompt_id": pid}).status == 200
    interrupted = ws.wait_for("execution_interrupted", prompt_id=pid, timeout=5)
    assert time.perf_counter() - t0 < 2
    assert interrupted["data"]["node_id"] == "2"
    assert interrupted["data"]["node_type"] == "Sleep"
    assert interrupted["data"]["executed"] == ["1"]
    ws.wait_for("executing", node=None, prompt_id=pid)
    entry = loom_server.wait_history(pid)
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    assert "execution_interrupted" in [m[0] for m in entry["status"]["messages"]]

    # The next prompt runs normally; /interrupt without a body hits whatever runs.
    nxt = loom_server.run_prompt(add_chain(2))
    assert nxt["status"]["status_str"] == "success"
    pid = loom_server.queue_prompt(sleeper(60, value=8), client_id=ws.client_id)
    ws.wait_for("progress", prompt_id=pid)
    assert loom_server.post("/interrupt").json() == {"interrupted": True}
    ws.wait_for("execution_interrupted", prompt_id=pid, timeout=5)


def test_node_exception_gives_execution_error_and_the_next_prompt_runs(loom_server: LoomTestServer):
    ws = loom_server.ws()
    prompt = {
        "1": {"class_type": "IntConst", "inputs": {"value": 1}},
        "2": {"class_type": "Fail", "inputs": {"message": "kaputt", "value": ["1", 0]}},
        "3": {"class_type": "Sink", "inputs": {"value": ["2", 0]}},
    }
    pid = loom_server.queue_prompt(prompt, client_id=ws.client_id)
    events = ws.prompt_events(pid)
    assert types(events)[-2:] == ["execution_error", "executing"]
    error = events[-2]["data"]
    assert error["node_id"] == "2"
    assert error["node_type"] == "Fail"
    assert error["exception_message"] == "kaputt"
    assert error["exception_type"].endswith("RuntimeError")
    assert any("RuntimeError: kaputt" in line for line in error["traceback"])
    assert error["executed"] == ["1"]
    entry = loom_server.wait_history(pid)
    assert entry["status"]["status_str"] == "error"
    assert entry["status"]["messages"][-1][0] == "execution_error"
    assert loom_server.run_prompt(add_chain(3))["outputs"] == {"4": {"value": [13]}}


def test_queue_order_front_delete_and_clear(loom_server: LoomTestServer):
    ws = loom_server.ws()
    blocker = loom_server.queue_prompt(sleeper(60), client_id=ws.client_id)
    ws.wait_for("progress", prompt_id=blocker)
    a = loom_server.queue_prompt(add_chain(1))
    b = loom_server.queue_prompt(add_chain(2))
    c = loom_server.queue_prompt(add_chain(3), front=True)
    d = loom_server.queue_prompt(add_chain(4), number=-1000)
    queue = loom_server.get("/queue").json()
    assert [i[1] for i in queue["queue_running"]] == [blocker]
    assert [i[1] for i in queue["queue_pending"]] == [d, c, a, b]
    item = queue["queue_pending"][2]
    assert item[2]["1"]["inputs"]["value"] == 1 and item[4] == ["4"]
    assert item[3]["create_time"] > 0
    assert item[0] < queue["queue_pending"][3][0]

    assert loom_server.post("/queue", json={"delete": [a, "unknown"]}).json() == {"removed": 1}
    assert [i[1] for i in loom_server.get("/queue").json()["queue_pending"]] == [d, c, b]
    assert loom_server.post("/queue", json={"clear": True}).json() == {"removed": 3}
    queue = loom_server.get("/queue").json()
    assert queue["queue_pending"] == [] and len(queue["queue_running"]) == 1
    # Deleting the running prompt interrupts it.
    loom_server.post("/queue", json={"delete": [blocker]})
    ws.wait_for("execution_interrupted", prompt_id=blocker, timeout=5)
    assert loom_server.wait_history(blocker)["status"]["status_str"] == "error"
    assert loom_server.get("/queue").json() == {"queue_running": [], "queue_pending": []}


def test_prompt_is_validated_again_when_a_worker_takes_it(loom_server: LoomTestServer):
    ws = loom_server.ws()
    blocker = loom_server.queue_prompt(sleeper(60), client_id=ws.client_id)
    ws.wait_for("progress", prompt_id=blocker)
    prompt = {"1": {"class_type": "Choose", "inputs": {"mode": "b"}},
              "2": {"class_type": "StrSink", "inputs": {"text": ["1", 0]}}}
    pid = loom_server.queue_prompt(prompt, client_id=ws.client_id)
    # The node pack changed while the prompt waited.
    loom_server.state.registry.classes.pop("Choose")
    loom_server.post("/interrupt")
    events = ws.prompt_events(pid)
    assert types(events) == ["execution_start", "execution_error", "executing"]
    assert "Choose" in events[1]["data"]["exception_message"]
    entry = loom_server.wait_history(pid)
    assert entry["status"]["status_str"] == "error"
    assert loom_server.ran(pid) == []


def test_progress_events(loom_server: LoomTestServer):
    ws = loom_server.ws()
    pid = loom_server.queue_prompt(sleeper(0.05), client_id=ws.client_id)
    events = ws.prompt_events(pid)
    progress = [e["data"] for e in events if e["type"] == "progress"]
    assert [p["value"] for p in progress] == [1, 2, 3, 4, 5]
    assert all(p["max"] == 5 and p["node"] == "2" for p in progress)


def test_two_workers_run_prompts_at_the_same_time(loom_server_factory):
    server = loom_server_factory(workers=2)
    ws = server.ws()
    p1 = server.queue_prompt(sleeper(60, 1), client_id=ws.client_id)
    p2 = server.queue_prompt(sleeper(60, 2), client_id=ws.client_id)
    ws.wait_for("progress", prompt_id=p1)
    ws.wait_for("progress", prompt_id=p2)
    running = sorted(i[1] for i in server.get("/queue").json()["queue_running"])
    assert running == sorted([p1, p2])
    # Interrupt only the first; the second keeps running.
    server.post("/interrupt", json={"prompt_id": p1})
    ws.wait_for("execution_interrupted", prompt_id=p1, timeout=5)
    assert [i[1] for i in server.get("/queue").json()["queue_running"]] == [p2]
    server.post("/interrupt", json={"prompt_id": p2})
    ws.wait_for("execution_interrupted", prompt_id=p2, timeout=5)
    workers = server.state.workers.workers
    assert workers[0].executor.cache is not workers[1].executor.cache


def test_history_paging_and_deletion(loom_server: LoomTestServer):
    ids = [loom_server.queue_prompt(add_chain(i)) for i in range(4)]
    for pid in ids:
        loom_server.wait_history(pid)
    assert list(loom_server.get("/history").json()) == ids
    assert list(loom_server.get("/history", params={"max_items": 2}).json()) == ids[2:]
    assert list(loom_server.get("/history", params={"max_items": 2, "offset": 1}).json()) == ids[1:3]
    assert loom_server.get(f"/history/{ids[0]}").json()[ids[0]]["outputs"] == {"4": {"value": [10]}}
    assert loom_server.get("/history/nope").json() == {}
    assert loom_server.post("/history", json={"delete": [ids[0]]}).json() == {"removed": 1}
    assert list(loom_server.get("/history").json()) == ids[1:]
    loom_server.post("/history", json={"clear": True})
    assert loom_server.get("/history").json() == {}


def test_history_is_pruned_to_the_maximum(loom_server_factory):
    server = loom_server_factory(history_max_items=2)
    ids = [server.queue_prompt(add_chain(i)) for i in range(3)]
    server.wait_history(ids[-1])
    assert list(server.get("/history").json()) == ids[1:]


def test_output_files_are_referenced_in_history_and_served(loom_server: LoomTestServer):
    prompt = {"1": {"class_type": "SaveText", "inputs": {"text": "hi there", "prefix": "t"}}}
    pid = loom_server.queue_prompt(prompt)
    entry = loom_server.wait_history(pid)
    ref = entry["outputs"]["1"]["texts"][0]
    assert ref == {"filename": "t_00000.txt", "subfolder": "", "type": "output"}
    assert loom_server.state.store.history.files(pid) == [
        {"node_id": "1", "kind": "texts", "filename": "t_00000.txt", "subfolder": "",
         "type": "output"}]
    r = loom_server.get("/view", params=ref)
    assert r.status == 200 and r.body == b"hi there"
    leftovers = [p.name for p in loom_server.settings.folders.output_dir.iterdir()]
    assert leftovers == ["t_00000.txt"]  # no temporary files left behind


def test_an_output_that_is_not_json_is_an_error_not_a_dead_worker(loom_server: LoomTestServer):
    ws = loom_server.ws()
    pid = loom_server.queue_prompt({"1": {"class_type": "BadUi", "inputs": {}}},
                                   client_id=ws.client_id)
    events = ws.prompt_events(pid)
    assert types(events).count("execution_start") == 1
    assert types(events)[-2:] == ["execution_error", "executing"]
    entry = loom_server.wait_history(pid)
    assert entry["status"]["status_str"] == "error"
    assert "TypeError" in entry["status"]["messages"][-1][1]["exception_message"]
    assert loom_server.run_prompt(add_chain(1))["status"]["status_str"] == "success"


def test_a_reconnecting_client_learns_the_running_node(loom_server: LoomTestServer):
    ws = loom_server.ws("tab-1")
    pid = loom_server.queue_prompt(sleeper(60), client_id="tab-1")
    ws.wait_for("progress", prompt_id=pid)
    ws.close()
    again = loom_server.ws("tab-1")
    msg = again.next(5)
    assert msg["type"] == "executing" and msg["data"] == {"node": "2", "display_node": "2",
                                                          "prompt_id": pid}
    assert all(m["type"] != "executing" for m in loom_server.ws("someone-else").drain(0.1))
    loom_server.post("/interrupt")
    again.wait_for("execution_interrupted", prompt_id=pid)

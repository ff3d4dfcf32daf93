"""What the user queued and made survives a crash (kill -9) or a restart."""

from __future__ import annotations

import signal
import time

import pytest

from tests.server_fixture import LoomClient, free_port, kill_9, main_process, start_main


def sleeper(seconds: float, value: int) -> dict:
    return {"1": {"class_type": "IntConst", "inputs": {"value": value}},
            "2": {"class_type": "Sleep", "inputs": {"seconds": seconds, "value": ["1", 0]}},
            "3": {"class_type": "Sink", "inputs": {"value": ["2", 0]}}}


def test_kill_9_keeps_queued_prompts_and_history(tmp_path):
    port = free_port()
    with main_process(tmp_path, port) as (proc, client):
        done = client.run_prompt(sleeper(0, 1))
        assert done["outputs"]["3"] == {"value": [1]}
        done_id = done["prompt"][1]
        ws = client.ws()
        queued = [client.queue_prompt(sleeper(0.4, v), client_id=ws.client_id) for v in (2, 3, 4)]
        ws.wait_for("progress", prompt_id=queued[0])  # the first one is running
        client.post("/userdata/workflows%2Fkept.json", data=b'{"nodes": []}')
        kill_9(proc)

    proc = start_main(tmp_path, port)
    client = LoomClient(f"http://127.0.0.1:{port}")
    try:
        queue = client.get("/queue").json()
        still = [item[1] for item in queue["queue_running"] + queue["queue_pending"]]
        assert set(still) <= set(queued) and still
        # Nothing was lost: each queued prompt is either still queued or (if the restarted
        # worker was quick) already finished.
        history = client.get("/history").json()
        assert set(still) | (set(history) & set(queued)) == set(queued)
        assert done_id in history
        for value, pid in zip((2, 3, 4), queued, strict=True):
            entry = client.wait_history(pid, timeout=30)
            assert entry["status"]["status_str"] == "success"
            assert entry["outputs"]["3"] == {"value": [value]}
        # They ran in the order they were queued.
        assert list(client.get("/history").json()) == [done_id, *queued]
        assert client.get("/userdata/workflows%2Fkept.json").json() == {"nodes": []}
    finally:
        client.close()
        proc.kill()
        proc.wait(10)
    # No temp files of atomic writes are left in the output folders.
    assert not [p for p in (tmp_path / "output").iterdir() if p.name.startswith(".")]


def test_graceful_restart_requeues_the_running_prompt(loom_server_factory, tmp_path):
    base = tmp_path / "base"
    server = loom_server_factory(base_dir=base)
    ws = server.ws()
    running = server.queue_prompt(sleeper(60, 5), client_id=ws.client_id)
    pending = server.queue_prompt(sleeper(0, 6))
    ws.wait_for("progress", prompt_id=running)
    t0 = time.perf_counter()
    server.stop()
    assert time.perf_counter() - t0 < 5

    server = loom_server_factory(base_dir=base)
    ws = server.ws(ws.client_id)  # the events of a prompt go to the client that queued it
    queue = server.get("/queue").json()
    ids = [i[1] for i in queue["queue_running"] + queue["queue_pending"]]
    assert ids == [running, pending]
    assert server.get("/history").json() == {}
    ws.wait_for("progress", prompt_id=running)  # it runs again
    server.post("/interrupt", json={"prompt_id": running})
    assert server.wait_history(pending)["outputs"]["3"] == {"value": [6]}


def test_sigterm_stops_cleanly_and_the_running_prompt_runs_after_restart(tmp_path):
    port = free_port()
    proc = start_main(tmp_path, port)
    client = LoomClient(f"http://127.0.0.1:{port}")
    try:
        ws = client.ws()
        pid = client.queue_prompt(sleeper(60, 9), client_id=ws.client_id)
        ws.wait_for("progress", prompt_id=pid)
    finally:
        client.close()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    assert "Stopping" in (tmp_path / "server.log").read_text()

    client_id = ws.client_id
    proc = start_main(tmp_path, port)
    client = LoomClient(f"http://127.0.0.1:{port}")
    try:
        ws = client.ws(client_id)
        queue = client.get("/queue").json()
        assert [i[1] for i in queue["queue_running"] + queue["queue_pending"]] == [pid]
        ws.wait_for("progress", prompt_id=pid)  # it runs again
        assert client.post("/queue", json={"delete": [pid]}).status == 200  # interrupts it
        assert client.wait_history(pid)["status"]["status_str"] == "error"
    finally:
        client.close()
        proc.kill()
        proc.wait(10)


def test_a_second_server_on_the_same_user_folder_refuses_to_start(loom_server_factory, tmp_path):
    loom_server_factory(base_dir=tmp_path / "b")
    with pytest.raises(RuntimeError, match="another Loom server"):
        loom_server_factory(base_dir=tmp_path / "b")

"""The jobs API (``/jobs``) that ComfyUI's front end 1.58 reads its queue and assets panels
from: the shapes its bundle parses (zod schemas ``zJobsListResponse``, ``zJobDetail``), statuses,
paging, order, and cancelling, built on Loom's SQLite queue and history."""

from __future__ import annotations

import time

import pytest

from loom.store import Store
from tests.server_fixture import LoomTestServer

JOB_KEYS = {"id", "status", "create_time", "execution_start_time", "execution_end_time",
            "execution_error", "outputs_count", "previewable_outputs_count", "preview_output",
            "workflow_id", "priority"}


def assert_front_end_shape(job: dict) -> None:
    """What the front end's zod schema insists on (a wrong type fails the whole list)."""
    assert isinstance(job["id"], str)
    assert job["status"] in ("pending", "in_progress", "completed", "failed", "cancelled")
    assert isinstance(job["create_time"], int)
    for key in ("execution_start_time", "execution_end_time"):
        assert job[key] is None or isinstance(job[key], int)
    for key in ("outputs_count", "previewable_outputs_count"):
        assert job[key] is None or isinstance(job[key], int)
    if "priority" in job:
        assert isinstance(job["priority"], (int, float))
    error = job["execution_error"]
    if error is not None:
        for key in ("node_id", "node_type", "exception_message", "exception_type"):
            assert isinstance(error[key], str), key
        assert all(isinstance(t, str) for t in error["traceback"])
        assert "timestamp" not in error or isinstance(error["timestamp"], int)
    preview = job["preview_output"]
    if preview is not None:
        assert isinstance(preview["nodeId"], str) and isinstance(preview["mediaType"], str)
        assert preview.get("type", "output") in ("input", "output", "temp")


# -- the store, with entries as the worker writes them -------------------------------------------

def _entry(n: int, prompt_id: str, status: str, outputs: dict, messages: list,
           workflow_id: str | None = None) -> dict:
    extra = {"create_time": 1_700_000_000_000 + n}
    if workflow_id:
        extra["extra_pnginfo"] = {"workflow": {"id": workflow_id, "nodes": []}}
    return {"prompt": [n, prompt_id, {"1": {"class_type": "X", "inputs": {}}}, extra, ["1"]],
            "outputs": outputs,
            "status": {"status_str": "success" if status == "success" else "error",
                       "completed": status == "success", "messages": messages},
            "meta": {}}


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "db.sqlite3")
    yield s
    s.close()


def test_history_jobs_have_statuses_times_errors_and_previews(store):
    ok = _entry(1, "ok", "success", {
        "9": {"images": [{"filename": "a.png", "subfolder": "", "type": "temp"},
                         {"filename": "b.png", "subfolder": "s", "type": "output"}]},
        "7": {"text": ["hi"], "animated": [False]}},
        [["execution_start", {"prompt_id": "ok", "timestamp": 1000}],
         ["execution_success", {"prompt_id": "ok", "timestamp": 3500}]], workflow_id="wf-1")
    # Errors outside a node (validation at run time) carry node_id None: never null here.
    bad = _entry(2, "bad", "error", {}, [
        ["execution_start", {"prompt_id": "bad", "timestamp": 2000}],
        ["execution_error", {"prompt_id": "bad", "node_id": None, "node_type": None,
                             "exception_message": "boom", "exception_type": "E",
                             "traceback": "tb", "executed": [], "timestamp": None}]])
    stopped = _entry(3, "stopped", "interrupted", {}, [
        ["execution_start", {"prompt_id": "stopped"}],
        ["execution_interrupted", {"prompt_id": "stopped", "node_id": "3", "node_type": "K",
                                   "executed": []}]])
    store.history.add("ok", ok, "success")
    store.history.add("bad", bad, "error")
    store.history.add("stopped", stopped, "interrupted")

    jobs, total = store.jobs.listing()
    assert total == 3
    assert [j["id"] for j in jobs] == ["stopped", "bad", "ok"]  # newest first
    for job in jobs:
        assert set(job) == JOB_KEYS
        assert_front_end_shape(job)
    by_id = {j["id"]: j for j in jobs}
    assert by_id["ok"]["status"] == "completed"
    assert by_id["ok"]["create_time"] == 1_700_000_000_001
    assert (by_id["ok"]["execution_start_time"], by_id["ok"]["execution_end_time"]) == (1000, 3500)
    assert by_id["ok"]["outputs_count"] == 3  # two images and a text; "animated" is a flag
    assert by_id["ok"]["previewable_outputs_count"] == 2
    # The saved image is shown, not the temp preview, with ComfyUI's keys for the UI output.
    assert by_id["ok"]["preview_output"] == {"filename": "b.png", "subfolder": "s",
                                             "type": "output", "nodeId": "9",
                                             "mediaType": "images"}
    assert by_id["ok"]["workflow_id"] == "wf-1" and by_id["ok"]["priority"] == 1
    assert by_id["bad"]["status"] == "failed"
    error = by_id["bad"]["execution_error"]
    assert error["node_id"] == "" and error["node_type"] == "" and error["traceback"] == ["tb"]
    assert error["exception_message"] == "boom" and "timestamp" not in error
    assert by_id["stopped"]["status"] == "cancelled"
    assert by_id["stopped"]["execution_error"] is None
    assert by_id["stopped"]["execution_start_time"] is None

    detail = store.jobs.detail("ok")
    assert detail["outputs"] == ok["outputs"]
    assert detail["workflow"] == {"prompt": ok["prompt"][2], "extra_data": ok["prompt"][3]}
    assert detail["execution_status"] == ok["status"]
    assert store.jobs.detail("nope") is None


def test_listing_filters_pages_and_orders_queue_before_history(store):
    for i in range(3):
        store.history.add(f"h{i}", _entry(i, f"h{i}", "success", {}, []), "success")
    store.history.add("e", _entry(9, "e", "error", {}, []), "error")
    for i in range(3):
        store.queue.enqueue(f"q{i}", {}, {"create_time": 5 + i}, [])
    store.queue.claim("w")  # q0 runs
    jobs, total = store.jobs.listing()
    assert total == 7
    assert [j["id"] for j in jobs] == ["q2", "q1", "q0", "e", "h2", "h1", "h0"]
    assert [j["status"] for j in jobs[:3]] == ["pending", "pending", "in_progress"]
    assert jobs[2]["execution_start_time"] is not None and jobs[0]["execution_start_time"] is None
    assert jobs[0]["create_time"] == 7
    ascending, _ = store.jobs.listing(descending=False)
    assert [j["id"] for j in ascending] == ["h0", "h1", "h2", "e", "q0", "q1", "q2"]
    # Pages that straddle the queue and the history.
    page, total = store.jobs.listing(limit=3, offset=2)
    assert [j["id"] for j in page] == ["q0", "e", "h2"] and total == 7
    assert [j["id"] for j in store.jobs.listing(limit=2, offset=6)[0]] == ["h0"]
    assert store.jobs.listing(limit=2, offset=20)[0] == []
    queue, n = store.jobs.listing({"pending", "in_progress"})
    assert [j["id"] for j in queue] == ["q2", "q1", "q0"] and n == 3
    finished, n = store.jobs.listing({"completed", "failed", "cancelled"}, limit=2)
    assert [j["id"] for j in finished] == ["e", "h2"] and n == 4
    assert store.jobs.listing({"failed"})[0][0]["id"] == "e"
    assert store.jobs.status("q0") == "in_progress" and store.jobs.status("q1") == "pending"
    assert store.jobs.status("e") == "failed" and store.jobs.status("zz") is None
    detail = store.jobs.detail("q1")
    assert detail["status"] == "pending" and detail["outputs"] == {}
    assert detail["workflow"] == {"prompt": {}, "extra_data": {"create_time": 6}}


# -- over HTTP ----------------------------------------------------------------------------------

def sleeper(seconds: float) -> dict:
    return {"1": {"class_type": "Sleep", "inputs": {"seconds": seconds}},
            "2": {"class_type": "Sink", "inputs": {"value": ["1", 0]}}}


def chain(value: int) -> dict:
    return {"1": {"class_type": "IntConst", "inputs": {"value": value}},
            "2": {"class_type": "Sink", "inputs": {"value": ["1", 0]}}}


def _wait_status(server: LoomTestServer, job_id: str, status: str, timeout: float = 30) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = server.get(f"/api/jobs/{job_id}")
        if r.status == 200 and r.json()["status"] == status:
            return r.json()
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} never became {status}")


def test_jobs_over_http_list_detail_and_cancel(loom_server: LoomTestServer):
    done = loom_server.run_prompt(chain(3))["prompt"][1]
    workflow = {"id": "wf-42", "nodes": [], "links": []}
    running = loom_server.queue_prompt(sleeper(30), extra_data={
        "extra_pnginfo": {"workflow": workflow}})
    _wait_status(loom_server, running, "in_progress")
    pending = loom_server.queue_prompt(chain(4))

    # What the front end asks for: the queue ...
    body = loom_server.get("/api/jobs?status=in_progress,pending&limit=200&offset=0").json()
    assert body["pagination"] == {"offset": 0, "limit": 200, "total": 2, "has_more": False}
    assert [(j["id"], j["status"]) for j in body["jobs"]] == [(pending, "pending"),
                                                              (running, "in_progress")]
    assert body["jobs"][1]["workflow_id"] == "wf-42"
    for job in body["jobs"]:
        assert_front_end_shape(job)
    # ... and the history.
    body = loom_server.get("/api/jobs?status=completed,failed,cancelled&limit=64&offset=0").json()
    assert [j["id"] for j in body["jobs"]] == [done]
    assert body["jobs"][0]["outputs_count"] == 1
    detail = loom_server.get(f"/api/jobs/{done}").json()
    assert detail["outputs"] == {"2": {"value": [3]}}
    assert detail["workflow"]["prompt"] == chain(3)
    r = loom_server.get("/jobs?limit=1")
    assert r.json()["pagination"] == {"offset": 0, "limit": 1, "total": 3, "has_more": True}
    assert loom_server.get("/jobs").json()["pagination"]["limit"] == 100  # a page by default
    assert loom_server.get("/jobs?limit=5000").json()["pagination"]["limit"] == 1000

    # Cancel: the pending job leaves the queue, the running one is interrupted.
    r = loom_server.post(f"/api/jobs/{pending}/cancel")
    assert r.status == 200 and r.json() == {"id": pending, "cancelled": True}
    assert loom_server.get(f"/api/jobs/{pending}").status == 404
    r = loom_server.post(f"/api/jobs/{running}/cancel")
    assert r.status == 200 and r.json()["cancelled"] is True
    job = _wait_status(loom_server, running, "cancelled")
    assert job["execution_error"] is None and job["workflow"]["extra_data"]["extra_pnginfo"][
        "workflow"] == workflow
    # A finished job: nothing to do; an unknown one: 404.
    assert loom_server.post(f"/api/jobs/{done}/cancel").json() == {"id": done, "cancelled": False}
    r = loom_server.post("/api/jobs/nope/cancel")
    assert r.status == 404 and r.json()["error"]["type"] == "not_found"
    # The next prompt runs normally after the cancels.
    assert loom_server.run_prompt(chain(5))["status"]["status_str"] == "success"


def test_cancel_many_jobs(loom_server: LoomTestServer):
    running = loom_server.queue_prompt(sleeper(30))
    _wait_status(loom_server, running, "in_progress")
    a, b = loom_server.queue_prompt(chain(1)), loom_server.queue_prompt(chain(2))
    r = loom_server.post("/api/jobs/cancel", json={"job_ids": [a, running, "nope"]})
    assert r.status == 200
    assert r.json() == {"cancelled": [a, running], "not_found": ["nope"]}
    _wait_status(loom_server, running, "cancelled")
    assert _wait_status(loom_server, b, "completed")["outputs"] == {"2": {"value": [2]}}
    assert loom_server.get(f"/api/jobs/{a}").status == 404


def test_failed_job_over_http(loom_server: LoomTestServer):
    prompt = {"1": {"class_type": "Fail", "inputs": {"message": "nope"}},
              "2": {"class_type": "Sink", "inputs": {"value": ["1", 0]}}}
    job_id = loom_server.queue_prompt(prompt)
    job = _wait_status(loom_server, job_id, "failed")
    assert_front_end_shape(job)
    assert job["execution_error"]["node_id"] == "1"
    assert job["execution_error"]["node_type"] == "Fail"
    assert "nope" in job["execution_error"]["exception_message"]


@pytest.mark.parametrize("query", ["status=done", "status=pending,bogus", "limit=abc", "limit=0",
                                   "offset=-1", "sort_order=up", "sort_by=name",
                                   "limit=99999999999999999999"])
def test_bad_job_queries_are_400(loom_server_shared: LoomTestServer, query):
    r = loom_server_shared.get(f"/api/jobs?{query}")
    assert r.status == 400, (query, r.text)
    assert r.json()["error"]["type"] == "invalid_request"


@pytest.mark.parametrize("body", [None, [], {"job_ids": "x"}, {"job_ids": [1]}, {}])
def test_bad_cancel_bodies_are_400(loom_server_shared: LoomTestServer, body):
    r = loom_server_shared.post("/api/jobs/cancel", json=body)
    assert r.status == 400, (body, r.text)


def test_unknown_job_is_404(loom_server_shared: LoomTestServer):
    r = loom_server_shared.get("/api/jobs/nope")
    assert r.status == 404 and r.json()["error"]["type"] == "not_found"

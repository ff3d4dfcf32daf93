"""The SQLite store on its own: queue order and claims, recovery, history, migrations."""

from __future__ import annotations

import json
import sqlite3
import threading

import pytest

from loom.store import Store
from loom.store.db import MIGRATIONS, Database
from loom.store.queue import MAX_CRASH_ATTEMPTS, DuplicatePromptId

PROMPT = {"1": {"class_type": "Sink", "inputs": {}}}


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "loom.sqlite3", history_max_items=5)
    yield s
    s.close()


def entry(pid: str) -> dict:
    return {"prompt": [0, pid, PROMPT, {}, ["1"]], "outputs": {"1": {"images": [
        {"filename": f"{pid}.png", "subfolder": "", "type": "output"}]}},
            "status": {"status_str": "success", "completed": True, "messages": []}, "meta": {}}


def enqueue(store, pid, **kw):
    return store.queue.enqueue(pid, PROMPT, {"client_id": "c"}, ["1"], client_id="c", **kw)


def test_numbers_front_and_claim_order(store):
    assert enqueue(store, "a") == 1
    assert enqueue(store, "b") == 2
    assert enqueue(store, "c", front=True) == -3
    assert enqueue(store, "d", number=1.5) == 1.5
    with pytest.raises(DuplicatePromptId):
        enqueue(store, "a")
    order = [store.queue.claim("w").prompt_id for _ in range(4)]
    assert order == ["c", "a", "d", "b"]
    assert store.queue.claim("w") is None
    running, pending = store.queue.listing_json()
    assert len(running) == 4 and pending == []
    first = json.loads(running[0])
    assert first[0] == -3 and first[1] == "c" and first[2] == PROMPT and first[4] == ["1"]
    assert json.loads(running[2])[0] == 1.5


def test_numbers_keep_growing_across_restarts(tmp_path):
    s = Store(tmp_path / "db")
    enqueue(s, "a")
    enqueue(s, "b")
    s.close()
    s = Store(tmp_path / "db")
    assert enqueue(s, "c") == 3
    s.close()


def test_concurrent_claims_take_each_prompt_once(store):
    for i in range(200):
        enqueue(store, f"p{i}")
    claimed: list[str] = []
    lock = threading.Lock()

    def worker(n):
        while (item := store.queue.claim(f"w{n}")) is not None:
            with lock:
                claimed.append(item.prompt_id)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(f"p{i}" for i in range(200))


def test_finish_moves_a_prompt_to_history_in_one_transaction(store):
    enqueue(store, "a")
    store.queue.claim("w")
    store.queue.finish("a", entry("a"), "success")
    assert store.queue.count() == 0
    assert store.history.get("a")["outputs"]["1"]["images"][0]["filename"] == "a.png"
    assert store.history.files("a")[0]["filename"] == "a.png"

    # A failing history write leaves the prompt queued (and the history untouched).
    enqueue(store, "b")
    store.queue.claim("w")
    with pytest.raises(TypeError):
        store.queue.finish("b", {"outputs": {}, "bad": object()}, "success")
    assert store.queue.state_of("b") == "running"
    assert store.history.get("b") is None


def test_recover_requeues_running_prompts_then_gives_up(tmp_path):
    path = tmp_path / "db"
    # Start 1 queues and claims; starts 2..MAX recover it and it crashes again; start MAX+1
    # finds it was running during MAX crashes and gives up on it.
    for attempt in range(1, MAX_CRASH_ATTEMPTS + 2):
        s = Store(path)
        if attempt == 1:
            enqueue(s, "crashy")
            enqueue(s, "waiting")
        given_up = s.queue.recover()
        if attempt <= MAX_CRASH_ATTEMPTS:
            assert given_up == []
            assert s.queue.state_of("crashy") == "pending"
            assert s.queue.items()[0].attempts == attempt - 1
            item = s.queue.claim("w")  # runs ... and the process dies
            assert item.prompt_id == "crashy"
        else:
            assert given_up == ["crashy"]
            assert s.queue.state_of("crashy") is None
            status = s.history.get("crashy")["status"]
            assert status["status_str"] == "error"
            assert "stopped" in status["messages"][0][1]["exception_message"]
            assert s.queue.state_of("waiting") == "pending"
        s.db._conn.close()  # no clean shutdown


def test_release_puts_a_prompt_back(store):
    enqueue(store, "a")
    store.queue.claim("w")
    store.queue.release("a")
    assert store.queue.state_of("a") == "pending"
    assert store.queue.items()[0].attempts == 0


def test_delete_and_clear_touch_pending_only(store):
    for pid in "abc":
        enqueue(store, pid)
    store.queue.claim("w")  # a runs
    assert store.queue.delete_pending(["a", "b", "zz"]) == 1
    assert store.queue.clear_pending() == 1
    assert [i.prompt_id for i in store.queue.items()] == ["a"]


def test_wait_for_work_wakes_on_enqueue(store):
    gen = store.queue.generation
    woke = threading.Event()

    def waiter():
        store.queue.wait_for_work(gen, timeout=5)
        woke.set()

    t = threading.Thread(target=waiter)
    t.start()
    enqueue(store, "a")
    assert woke.wait(2)
    t.join()


def test_listeners_hear_every_change(store):
    calls = []
    store.queue.add_listener(lambda: calls.append(1))
    enqueue(store, "a")
    store.queue.claim("w")
    store.queue.finish("a", entry("a"), "success")
    assert len(calls) == 3


def test_history_paging_and_prune(store):
    for i in range(7):
        store.history.add(f"h{i}", entry(f"h{i}"), "success")
    assert store.history.ids() == [f"h{i}" for i in range(2, 7)]  # max 5 kept
    assert store.history.files("h0") == []
    assert list(json.loads(store.history.listing_json(2))) == ["h5", "h6"]
    assert list(json.loads(store.history.listing_json(2, 1))) == ["h3", "h4"]
    assert list(json.loads(store.history.listing_json(None, 3))) == ["h5", "h6"]
    assert json.loads(store.history.get_json("h6"))["h6"]["status"]["completed"] is True
    assert store.history.get_json("nope") == "{}"
    assert store.history.delete(["h2", "nope"]) == 1
    store.history.clear()
    assert store.history.count() == 0


def test_schema_version_and_newer_databases(tmp_path):
    db = Database(tmp_path / "db")
    assert db.version == len(MIGRATIONS)
    db.close()
    Database(tmp_path / "db").close()  # reopening migrates nothing
    conn = sqlite3.connect(tmp_path / "db")
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(RuntimeError, match="newer"):
        Database(tmp_path / "db")


def test_payload_reaches_the_claim_in_this_process_only(tmp_path):
    s = Store(tmp_path / "db")
    marker = object()
    s.queue.enqueue("a", PROMPT, {}, ["1"], payload=marker)
    s.queue.enqueue("b", PROMPT, {}, ["1"], payload=marker)
    item = s.queue.claim("w")
    assert item.payload is marker and item.prompt == PROMPT
    s.queue.finish(item, {"outputs": {}, "status": {}, "meta": {}}, "success")
    assert s.history.get("a")["prompt"] == [1, "a", PROMPT, {}, ["1"]]
    s.close()
    s = Store(tmp_path / "db")  # restarted: "b" comes from the database
    item = s.queue.claim("w")
    assert item.prompt_id == "b" and item.payload is None and item.prompt == PROMPT
    assert json.loads(item.as_list_json()) == item.as_list()
    s.close()


def test_an_exclusive_store_refuses_a_second_opener(tmp_path):
    from loom.store import StoreInUse

    first = Store(tmp_path / "db", exclusive=True)
    with pytest.raises(StoreInUse, match="another Loom server"):
        Store(tmp_path / "db", exclusive=True)
    first.close()
    Store(tmp_path / "db", exclusive=True).close()

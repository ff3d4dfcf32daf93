"""After a crash: a re-run leaves no orphan images, stale temp files go at start-up, and only a
prompt that is the likely cause of repeated crashes is given up on."""

from __future__ import annotations

import sqlite3
import time

import pytest

from loom.config import REPO_ROOT
from loom.store import Store
from loom.store.queue import MAX_CRASH_ATTEMPTS
from tests.server_fixture import LoomClient, free_port, kill_9, main_process, start_main

PROMPT = {"1": {"class_type": "Sink", "inputs": {}}}


def enqueue(store, pid):
    store.queue.enqueue(pid, PROMPT, {}, ["1"])


def crash(store):
    store.db._conn.close()  # no clean shutdown: whatever was running stays 'running'


def test_only_the_likely_cause_of_repeated_crashes_is_given_up(tmp_path):
    path = tmp_path / "db"
    s = Store(path)
    for pid in ("culprit", "bystander", "later"):
        enqueue(s, pid)
    # Crash 1: two workers were running the culprit and the bystander.
    assert s.queue.claim("w0").prompt_id == "culprit"
    assert s.queue.claim("w1").prompt_id == "bystander"
    crash(s)
    for n in range(2, MAX_CRASH_ATTEMPTS + 2):
        s = Store(path)
        given_up = s.queue.recover()
        if n <= MAX_CRASH_ATTEMPTS:
            assert given_up == []
            # Both were running during a crash: each runs alone now, the culprit first.
            first = s.queue.claim("w0")
            assert first.prompt_id == "culprit"
            assert s.queue.claim("w1") is None  # nothing runs beside it
            crash(s)  # ... and Loom dies again, with the culprit running alone
        else:
            assert given_up == ["culprit"]
            entry = s.history.get("culprit")
            message = entry["status"]["messages"][0][1]["exception_message"]
            assert "likely cause" in message and f"stopped {MAX_CRASH_ATTEMPTS} times" in message
            # The bystander was not given up on: it runs (alone), then the others together.
            item = s.queue.claim("w0")
            assert item.prompt_id == "bystander" and item.attempts == 1
            assert s.queue.claim("w1") is None
            s.queue.finish(item, {"outputs": {}, "status": {}, "meta": {}}, "success")
            assert s.queue.claim("w0").prompt_id == "later"
            s.close()


def test_a_shared_crash_never_gives_up_on_a_prompt(tmp_path):
    path = tmp_path / "db"
    s = Store(path)
    enqueue(s, "a")
    enqueue(s, "b")
    s.queue.claim("w0")
    s.queue.claim("w1")
    with s.db.tx() as c:  # both have been running during earlier crashes already
        c.execute("UPDATE queue SET attempts = ?", (MAX_CRASH_ATTEMPTS,))
    crash(s)
    s = Store(path)
    assert s.queue.recover() == []
    assert {i.prompt_id for i in s.queue.items()} == {"a", "b"}
    s.close()


def image_then_sleep(seconds: float) -> dict:
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32,
                                                         "batch_size": 1, "color": 0x336699}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0],
                                                        "filename_prefix": "crash"}},
            "3": {"class_type": "IntConst", "inputs": {"value": 7}},
            "4": {"class_type": "Sleep", "inputs": {"seconds": seconds, "value": ["3", 0]}},
            "5": {"class_type": "Sink", "inputs": {"value": ["4", 0]}}}


def noted(base) -> list[str]:
    """The files the running prompt's attempt has noted in the database so far."""
    path = base / "user" / "loom.sqlite3"
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return [r[0] for r in conn.execute("SELECT path FROM attempt_files")]
    except sqlite3.OperationalError:  # not created yet
        return []
    finally:
        conn.close()


@pytest.mark.slow
def test_a_rerun_after_kill_9_leaves_no_orphans_and_stale_temp_files_go(tmp_path):
    port = free_port()
    args = ("--builtin-nodes-dir", str(REPO_ROOT / "nodes"))
    output = tmp_path / "output"
    with main_process(tmp_path, port, *args) as (proc, client):
        pid = client.queue_prompt(image_then_sleep(2.5))
        deadline = time.monotonic() + 60
        while not noted(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        [first] = list(output.glob("crash_*.png"))  # written and noted; the prompt still sleeps
        assert noted(tmp_path) == [str(first)]
        kill_9(proc)
    # What a killed atomic write leaves behind, in output/ (also in a subfolder) and input/.
    (output / "sub").mkdir(exist_ok=True)
    stale = [output / ".crash.0123456789ab.png.tmp", output / "sub" / ".crash.fedcba987654.png.tmp",
             output / ".lat.0123456789ab.latent.tmp", tmp_path / "input" / ".up.png.ab_cd123.tmp"]
    for path in stale:
        path.write_bytes(b"half")
    keep = output / ".my-notes.tmp"  # not a name Loom writes: left alone
    keep.write_text("mine")

    proc = start_main(tmp_path, port, *args)
    client = LoomClient(f"http://127.0.0.1:{port}")
    try:
        entry = client.wait_history(pid, timeout=60)
        assert entry["status"]["status_str"] == "success"
        [saved] = entry["outputs"]["2"]["images"]
        images = sorted(p.name for p in output.glob("crash_*.png"))
        assert images == [saved["filename"]]  # the killed run's image is gone, not orphaned
        assert saved["filename"] == first.name  # ...and the re-run took its name again
        assert not any(p.exists() for p in stale)
        assert keep.read_text() == "mine"
    finally:
        client.close()
        proc.kill()
        proc.wait(10)

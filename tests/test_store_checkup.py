"""A damaged or foreign database file: Loom says what is wrong and where, changes nothing, and
with --reset-damaged-db keeps the file aside and starts fresh with what can still be read."""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import subprocess
import sys

import pytest

from loom.config import REPO_ROOT
from loom.store import DatabaseProblem, Store
from loom.store.checkup import APPLICATION_ID
from loom.store.db import MIGRATIONS
from tests.server_fixture import free_port

PAGE = 4096
WORKFLOWS = 200


def loom_db(path):
    """A Loom database holding a history entry, settings and WORKFLOWS saved workflows."""
    s = Store(path)
    for i in range(WORKFLOWS):
        s.userdata.put(f"workflows/w{i:03}.json", b'{"nodes": [%d]}' % i + b" " * 3000)
    s.userdata.update_settings({"Comfy.Theme": "dark"})
    s.queue.enqueue("p1", {"1": {"class_type": "Sink", "inputs": {}}}, {}, ["1"])
    s.close()  # checkpoints the WAL into the file
    return path


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def damage(path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "early-garbage":  # pages 2..4: tables' roots and the first rows
        data[PAGE: 4 * PAGE] = os.urandom(3 * PAGE)
    elif how == "late-garbage":  # the last pages: the newest rows
        data[-3 * PAGE:] = os.urandom(3 * PAGE)
    path.write_bytes(bytes(data))


def foreign_db(path, how: str) -> None:
    conn = sqlite3.connect(path)
    if how == "conflicting-table":  # another program's 'queue' table, no schema version
        conn.execute("CREATE TABLE queue (id INTEGER PRIMARY KEY, job TEXT)")
        conn.execute("INSERT INTO queue (job) VALUES ('theirs')")
    elif how == "other-application":
        conn.execute("PRAGMA application_id = 1234")
        conn.execute("PRAGMA user_version = 1")
        conn.execute("CREATE TABLE notes (body TEXT)")
    elif how == "loom-version-wrong-tables":  # claims Loom's version 1, lacks its tables
        conn.execute("PRAGMA user_version = 1")
        conn.execute("CREATE TABLE meta (k TEXT)")
    conn.commit()
    conn.close()


def make_case(tmp_path, case: str):
    path = tmp_path / "user" / "loom.sqlite3"
    path.parent.mkdir(parents=True)
    if case == "text-file":
        path.write_text("these are my notes, not a database\n" * 50)
    elif case == "directory":
        path.mkdir()
        (path / "keep.txt").write_text("mine")
    elif case in ("truncated", "early-garbage", "late-garbage"):
        damage(loom_db(path), case)
    else:
        foreign_db(path, case)
    return path


CASES = {
    "text-file": "is not a SQLite database",
    "directory": "is a directory",
    "truncated": r"is damaged: .*the file has [\d,]+ bytes where its header says [\d,]+: cut short",
    "early-garbage": "is damaged",
    "late-garbage": "is damaged: .*unreadable: userdata after [0-9]+ rows",
    "conflicting-table": r"is not a Loom database: it holds tables Loom did not create \(queue\)",
    "other-application": "belongs to another application",
    "loom-version-wrong-tables": "is not a Loom database",
}


def listing(folder) -> dict:
    return {p.name: (digest(p) if p.is_file() else "dir") for p in folder.iterdir()}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_database_is_refused_with_the_reason_and_left_as_it_was(tmp_path, case):
    path = make_case(tmp_path, case)
    before = listing(path.parent)
    with pytest.raises(DatabaseProblem) as info:
        Store(path, exclusive=True)
    message = str(info.value)
    assert str(path) in message and re.search(CASES[case], message)
    assert "--reset-damaged-db" in message and "has not changed it" in message
    # Nothing changed: no WAL switched on, no tables added (read-only SQLite may add an
    # empty -shm/-wal next to a file already in WAL mode, and never touches the file itself).
    after = listing(path.parent)
    for name, value in before.items():
        assert after[name] == value, name
    assert set(after) - set(before) <= {"loom.sqlite3.lock", "loom.sqlite3-shm", "loom.sqlite3-wal"}


@pytest.mark.parametrize("case", list(CASES))
def test_reset_sets_the_file_aside_and_starts_fresh(tmp_path, case):
    path = make_case(tmp_path, case)
    kept = digest(path) if path.is_file() else None
    s = Store(path, exclusive=True, reset_damaged=True)
    try:
        aside = [p for p in path.parent.iterdir() if p.name.startswith("loom.sqlite3.damaged-")
                 and not p.name.endswith(("-wal", "-shm"))]
        assert len(aside) == 1
        if kept is not None:
            assert digest(aside[0]) == kept  # the user's file, byte for byte
        else:
            assert (aside[0] / "keep.txt").read_text() == "mine"
        s.userdata.put("workflows/new.json", b"{}")  # the fresh database works
        assert s.userdata.get("workflows/new.json") == b"{}"
        recovered = [f"workflows/{f.path}" for f in s.userdata.list("workflows")]
        if case in ("truncated", "late-garbage"):
            # What SQLite could still read came back, intact.
            assert len(recovered) > WORKFLOWS // 4
            for name in recovered[:-1]:
                if name != "workflows/new.json":
                    i = int(name[len("workflows/w"):-len(".json")])
                    assert s.userdata.get(name).startswith(b'{"nodes": [%d]}' % i)
        if case == "late-garbage":
            assert s.userdata.settings() == {"Comfy.Theme": "dark"}
            assert [i.prompt_id for i in s.queue.items()] == ["p1"]
        if case not in ("truncated", "early-garbage", "late-garbage"):
            assert recovered == ["workflows/new.json"]
    finally:
        s.close()
    # A healthy database is left alone by the flag.
    Store(path, reset_damaged=True).close()
    assert len([p for p in path.parent.iterdir() if ".damaged-" in p.name
                and not p.name.endswith(("-wal", "-shm"))]) == 1


def test_a_database_of_schema_version_1_is_still_loom_s(tmp_path):
    """Files written before Loom marked them (application_id 0, user_version 1) open and are
    marked; an empty SQLite file is set up as new."""
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0] + "\nPRAGMA user_version = 1;")
    conn.execute("INSERT INTO settings VALUES ('default', 'a', '1')")
    conn.commit()
    conn.close()
    s = Store(path)
    assert s.userdata.settings() == {"a": 1}
    s.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    conn.close()
    empty = tmp_path / "empty.sqlite3"
    sqlite3.connect(empty).close()
    Store(empty).close()


def test_main_refuses_to_start_with_a_clear_message(tmp_path):
    path = make_case(tmp_path, "text-file")
    before = path.read_bytes()
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "main.py"), "--base-dir", str(tmp_path),
                           "--port", str(free_port()), "--disable-custom-nodes", "--builtin-nodes-dir",
                           str(tmp_path / "none")], capture_output=True, text=True, timeout=120,
                          cwd=REPO_ROOT)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert f"the database {path} is not a SQLite database" in proc.stderr
    assert "--reset-damaged-db" in proc.stderr
    assert path.read_bytes() == before


def test_damage_found_while_serving_is_a_clear_503(loom_server, monkeypatch):
    def malformed(*args, **kwargs):
        raise sqlite3.DatabaseError("database disk image is malformed")

    monkeypatch.setattr(loom_server.state.store.userdata, "get", malformed)
    r = loom_server.get("/userdata/workflows%2Fa.json")
    assert r.status == 503
    assert r.json()["error"]["type"] == "database_damaged"
    assert "restart Loom" in r.json()["error"]["message"]

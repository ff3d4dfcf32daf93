"""Saved workflows and settings in the store; atomic file writes."""

from __future__ import annotations

import pytest

from loom.store import Store
from loom.store.files import atomic_write
from loom.store.userdata import UserFileExists, UserPathError, clean_path


@pytest.fixture
def data(tmp_path):
    s = Store(tmp_path / "db")
    yield s.userdata
    s.close()


def test_put_get_list_move_delete(data):
    data.put("workflows/a.json", b"{}")
    data.put("workflows/deep/b.json", b"[1]")
    data.put("other/c.txt", b"c")
    assert data.get("workflows/a.json") == b"{}"
    assert [f.path for f in data.list("workflows")] == ["a.json", "deep/b.json"]
    assert [f.path for f in data.list("workflows", recurse=False)] == ["a.json"]
    assert [f.path for f in data.list("")] == ["other/c.txt", "workflows/a.json",
                                              "workflows/deep/b.json"]
    assert data.list("workflow") == []  # a prefix of a folder name is not the folder
    with pytest.raises(UserFileExists):
        data.put("workflows/a.json", b"new", overwrite=False)
    created = data.info("workflows/a.json").created
    data.put("workflows/a.json", b"new!")
    info = data.info("workflows/a.json")
    assert info.size == 4 and info.created == created and info.modified >= created

    assert data.move("workflows/a.json", "workflows/z.json").path == "workflows/z.json"
    assert data.get("workflows/a.json") is None
    with pytest.raises(UserFileExists):
        data.move("workflows/z.json", "other/c.txt", overwrite=False)
    assert data.move("missing.json", "x.json") is None
    with pytest.raises(UserPathError):
        data.put("workflows", b"x")  # a folder
    assert data.delete("workflows/z.json") and not data.delete("workflows/z.json")
    entries = data.entries("workflows")
    assert [(e["name"], e["type"]) for e in entries] == [("deep", "directory")]


@pytest.mark.parametrize("bad", ["", "/abs", "a/../b", "..", "a\\b", "a\nb", "x" * 2000])
def test_bad_paths(bad):
    with pytest.raises(UserPathError):
        clean_path(bad)


def test_paths_are_normalised():
    assert clean_path("./workflows//a.json") == "workflows/a.json"


def test_settings(data):
    assert data.settings() == {}
    data.update_settings({"a": 1, "b": {"c": [1, 2]}})
    data.update_settings({"a": "two"})
    assert data.settings() == {"a": "two", "b": {"c": [1, 2]}}
    assert data.setting("b") == {"c": [1, 2]} and data.setting("zz") is None


def test_atomic_write(tmp_path):
    target = tmp_path / "out.png"
    atomic_write(target, b"one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    with pytest.raises(FileExistsError):
        atomic_write(target, b"three", overwrite=False)
    assert target.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]

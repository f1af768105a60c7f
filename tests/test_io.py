"""Atomic writes leave either the old content or the new, never a partial file or folder."""
from __future__ import annotations

import json

import pytest

from eval.io import atomic_dir, atomic_write_json, atomic_write_text


def test_atomic_write_json(tmp_path):
    path = atomic_write_json(tmp_path / "sub" / "r.json", {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("cannot serialise")


def test_failed_write_keeps_old_file(tmp_path):
    path = atomic_write_text(tmp_path / "r.json", "old")
    with pytest.raises(RuntimeError, match="cannot serialise"):
        atomic_write_json(path, {"bad": Unprintable()})
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_atomic_dir_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    assert [p.name for p in target.iterdir()] == ["a"]
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "b").write_text("2")
            raise RuntimeError("crash mid-write")
    assert [p.name for p in target.iterdir()] == ["a"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]

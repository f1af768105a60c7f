"""Atomic writes leave either the old content or the new, never a partial file or folder, with the
user's umask; output paths are checked before any work and leave nothing behind."""
from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from pathlib import Path

import pytest

from curate.core.errors import BadInputError
from curate.core.io import (atomic_dir, atomic_write_json, atomic_write_text, check_output, check_writable_dir,
                     guarded_output, read_yaml)


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


# ---- permissions follow the umask ----------------------------------------------------------------

@pytest.fixture
def umask():
    """Set the process umask for a test (and the cached value curate.core.io reads), then restore both."""
    from curate.core.io import process_umask

    old = os.umask(0o022)

    def set_mask(mask: int) -> None:
        os.umask(mask)
        process_umask.cache_clear()

    yield set_mask
    os.umask(old)
    process_umask.cache_clear()


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700),
                                                       (0o002, 0o664, 0o775)])
def test_outputs_follow_the_umask(tmp_path, umask, mask, file_mode, dir_mode):
    from curate.core.io import process_umask

    umask(mask)
    assert process_umask() == mask
    path = atomic_write_text(tmp_path / "r.txt", "x")
    assert stat.S_IMODE(path.stat().st_mode) == file_mode
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "a").write_text("1")
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == dir_mode


# ---- early output checks ------------------------------------------------------------------------

def test_check_writable_dir_leaves_nothing_behind(tmp_path):
    assert check_writable_dir(tmp_path / "a" / "b" / "c") == tmp_path / "a" / "b" / "c"
    assert list(tmp_path.iterdir()) == []  # the folders it made to probe are gone
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_text("1")
    check_writable_dir(tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep"]  # no probe file left


@pytest.mark.parametrize("where, message", [
    ("{tmp}/afile/sub", "afile is a file, not a folder"),
    ("{tmp}/afile", "afile is a file, not a folder"),
    ("/proc/curatekit-probe/x", "cannot write there"),
    ("/sys/curatekit-probe", "cannot write there"),
])
def test_check_writable_dir_refuses(tmp_path, where, message):
    (tmp_path / "afile").write_text("x")
    path = where.format(tmp=tmp_path)
    with pytest.raises(BadInputError, match=message) as err:
        check_writable_dir(path, "--out")
    assert str(err.value).startswith(f"--out {path}: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"] and (tmp_path / "afile").read_text() == "x"
    assert not Path(path).is_dir()


def test_read_only_file_system_is_named(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path / "new"))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(BadInputError, match=r"--out .*new: cannot write there \(Read-only file system\)"):
        check_writable_dir(tmp_path / "new", "--out")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("record", ["[]", "not json", '{"command": "select cdas"}'])
def test_a_malformed_run_record_is_one_line_not_a_traceback(tmp_path, record):
    # Adversarial run.json files (a list, garbage, a record without a config) must refuse the
    # folder with the one-line message, never crash while describing the difference.
    from curate.core.runs import claim_output

    (tmp_path / "run.json").write_text(record)
    with pytest.raises(BadInputError, match="--out .*(holds no curatekit run|another configuration)"):
        claim_output(tmp_path, "select cdas", {"seed": 0})
    assert claim_output(tmp_path, "select cdas", {"seed": 0}, overwrite=True) == tmp_path


def test_check_output_kinds(tmp_path):
    (tmp_path / "dir").mkdir()
    with pytest.raises(BadInputError, match="is a folder; give a file name"):
        check_output(tmp_path / "dir", "--out", "file")
    assert check_output(tmp_path / "dir", "--out", "dataset") == tmp_path / "dir"  # a save_to_disk folder
    assert check_output(tmp_path / "new" / "sel.jsonl", "--out", "dataset") == tmp_path / "new" / "sel.jsonl"
    (tmp_path / "f.json").write_text("{}")
    with pytest.raises(BadInputError, match="is a file, not a folder"):
        check_output(tmp_path / "f.json", "--out", "dir")
    with pytest.raises(BadInputError, match="names an output folder, not a .jsonl file"):
        check_output(tmp_path / "sel.jsonl", "--out", "dir")
    assert check_output(tmp_path / "runs" / "v1.2", "--out", "dir") == tmp_path / "runs" / "v1.2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "f.json"]


def test_guarded_output_removes_what_bad_input_left(tmp_path):
    out = tmp_path / "new" / "out"
    with pytest.raises(BadInputError), guarded_output(out):
        atomic_write_text(out / "partial.json", "{}")
        raise BadInputError("found late")
    assert list(tmp_path.iterdir()) == []
    # A bug keeps what was written (caches let a rerun resume) ...
    with pytest.raises(RuntimeError), guarded_output(out):
        atomic_write_text(out / "cache.jsonl", "")
        raise RuntimeError("bug")
    assert (out / "cache.jsonl").exists()
    # ... and an --out that was there before is left alone.
    with pytest.raises(BadInputError), guarded_output(out):
        raise BadInputError("late")
    assert (out / "cache.jsonl").exists()


def test_read_yaml(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_bytes(b"\xef\xbb\xbfa: 1\n")  # a UTF-8 BOM
    assert read_yaml(path) == {"a": 1}
    path.write_text("[1, 2]\n")
    with pytest.raises(BadInputError, match="expected a mapping of fields, got list"):
        read_yaml(path)
    path.write_text("a: [1\n")
    with pytest.raises(BadInputError, match="not valid YAML"):
        read_yaml(path)
    with pytest.raises(BadInputError, match="--config .*missing.yaml: No such file or directory"):
        read_yaml(tmp_path / "missing.yaml", "--config")


def test_data_suffixes_match_the_loaders():
    from curate.llm.data import FILE_BUILDERS
    from curate.core.io import DATA_FILE_SUFFIXES

    assert set(FILE_BUILDERS) == set(DATA_FILE_SUFFIXES)

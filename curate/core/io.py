"""Output paths: atomic writes (a reader never sees a half-written file or folder) with the user's
umask, early checks that an output can be written, and reading user-given YAML."""
from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from curate.core.errors import BadInputError, first_line

# Suffixes written as one data file (else a save_to_disk folder); curate.llm.data reads the same ones.
DATA_FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
# An output folder named like a data file is a mistake worth a message (not "runs/v1.2").
DATA_LIKE_SUFFIXES = (*DATA_FILE_SUFFIXES, ".jsonlines", ".ndjson", ".arrow", ".tsv", ".txt")


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; on success it replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~process_umask())  # mkstemp makes 0600; outputs follow the umask
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~process_umask())  # mkdtemp makes 0700
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def is_main_rank() -> bool:
    """Rank 0 under ``accelerate launch`` (or torchrun), and every single process."""
    return int(os.environ.get("RANK", "0")) == 0


@contextmanager
def main_rank_dir(path: str | os.PathLike) -> Iterator[Path]:
    """:func:`atomic_dir` on the first rank; a throw-away folder on the others (under ``accelerate
    launch`` every rank trains, the first one saves)."""
    if is_main_rank():
        with atomic_dir(path) as tmp:
            yield tmp
    else:
        with tempfile.TemporaryDirectory() as tmp:
            yield Path(tmp)


def save_png(fig: Any, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Write a matplotlib figure as PNG atomically, then close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return path


@functools.cache
def process_umask() -> int:
    """The process umask, read once: from /proc (no side effect), else by setting and restoring it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# ---- early output checks: fail before any work, leave nothing behind ----------------------------

def _nearest_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists."""
    return next(p for p in (path, *path.parents) if p.exists() or p.is_symlink())


def _first_missing(path: Path) -> Path | None:
    """The topmost of ``path`` and its ancestors that does not exist yet (None: ``path`` exists)."""
    nearest = _nearest_existing(path)
    return None if nearest == path else next(p for p in (path, *path.parents) if p.parent == nearest)


def check_writable_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Fail with :class:`BadInputError` unless ``path`` is, or can be made, a folder that takes new
    files: not below a file, not on a read-only file system, writable. Probes by creating and
    removing a uniquely named file in ``path`` or its nearest existing ancestor, so it creates
    nothing else and is safe while other ranks of the same launch check the same path."""
    path = Path(path).expanduser()
    _check_dir(path, f"{flag} {path}")
    return path


def _check_dir(path: Path, label: str) -> None:
    """:func:`check_writable_dir` of ``path``; errors start with ``label`` (the flag and its value)."""
    try:
        existing = _nearest_existing(path)
        if not existing.is_dir():
            raise BadInputError(f"{label}: {existing} is a file, not a folder")
        fd, probe = tempfile.mkstemp(prefix=".curatekit-probe-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise BadInputError(f"{label}: cannot write there ({err.strerror or first_line(err)})") from err


def output_kind(path: str | os.PathLike, kind: str) -> str:
    """``dir`` or ``file``; ``dataset`` outputs are files with a data suffix, else folders."""
    if kind == "dataset":
        return "file" if Path(path).suffix.lower() in DATA_FILE_SUFFIXES else "dir"
    if kind not in ("dir", "file"):
        raise ValueError(f"unknown output kind '{kind}'")
    return kind


def check_output(path: str | os.PathLike, flag: str = "--out", kind: str = "dir") -> Path:
    """:func:`check_writable_dir` for a folder output, or for a file output's folder (and the file
    must not be a folder)."""
    path = Path(path).expanduser()
    if kind == "dataset" and path.suffix and path.suffix.lower() not in DATA_FILE_SUFFIXES:
        raise BadInputError(f"{flag} {path}: unknown data file suffix '{path.suffix}' (use "
                            f"{', '.join(DATA_FILE_SUFFIXES)}, or no suffix for a save_to_disk folder)")
    if output_kind(path, kind) == "dir":
        if kind == "dir" and path.suffix.lower() in DATA_LIKE_SUFFIXES and not path.exists():
            raise BadInputError(f"{flag} {path}: names an output folder, not a {path.suffix} file "
                                f"(drop the suffix; the folder holds the files)")
        return check_writable_dir(path, flag)
    if path.is_dir():
        raise BadInputError(f"{flag} {path}: is a folder; give a file name")
    _check_dir(path.parent, f"{flag} {path}")
    return path


@contextmanager
def guarded_output(path: str | os.PathLike, flag: str = "--out", kind: str = "dir") -> Iterator[Path]:
    """Check ``path`` (:func:`check_output`), then run the block; when bad input stops it, remove
    what the block created at ``path`` if nothing was there before (interrupts and bugs keep it:
    caches there let a rerun resume)."""
    path = check_output(path, flag, kind)
    created = _first_missing(path)
    try:
        yield path
    except BadInputError:
        if created is not None and (created.exists() or created.is_symlink()):
            if created.is_dir() and not created.is_symlink():
                shutil.rmtree(created, ignore_errors=True)
            else:
                created.unlink(missing_ok=True)
        raise


# ---- user-given config files ---------------------------------------------------------------------

def read_yaml(path: str | os.PathLike, flag: str = "--config") -> dict[str, Any]:
    """A YAML mapping from a user's file (a UTF-8 BOM is fine); bad files raise :class:`BadInputError`."""
    import yaml

    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise BadInputError(f"{flag} {path}: {err.strerror or first_line(err)}") from err
    except UnicodeDecodeError as err:
        raise BadInputError(f"{flag} {path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise BadInputError(f"{flag} {path}: not valid YAML: {getattr(err, 'problem', None) or err}{where}") from err
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise BadInputError(f"{flag} {path}: expected a mapping of fields, got {type(config).__name__}")
    return config

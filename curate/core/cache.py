"""Resumable chunked work: results are appended to a JSONL cache one chunk at a time, keyed by
everything that decides them (seeds included), so an interrupted job resumes at its first
unfinished chunk. Random draws inside a chunk are seeded from (config seed, chunk index) with
:func:`derive_seed`, so a chunk computed after a restart is the one an uninterrupted run computes.

Test hook: ``CURATEKIT_KILL_AFTER=<stage>:<n>`` makes :func:`kill_point` SIGKILL the process once
stage ``<stage>`` reaches ``<n>`` (for :func:`run_chunked`: after its n-th chunk written in this
process), so tests interrupt a run for real at a deterministic point. Unset, it does nothing."""
from __future__ import annotations

import hashlib
import json
import os
import signal
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypeVar

from tqdm.auto import tqdm

from curate.core.io import atomic_write_text

T = TypeVar("T")
R = TypeVar("R")


def digest(*parts: str, length: int = 16) -> str:
    """A short hex digest of string parts (a cache key)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:length]


def derive_seed(seed: int, *parts: object) -> int:
    """A 31-bit seed fixed by ``seed`` and ``parts`` (e.g. a stage name and a chunk index): distinct
    streams for distinct parts, the same on every run and in every process."""
    return int(digest(str(seed), *map(str, parts), length=8), 16) & 0x7FFFFFFF


KILL_ENV = "CURATEKIT_KILL_AFTER"


def kill_point(stage: str, count: int) -> None:
    """The test hook (see the module docstring): SIGKILL this process when ``$CURATEKIT_KILL_AFTER``
    is ``<stage>:<count>``."""
    spec = os.environ.get(KILL_ENV)
    if spec and spec.rpartition(":")[::2] == (stage, str(count)):
        os.kill(os.getpid(), signal.SIGKILL)


def model_fingerprint(model: str | os.PathLike | None) -> str:
    """A local model folder by its files' names, sizes and modification times; a hub id by name."""
    if model is None:
        return ""
    path = Path(model)
    if not path.is_dir():
        return str(model)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return json.dumps([(str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in files])


def _read(cache: Path) -> dict[int, Any]:
    done: dict[int, Any] = {}
    if cache.exists():
        for line in cache.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
                done[int(record["chunk"])] = record["results"]
            except (ValueError, KeyError, TypeError):
                continue  # a line cut off by an interruption
    return done


def run_chunked(
    items: Sequence[T],
    compute: Callable[[int, Sequence[T]], list[R]],
    cache: Path | None,
    *,
    chunk_size: int,
    encode: Callable[[R], Any] = lambda r: r,
    decode: Callable[[Any], R] = lambda r: r,
    resume: bool = True,
    desc: str = "chunks",
    unit: str = "item",
    progress: bool = True,
    stage: str | None = None,
) -> list[R]:
    """``compute(chunk_index, chunk_items)`` for every chunk of ``items``, in order, each finished
    chunk appended to ``cache`` (``None``: no cache) and read back instead of recomputed later.
    ``stage`` (default ``desc``) names the work for :func:`kill_point`."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    done = _read(cache) if cache is not None and resume else {}
    if cache is not None:  # rewrite the valid part; a half-written last line is dropped
        atomic_write_text(cache, "".join(json.dumps({"chunk": c, "results": v}) + "\n" for c, v in sorted(done.items())))
    results: list[R] = []
    written = 0
    with ExitStack() as stack:
        f = stack.enter_context(open(cache, "a", encoding="utf-8")) if cache is not None else None
        bar = stack.enter_context(tqdm(total=len(items), desc=desc, unit=unit, disable=not progress))
        for c, start in enumerate(range(0, len(items), chunk_size)):
            chunk = items[start:start + chunk_size]
            if c in done and len(done[c]) == len(chunk):
                out = [decode(r) for r in done[c]]
            else:
                out = compute(c, chunk)
                if len(out) != len(chunk):
                    raise RuntimeError(f"chunk {c}: {len(out)} results for {len(chunk)} items")
                if f is not None:
                    f.write(json.dumps({"chunk": c, "results": [encode(r) for r in out]}) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
                written += 1
                kill_point(stage or desc, written)
            results.extend(out)
            bar.update(len(chunk))
    return results


def default_cache_dir() -> Path:
    """``$CURATEKIT_CACHE``, else ``~/.cache/curatekit``."""
    return Path(os.environ.get("CURATEKIT_CACHE") or Path.home() / ".cache" / "curatekit")

"""A command's output folder as a run: ``run.json`` names the configuration that wrote it, so a
rerun with the same configuration resumes there and one with another configuration is refused
(unless ``--overwrite``) instead of mixing or silently replacing results; ``run.log`` keeps the
stage lines ("[2/5] rollouts: 200 prompts x 8") and the outcome. Stage lines also go to stderr."""
from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from curate.core.errors import BadInputError
from curate.core.io import atomic_write_json

RUN_FILE = "run.json"
LOG_FILE = "run.log"
logger = logging.getLogger("curatekit")


def claim_output(out: str | Path, command: str, config: Mapping[str, Any], overwrite: bool = False,
                 flag: str = "--out") -> Path:
    """Before any work: ``out`` must be missing, empty, or hold a run of this very ``command`` and
    ``config`` (a resume); anything else needs ``overwrite``. Then ``run.json`` records the run."""
    out = Path(out)
    record = {"command": command, "config": json.loads(json.dumps(dict(config), sort_keys=True, default=str))}
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        previous = _read(out / RUN_FILE)
        if previous is None:
            raise BadInputError(f"{flag} {out}: the folder is not empty and holds no curatekit run ({RUN_FILE}); "
                                "choose another folder or pass --overwrite")
        if previous != record:
            raise BadInputError(f"{flag} {out}: holds a run of another configuration ({_difference(previous, record)}); "
                                "choose another folder or pass --overwrite")
    atomic_write_json(out / RUN_FILE, record)
    return out


def _read(path: Path) -> dict[str, Any] | None:
    """The run record, or None when it is missing, unreadable or not a record (a hand-edited file)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _difference(previous: Mapping[str, Any], record: Mapping[str, Any]) -> str:
    if previous.get("command") != record["command"]:
        return f"command: {previous.get('command')!r} -> {record['command']!r}"
    old, new = previous.get("config") or {}, record["config"]
    changed = [key for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
    return ", ".join(f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in changed[:3]) or "unreadable record"


_depth = [0]  # stage lines of work nested inside a stage (a pipeline's scoring) are indented


def stage(step: int, total: int, text: str) -> None:
    """One stage line, e.g. ``[2/5] rollouts: 200 prompts x 8`` (stderr and the run's log)."""
    logger.info("%s[%d/%d] %s", "    " * _depth[0], step, total, text)


@contextmanager
def nested() -> Iterator[None]:
    """Stage lines written inside the block are one level deeper."""
    _depth[0] += 1
    try:
        yield
    finally:
        _depth[0] -= 1


class Stages:
    """Numbered stage lines: ``stages = Stages(5); stages("rollouts: 200 prompts x 8")``."""

    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0

    def __call__(self, text: str) -> None:
        self.done += 1
        stage(self.done, max(self.total, self.done), text)


@contextmanager
def run_log(out: str | Path) -> Iterator[Path]:
    """While the block runs, curatekit's log lines (stage lines, warnings) go to stderr and, with
    times, to ``out/run.log``, which ends with the outcome."""
    path = Path(out) / LOG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(path, encoding="utf-8")
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    to_stderr = logging.StreamHandler(sys.stderr)
    to_stderr.setFormatter(logging.Formatter("%(message)s"))
    level, propagate = logger.level, logger.propagate
    logger.addHandler(to_file), logger.addHandler(to_stderr)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    started = time.monotonic()
    to_file.stream.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} started: {' '.join(sys.argv)}\n")
    outcome = "failed"
    try:
        yield path
        outcome = "done"
    finally:
        to_file.stream.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {outcome} in {time.monotonic() - started:.1f} s\n")
        for handler in (to_file, to_stderr):
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(level)
        logger.propagate = propagate

"""Shared by the benchmark scripts: machine facts, a printed table, and an atomic JSON report."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"date": _dt.date.today().isoformat(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__,
            "cpus": len(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(), "gpu": gpu}


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def report(name: str, command: str, header: Sequence[str], rows: Sequence[Sequence[Any]],
           extra: dict[str, Any] | None = None, out: str | None = None) -> Path:
    """Print the table (Markdown, ready for benchmarks/README.md) and write the JSON report."""
    from eval.io import atomic_write_json

    facts = machine()
    print(f"\n{name} - {facts['date']}, {facts['cpus']} CPUs"
          + (f", {facts['gpu']}" if facts["gpu"] else "") + f", torch {facts['torch']}")
    print(f"command: {command}\n")
    print(markdown_table(header, rows))
    path = Path(out) if out else RESULTS / f"{name}.json"
    atomic_write_json(path, {"benchmark": name, "command": command, "machine": facts,
                             "rows": [dict(zip(header, row)) for row in rows], **(extra or {})})
    print(f"\nJSON: {path}")
    return path

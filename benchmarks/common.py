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


def mean_std(values: Sequence[float]) -> str:
    """``values`` (shares) as "mean ± population std" in percent; "-" when there are none."""
    import statistics

    if not values:
        return "-"
    return f"{100 * statistics.fmean(values):.1f} ± {100 * statistics.pstdev(values):.1f}"


def paired_interval(values: Sequence[float], base: Sequence[float]) -> str:
    """The mean of the paired differences ``values - base`` (shares, per seed) in points, with its
    95% Student-t interval over the pairs: "+1.2 [-0.5, +2.9]"."""
    import statistics

    from scipy import stats

    diffs = [100 * (a - b) for a, b in zip(values, base)]
    if not diffs:
        return "-"
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return f"{mean:+.1f}"
    half = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / len(diffs) ** 0.5
    return f"{mean:+.1f} [{mean - half:+.1f}, {mean + half:+.1f}]"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:  # a "|" inside a cell would split it: escaped
        return (f"{value:.3g}" if isinstance(value, float) else str(value)).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def report(name: str, command: str, header: Sequence[str], rows: Sequence[Sequence[Any]],
           extra: dict[str, Any] | None = None, out: str | None = None) -> Path:
    """Print the table (Markdown, ready for benchmarks/README.md) and write the JSON report."""
    from curate.core.io import atomic_write_json

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


# Randomly initialised model shapes for benchmarks (the tiny tokenizer's ids fit every vocabulary).
SHAPES: dict[str, dict[str, Any]] = {
    "tiny": {},
    "qwen2-0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                       intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True),
}


def tiny_model_dir(folder: Path) -> Path:
    """The tiny model and tokenizer (trained on 1,000 GSM8K train rows), saved under ``folder``."""
    import json

    from curate.llm.data import default_data_dir
    from curate.llm.tiny import build_tiny_model

    lines = (default_data_dir() / "gsm8k" / "train.jsonl").read_text().splitlines()[:1000]
    rows = [json.loads(line) for line in lines]
    return build_tiny_model(folder / "tiny", [r["question"] + "\n" + r["answer"] for r in rows])


def build_model(shape: str, dtype: str, model_dir: str | Path):
    """(model, tokenizer, device): the tiny model from ``model_dir``, or a random model of ``shape``
    with the tiny tokenizer, on the GPU when there is one."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from curate.core.device import resolve_device, resolve_dtype
    from curate.llm.models import load_model, load_tokenizer

    if shape not in SHAPES:
        raise SystemExit(f"unknown shape '{shape}'; choose one of {', '.join(SHAPES)}")
    tokenizer = load_tokenizer(model_dir, padding_side="right")
    device = resolve_device("auto")
    torch_dtype = resolve_dtype(dtype, device)
    if shape == "tiny":
        return load_model(model_dir, dtype=torch_dtype, device=device), tokenizer, device
    config = Qwen2Config(**SHAPES[shape], head_dim=64, max_position_embeddings=4096,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype, attn_implementation="sdpa")
    return model.to(device), tokenizer, device

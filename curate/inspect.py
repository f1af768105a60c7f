"""Dataset inspection: rows, columns and length statistics of the prompt/response columns."""
from __future__ import annotations

from typing import Any

import datasets
import numpy as np

from curate.core.errors import BadInputError

PERCENTILES = (50, 90, 99)


def length_stats(lengths: np.ndarray) -> dict[str, float]:
    """min, mean, percentiles and max of a 1-D array of lengths."""
    stats = {"min": int(lengths.min()), "mean": round(float(lengths.mean()), 1)}
    stats |= {f"p{q}": float(np.percentile(lengths, q)) for q in PERCENTILES}
    stats["max"] = int(lengths.max())
    return stats


def inspect_dataset(
    ds: datasets.Dataset, prompt_column: str, response_column: str, tokenizer: Any | None = None
) -> dict[str, Any]:
    """Describe ``ds``; lengths are in tokens with ``tokenizer``, else in characters."""
    report: dict[str, Any] = {
        "rows": len(ds),
        "columns": {name: str(feature.dtype if hasattr(feature, "dtype") else feature)
                    for name, feature in ds.features.items()},
        "prompt_column": prompt_column,
        "response_column": response_column,
        "unit": "tokens" if tokenizer is not None else "characters",
    }
    lengths = {}
    for role, column in (("prompt", prompt_column), ("response", response_column)):
        values = list(ds[column])
        bad = [i for i, v in enumerate(values) if not isinstance(v, str)]
        if bad:
            raise BadInputError(
                f"{role} column '{column}' must hold strings; row {bad[0]} holds {type(values[bad[0]]).__name__}"
            )
        if tokenizer is None:
            lengths[role] = np.array([len(v) for v in values])
        else:
            ids = tokenizer(values, add_special_tokens=False)["input_ids"]
            lengths[role] = np.array([len(x) for x in ids])
        report[f"empty_{role}s"] = int((lengths[role] == 0).sum())
    lengths["total"] = lengths["prompt"] + lengths["response"]
    report["lengths"] = {role: length_stats(v) for role, v in lengths.items()}
    return report


def format_report(report: dict[str, Any], source: str) -> str:
    lines = [
        f"dataset: {source}",
        f"rows:    {report['rows']}",
        "columns: " + ", ".join(f"{k} ({v})" for k, v in report["columns"].items()),
        f"prompt:  '{report['prompt_column']}'   response: '{report['response_column']}'",
        f"lengths in {report['unit']}:",
    ]
    keys = list(next(iter(report["lengths"].values())))
    lines.append("  " + f"{'':10}" + "".join(f"{k:>9}" for k in keys))
    for role, stats in report["lengths"].items():
        lines.append("  " + f"{role:10}" + "".join(f"{stats[k]:>9g}" for k in keys))
    for role in ("prompt", "response"):
        if report[f"empty_{role}s"]:
            lines.append(f"warning: {report[f'empty_{role}s']} rows have an empty {role}")
    return "\n".join(lines)

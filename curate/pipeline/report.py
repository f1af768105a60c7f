"""The comparison at the end of a pipeline: every arm against the start and against every other
arm, paired over problems and seeds (:func:`eval.metrics.paired_comparison`: mean difference, 95%
paired-bootstrap interval, exact McNemar or sign-flip p-value, and ``effect`` only when the
interval excludes 0 and every seed agrees), written as ``report.json``, ``report.md`` and
``accuracy.png``."""
from __future__ import annotations

import itertools
import json
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curate.core.io import atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    from curate.pipeline.spec import PipelineSpec
    from curate.pipeline.stages import Stage


def per_problem(eval_dir: Path) -> list[float]:
    """Each problem's share of correct samples, in problem order, from an evaluation's samples.jsonl."""
    scores: dict[str, list[float]] = {}
    for line in (eval_dir / "samples.jsonl").read_text(encoding="utf-8").splitlines():
        sample = json.loads(line)
        scores.setdefault(sample["task_id"], []).append(float(sample["correct"]))
    return [statistics.fmean(v) for v in scores.values()]


def tables(spec: PipelineSpec, evals: list[Stage]) -> dict[str, list[list[float]]]:
    """``{"start": [scores], arm: [scores per seed, in spec.seeds order]}``."""
    by_name = {stage.name.removeprefix("eval "): per_problem(stage.path) for stage in evals}
    out = {"start": [by_name["start"]]}
    for arm in spec.arms:
        out[arm.name] = [by_name[f"{arm.name} seed {seed}"] for seed in spec.seeds]
    return out


def build_report(spec: PipelineSpec, evals: list[Stage], scores: Path | None = None) -> dict[str, Any]:
    from eval.metrics import paired_comparison

    table = tables(spec, evals)
    arms = [arm.name for arm in spec.arms]
    pairs = [(arm, "start") for arm in arms] + list(itertools.combinations(arms, 2))
    accuracy = {name: [statistics.fmean(row) for row in rows] for name, rows in table.items()}
    return {
        "warnings": calibration(table, scores),
        "pipeline": spec.name, "model": spec.model, "dataset": spec.dataset.source, "seeds": list(spec.seeds),
        "eval": {"task": spec.eval.task, "problems": len(table["start"][0]), "num_samples": spec.eval.num_samples},
        "accuracy": {name: {"mean": statistics.fmean(values), "per_seed": values} for name, values in accuracy.items()},
        "comparisons": [{"a": a, "b": b, **paired_comparison(table[a], table[b])} for a, b in pairs],
    }


def calibration(table: dict[str, list[list[float]]], scores: Path | None = None) -> list[str]:
    """Why the comparison may be unable to show an effect, measured: every model at the floor or the
    ceiling on every problem, or (with LearnAlign scores) no pool row learnable under the scoring policy."""
    warnings = []
    values = {v for rows in table.values() for row in rows for v in row}
    if values <= {0.0} or values <= {1.0}:
        warnings.append(f"every model scores {values.pop():.0%} on every problem: no comparison here can show "
                        "an effect (train longer, start from a stronger model or use easier problems)")
    for scored in sorted(scores.glob("*/scored.jsonl")) if scores and scores.is_dir() else []:
        rates = [json.loads(line).get("success_rate") for line in scored.read_text(encoding="utf-8").splitlines()]
        if rates and rates[0] is not None and not any(0 < p < 1 for p in rates):
            warnings.append(f"{scored.parent.name}: no pool row has 0 < p < 1 under the scoring policy, so "
                            "LearnAlign's selection is a seeded random pick")
    return warnings


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# {report['pipeline']}: {report['eval']['task']}, {report['eval']['problems']} problems, "
             f"seeds {report['seeds']}", ""]
    lines += [f"**Warning:** {w}" for w in report["warnings"]] + ([""] if report["warnings"] else [])
    lines += ["| model | accuracy | per seed |", "|---|---|---|"]
    for name, acc in report["accuracy"].items():
        lines.append(f"| {name} | {100 * acc['mean']:.1f} | {', '.join(f'{100 * v:.1f}' for v in acc['per_seed'])} |")
    lines += ["", "| a vs b | difference | 95% interval | p | effect |", "|---|---|---|---|---|"]
    for c in report["comparisons"]:
        low, high = c["ci95"]
        lines.append(f"| {c['a']} vs {c['b']} | {100 * c['mean_diff']:+.1f} | [{100 * low:+.1f}, {100 * high:+.1f}] "
                     f"| {c['p_value']:.3g} | {'yes' if c['effect'] else 'no'} |")
    return "\n".join(lines) + "\n"


def write_report(spec: PipelineSpec, evals: list[Stage], path: Path) -> None:
    report = build_report(spec, evals, path.parent / "scores")
    atomic_write_json(path / "report.json", report)
    atomic_write_text(path / "report.md", markdown(report))
    plot(report, path / "accuracy.png")


def plot(report: dict[str, Any], path: Path) -> Path:
    """Accuracy of every model, with each seed as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from curate.core.io import save_png

    names = list(report["accuracy"])
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 3.2))
    ax.bar(names, [100 * report["accuracy"][n]["mean"] for n in names], color="#9ab")
    for i, name in enumerate(names):
        seeds = report["accuracy"][name]["per_seed"]
        ax.scatter([i] * len(seeds), [100 * v for v in seeds], color="k", s=10, zorder=3)
    ax.set_ylabel(f"{report['eval']['task']} accuracy (%)")
    return save_png(fig, path)

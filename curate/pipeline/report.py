"""The comparison at the end of a pipeline: every arm against the start and against every other
arm, paired over problems and seeds (:func:`eval.metrics.paired_comparison`: mean difference, 95%
paired-bootstrap interval, exact McNemar or sign-flip p-value, and ``effect`` only when the
interval excludes 0 and every seed agrees), for every evaluation (the first one primary), written
as ``report.json``, ``report.md``, ``accuracy.png`` and, for GRPO, ``train_reward.png``; also the
pool's success-rate spread under LearnAlign's scoring policy and the learnability gate."""
from __future__ import annotations

import itertools
import json
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curate.core.errors import BadInputError
from curate.core.io import atomic_write_json, atomic_write_text
from curate.selection import success_rate_spread

if TYPE_CHECKING:
    from curate.pipeline.spec import EvalSpec, GateSpec, PipelineSpec
    from curate.pipeline.stages import Stage


def per_problem(eval_dir: Path) -> list[float]:
    """Each problem's share of correct samples, in problem order, from an evaluation's samples.jsonl."""
    scores: dict[str, list[float]] = {}
    for line in (eval_dir / "samples.jsonl").read_text(encoding="utf-8").splitlines():
        sample = json.loads(line)
        scores.setdefault(sample["task_id"], []).append(float(sample["correct"]))
    return [statistics.fmean(v) for v in scores.values()]


def tables(spec: PipelineSpec, evals: list[Stage], name: str) -> dict[str, list[list[float]]]:
    """``{"start": [scores], arm: [scores per seed, in spec.seeds order]}`` of evaluation ``name``."""
    by_model = {stage.meta["model"]: per_problem(stage.path) for stage in evals if stage.meta["eval"] == name}
    out = {"start": [by_model["start"]]}
    for arm in spec.arms:
        out[arm.name] = [by_model[f"{arm.name} seed {seed}"] for seed in spec.seeds]
    return out


def one_eval(spec: PipelineSpec, evals: list[Stage], e: EvalSpec) -> dict[str, Any]:
    from eval.metrics import paired_comparison

    table = tables(spec, evals, e.name)
    arms = [arm.name for arm in spec.arms]
    pairs = [(arm, "start") for arm in arms] + list(itertools.combinations(arms, 2))
    accuracy = {name: [statistics.fmean(row) for row in rows] for name, rows in table.items()}
    return {
        "eval": {"name": e.name, "task": e.task, "problems": len(table["start"][0]), "num_samples": e.num_samples,
                 "temperature": e.temperature},
        "accuracy": {name: {"mean": statistics.fmean(values), "per_seed": values} for name, values in accuracy.items()},
        "comparisons": [{"a": a, "b": b, **paired_comparison(table[a], table[b])} for a, b in pairs],
        "table": table,
    }


def build_report(spec: PipelineSpec, evals: list[Stage], scores: list[Path] | None = None,
                 trained: list[Stage] | None = None) -> dict[str, Any]:
    results = {e.name: one_eval(spec, evals, e) for e in spec.eval}
    primary = results[spec.primary.name]
    pools = pool_spreads(scores)
    return {
        "warnings": calibration(primary.pop("table"), scores),
        "pipeline": spec.name, "model": spec.model or "start (made by the file's start section)",
        "dataset": spec.dataset.source, "seeds": list(spec.seeds),
        **primary,
        "evals": {name: {k: v for k, v in r.items() if k != "table"} for name, r in results.items()},
        "pools": pools,
        "training": (training := training_logs(trained or [])),
        "budgets": budgets(training, spec.reference),
    }


def pool_spreads(scores: list[Path] | None) -> dict[str, dict[str, Any]]:
    """The success-rate spread of every LearnAlign scoring among ``scores`` (the plan's score folders;
    older ones in OUT/scores, from an edited file, are not this run's)."""
    spreads = {}
    for scored in [folder / "scored.jsonl" for folder in scores or [] if (folder / "scored.jsonl").is_file()]:
        rates = [json.loads(line).get("success_rate") for line in scored.read_text(encoding="utf-8").splitlines()]
        if rates and rates[0] is not None:
            spreads[scored.parent.name] = success_rate_spread(rates)
    return spreads


class UnlearnablePool(BadInputError):
    """The pool failed the learnability gate: the setting (task difficulty, start model) needs calibrating."""


def check_gate(success_rates: list[float], gate: GateSpec, where: str) -> dict[str, Any]:
    """Stop before any training when the pool cannot show an effect (too many prompts at p = 0 or
    1, too few in between); the spread when it passes."""
    spread = success_rate_spread(success_rates)
    size = max(spread["size"], 1)
    shares = {"p=0": spread["p_equals_0"] / size, "p=1": spread["p_equals_1"] / size, "0<p<1": spread["learnable"] / size}
    failed = [f"{name} {shares[name]:.0%} (limit {limit})" for name, limit, bad in (
        ("p=0", f"<= {gate.max_p0:.0%}", shares["p=0"] > gate.max_p0),
        ("p=1", f"<= {gate.max_p1:.0%}", shares["p=1"] > gate.max_p1),
        ("0<p<1", f">= {gate.min_learnable:.0%}", shares["0<p<1"] < gate.min_learnable),
    ) if bad]
    if failed:
        edges, counts = spread["histogram"]["edges"], spread["histogram"]["counts"]
        histogram = " ".join(f"[{lo:.1f},{hi:.1f}{']' if hi == 1.0 else ')'}:{c}"
                             for lo, hi, c in zip(edges, edges[1:], counts))
        raise UnlearnablePool(f"learnability gate ({where}): the pool under the scoring policy has {'; '.join(failed)}; "
                              f"histogram of p {histogram}; calibrate the setting (task difficulty, start model) first")
    return spread


ZERO_STD_AFTER = "dynamic_sampling/zero_std_after"


def training_logs(trained: list[Stage]) -> dict[str, Any]:
    """Per arm, from each seed's GRPO log (in seed order): the training reward per step, the steps
    trained and completions generated, the held-out curve (TRL's ``eval_reward`` at each eval step,
    with the completions generated by then), and the mean share of zero-variance groups among those
    generated and (with dynamic sampling) in the training batches."""
    out: dict[str, Any] = {}
    for stage in trained:
        path = stage.path / "model" / "training_log.json"
        logs = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
        steps = [entry for entry in logs if "reward" in entry]
        if not steps:
            continue
        arm = out.setdefault(stage.meta["arm"], {"reward": [], "frac_reward_zero_std": [], "zero_std_in_batch": [],
                                                 "steps": [], "generations": [], "curve": []})
        arm["reward"].append([round(float(entry["reward"]), 4) for entry in steps])
        arm["frac_reward_zero_std"] += [float(e["frac_reward_zero_std"]) for e in steps if "frac_reward_zero_std" in e]
        arm["zero_std_in_batch"] += [float(e[ZERO_STD_AFTER]) for e in steps if ZERO_STD_AFTER in e]
        arm["steps"].append(int(steps[-1]["step"]))
        arm["generations"].append(steps[-1].get("generations"))
        arm["curve"].append([{"step": int(e["step"]), "generations": e.get("generations"),
                              "accuracy": round(float(e["eval_reward"]), 4)} for e in logs if "eval_reward" in e])
    for arm in out.values():
        for name in ("frac_reward_zero_std", "zero_std_in_batch"):
            arm[name] = round(statistics.fmean(arm[name]), 4) if arm[name] else None
        if arm["zero_std_in_batch"] is None:  # no filter: the batches are the groups generated
            arm["zero_std_in_batch"] = arm["frac_reward_zero_std"]
    return out


def budgets(training: dict[str, Any], reference: str | None) -> dict[str, Any]:
    """Per arm (means over seeds): steps, completions generated, the held-out curve at the eval
    steps every seed reached, and the first of them at which the curve reaches the reference arm's
    final curve accuracy (steps- and generations-to-accuracy; None: never)."""
    def mean(values: list[Any]) -> float | None:
        values = [v for v in values if v is not None]
        return statistics.fmean(values) if values else None

    curves = {}
    for name, arm in training.items():
        shared = sorted(set.intersection(*(set(p["step"] for p in seed) for seed in arm["curve"]))) \
            if all(arm["curve"]) else []
        points = [[next(p for p in seed if p["step"] == step) for seed in arm["curve"]] for step in shared]
        curves[name] = [{"step": step, "generations": mean([p["generations"] for p in at]),
                         "accuracy": mean([p["accuracy"] for p in at])} for step, at in zip(shared, points)]
    target = curves[reference][-1]["accuracy"] if reference in curves and curves[reference] else None
    out: dict[str, Any] = {"reference": reference if target is not None else None, "target": target, "arms": {}}
    for name, arm in training.items():
        reached = next((p for p in curves[name] if target is not None and p["accuracy"] >= target), None)
        out["arms"][name] = {"steps": mean(arm["steps"]), "generations": mean(arm["generations"]),
                             "curve": curves[name], "steps_to_target": reached and reached["step"],
                             "generations_to_target": reached and reached["generations"]}
    return out


def calibration(table: dict[str, list[list[float]]], scores: list[Path] | None = None) -> list[str]:
    """Why the comparison may be unable to show an effect, measured: every model at the floor or the
    ceiling on every problem, or (with LearnAlign scores) no pool row learnable under the scoring policy."""
    warnings = []
    values = {v for rows in table.values() for row in rows for v in row}
    if values <= {0.0} or values <= {1.0}:
        warnings.append(f"every model scores {values.pop():.0%} on every problem: no comparison here can show "
                        "an effect (train longer, start from a stronger model or use easier problems)")
    for name, spread in pool_spreads(scores).items():
        if spread["size"] and not spread["learnable"]:
            warnings.append(f"{name}: no pool row has 0 < p < 1 under the scoring policy, so "
                            "LearnAlign's selection is a seeded random pick")
    return warnings


def markdown(report: dict[str, Any]) -> str:
    e = report["eval"]
    lines = [f"# {report['pipeline']}: {e['task']}, {e['problems']} problems, seeds {report['seeds']}", ""]
    lines += [f"**Warning:** {w}" for w in report["warnings"]] + ([""] if report["warnings"] else [])
    for name, result in report["evals"].items():
        if len(report["evals"]) > 1:
            r = result["eval"]
            lines += [f"## {name}{' (primary)' if name == e['name'] else ''}: {r['task']}, {r['num_samples']} "
                      f"sample(s) per problem" + (f" at temperature {r['temperature']}" if r["temperature"] else ""), ""]
        lines += _accuracy_lines(result) + [""]
    lines += _budget_lines(report.get("training", {}), report.get("budgets", {}))
    for name, spread in report.get("pools", {}).items():
        lines.append(f"Pool success rates under the scoring policy ({name}): mean {spread['mean']:.3f}; "
                     f"{spread['learnable']} of {spread['size']} learnable, {spread['p_equals_0']} at p=0, "
                     f"{spread['p_equals_1']} at p=1.")
    return "\n".join(lines) + "\n"


def _accuracy_lines(result: dict[str, Any]) -> list[str]:
    lines = ["| model | accuracy | per seed |", "|---|---|---|"]
    for name, acc in result["accuracy"].items():
        lines.append(f"| {name} | {100 * acc['mean']:.1f} | {', '.join(f'{100 * v:.1f}' for v in acc['per_seed'])} |")
    lines += ["", "| a vs b | difference | 95% interval | p | effect |", "|---|---|---|---|---|"]
    for c in result["comparisons"]:
        low, high = c["ci95"]
        lines.append(f"| {c['a']} vs {c['b']} | {100 * c['mean_diff']:+.1f} | [{100 * low:+.1f}, {100 * high:+.1f}] "
                     f"| {c['p_value']:.3g} | {'yes' if c['effect'] else 'no'} |")
    return lines


def _budget_lines(training: dict[str, Any], budget: dict[str, Any]) -> list[str]:
    """The training budget of every arm and its held-out curve (when the runs evaluated during training)."""
    if not budget or not budget.get("arms"):
        return []
    arms = budget["arms"]
    steps = sorted({p["step"] for arm in arms.values() for p in arm["curve"]})
    target = budget.get("target")
    head = "## Training budget" + (" and held-out curve (eval_reward during training)" if steps else "")
    lines = [head, ""]
    if target is not None:
        lines += [f"Target: {budget['reference']}'s final curve accuracy, {100 * target:.1f}.", ""]
    cols = ["arm", "steps", "completions", "zero-variance groups (generated / in batch)"]
    cols += [f"step {s}" for s in steps] + (["steps to target", "completions to target"] if target is not None else [])
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]

    def share(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.0f}%"

    for name, arm in arms.items():
        at = {p["step"]: p for p in arm["curve"]}
        gens = "-" if arm["generations"] is None else f"{arm['generations']:.0f}"
        row = [name, f"{arm['steps']:.0f}", gens,
               f"{share(training[name]['frac_reward_zero_std'])} / {share(training[name]['zero_std_in_batch'])}"]
        row += [f"{100 * at[s]['accuracy']:.1f}" if s in at else "-" for s in steps]
        if target is not None:
            reached = arm["steps_to_target"] is not None
            row += [str(arm["steps_to_target"]) if reached else "not reached",
                    f"{arm['generations_to_target']:.0f}" if reached and arm["generations_to_target"] is not None
                    else "-"]
        lines.append("| " + " | ".join(row) + " |")
    return lines + [""]


def write_report(spec: PipelineSpec, evals: list[Stage], path: Path, trained: list[Stage] | None = None,
                 scores: list[Path] | None = None) -> None:
    report = build_report(spec, evals, scores, trained)
    atomic_write_json(path / "report.json", report)
    atomic_write_text(path / "report.md", markdown(report))
    plot(report, path / "accuracy.png")
    if report["training"]:
        reward_plot(report["training"], path / "train_reward.png")


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
    ax.set_ylabel(f"{report['eval']['name']} accuracy (%)")
    return save_png(fig, path)


def reward_plot(training: dict[str, Any], path: Path) -> Path:
    """Training reward per step, mean over seeds, one line per arm (a moving average of 5)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from curate.core.io import save_png

    fig, ax = plt.subplots(figsize=(7, 3.8))
    for arm, logs in training.items():
        steps = min(len(curve) for curve in logs["reward"])
        mean = np.mean([curve[:steps] for curve in logs["reward"]], axis=0)
        width = min(5, steps)
        ax.plot(range(width, steps + 1), np.convolve(mean, np.ones(width) / width, mode="valid"), label=arm)
    ax.set_xlabel("training step")
    ax.set_ylabel("training reward")
    ax.legend(fontsize=7)
    return save_png(fig, path)

"""``curate demo``: the LearnAlign experiment in miniature, offline, from scratch.

1. Data: ``arith`` word problems (:mod:`eval.tasks.arith`): an SFT set, a selection pool and a
   held-out test split, all seeded and disjoint.
2. SFT: a small Qwen2 with a near-character tokenizer is trained from scratch on the SFT set
   (``sft.train``, Dynamic Pack) until success rates on the pool spread across (0, 1).
3. Scoring: LearnAlign on the pool under the SFT model (G rollouts, GRPO gradients over a fresh
   LoRA, alignment scores), which also gives the baselines that need no extra model.
4. RL: GRPO (``rl.grpo``) from the same SFT model on each arm's top-N and on the full pool, with
   the same steps and rollouts, for every N and seed.
5. Evaluation: greedy accuracy on the test split; a paper-style table (mean ± std over seeds),
   JSON, Markdown and plots.

Every stage writes into ``--out`` and is skipped when its output is already there (models appear
whole, written beside their folder and renamed; scoring and evaluation resume from their chunk
caches), so an interrupted demo resumes. Every random draw is seeded (data from ``--seed``, the
tiny model and SFT from 0, scoring from 0, each GRPO run from its seed), so a resumed demo gives the
results of an uninterrupted one.
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from eval.errors import BadInputError
from eval.tasks.arith import ArithConfig
from eval.tiny import TinyModelConfig

ARMS = ("learnalign", "random", "length", "learnability", "gradient")


@dataclass
class DemoPreset:
    """One demo configuration. The default's task and SFT were calibrated on the learnability gate
    alone (no RL run looked at; 2026-11-29, data seed 0): 1-6 steps of 1-digit operands, a 512-token
    vocabulary (with 300 the model never learned to copy numbers from the question), 540 SFT steps
    (~5 min on 2 cores). Under the strict verifier the pool then had 15% of prompts at p = 0, 8% at
    p = 1 and 78% in between (at 400 / 500 / 600 steps: 69% / 33% / 2% at p = 0 and 0% / 9% / 32%
    at p = 1: learning is a sharp jump); greedy held-out accuracy 80.5% strict, 88% of equation
    lines right."""

    name: str
    model: TinyModelConfig = field(default_factory=lambda: TinyModelConfig(
        hidden_size=128, num_layers=4, num_heads=2, num_kv_heads=1, intermediate_size=384, vocab_size=512))
    problems: ArithConfig = field(default_factory=lambda: ArithConfig(min_steps=1, max_steps=6, max_digits=1))
    sft_problems: int = 20000
    sft_steps: int = 540
    sft_batch_size: int = 64
    sft_learning_rate: float = 2e-3
    pool_size: int = 192
    test_size: int = 160
    num_rollouts: int = 8  # G, for scoring and GRPO
    max_new_tokens: int = 80  # a 6-step worked answer is up to 64 tokens
    answer_mode: str = "lines"  # the verifier for p, the GRPO reward and accuracy: every line right
    projection_dim: int = 2048
    score_chunk_size: int = 64  # pool prompts between scoring cache writes
    ns: tuple[int, ...] = (32, 64)
    seeds: tuple[int, ...] = (0, 1)
    arms: tuple[str, ...] = ARMS
    grpo_steps: int = 10
    grpo_prompts_per_step: int = 4
    grpo_learning_rate: float = 5e-5
    device: str = "cpu"
    # The learnability gate (before any RL): shares of the pool at p = 0, at p = 1, and in between
    # under the scoring policy. A pool outside these bounds cannot show what selection does.
    gate_max_p0: float = 0.30
    gate_max_p1: float = 0.20
    gate_min_learnable: float = 0.50


PRESETS: dict[str, DemoPreset] = {
    "default": DemoPreset("default"),
    "smoke": DemoPreset("smoke", sft_problems=600, sft_steps=30, pool_size=24, test_size=24, num_rollouts=4,
                        max_new_tokens=24, projection_dim=256, ns=(6,), seeds=(0,), grpo_steps=2,
                        grpo_prompts_per_step=2,
                        # The smoke run checks the plumbing in seconds; its 30 SFT steps learn nothing.
                        gate_max_p0=1.0, gate_max_p1=1.0, gate_min_learnable=0.0),
    "gpu": DemoPreset("gpu", model=TinyModelConfig(hidden_size=512, num_layers=8, num_heads=8, num_kv_heads=2,
                                                   intermediate_size=1536, vocab_size=300),
                      problems=ArithConfig(max_steps=4, max_digits=3), sft_problems=50000, sft_steps=3000,
                      sft_batch_size=128, sft_learning_rate=1e-3, pool_size=2000, test_size=1000, num_rollouts=8,
                      max_new_tokens=64, projection_dim=8192, ns=(100, 250, 500), seeds=(0, 1, 2), grpo_steps=100,
                      grpo_prompts_per_step=8, device="auto"),
}


def make_data(preset: DemoPreset, out: Path, seed: int = 0) -> dict[str, Path]:
    """Disjoint SFT, pool and test splits as jsonl files."""
    from eval.data import save_dataset
    from eval.tasks.arith import generate

    sizes = {"sft": preset.sft_problems, "pool": preset.pool_size, "test": preset.test_size}
    paths = {name: out / "data" / f"{name}.jsonl" for name in sizes}
    if all(p.exists() for p in paths.values()):
        return paths
    seen: list[str] = []
    for i, (name, size) in enumerate(sizes.items()):
        ds = generate(size, seed=1000 * seed + i, config=preset.problems, exclude=seen)
        seen += ds["question"]
        save_dataset(ds, paths[name])
    return paths


def train_sft(preset: DemoPreset, data: dict[str, Path], out: Path) -> Path:
    """The starting policy: a tiny Qwen2 trained from scratch with SFT (no chat template: plain
    "Question: ...\\nAnswer:" prompts, as the task uses)."""
    from eval.cache import kill_point
    from eval.data import load_data
    from eval.io import atomic_dir
    from eval.tiny import build_tiny_model
    from sft import train as sft_train

    model_dir = out / "sft_model"
    if (model_dir / "model.safetensors").exists():
        return model_dir
    rows = load_data(str(data["sft"]))
    init = out / "init_model"
    build_tiny_model(init, [f"Question: {q}\nAnswer: {a}" for q, a in zip(rows["question"], rows["answer"])],
                     preset.model, chat_template=False)
    with atomic_dir(model_dir) as tmp:  # a half-saved model is never taken for a finished one
        sft_train.train(*sft_train.parse(_sft_argv(preset, data, init, tmp)))
        kill_point("sft", 1)  # test hook: trained, not yet in place
    return model_dir


def _sft_argv(preset: DemoPreset, data: dict[str, Path], init: Path, model_dir: Path) -> list[str]:
    return ["--model_name_or_path", str(init), "--dataset", str(data["sft"]), "--output_dir", str(model_dir),
            "--padding", "dynamic_pack", "--chat", "false", "--max_length", "256", "--dtype", "float32",
            "--per_device_train_batch_size", str(preset.sft_batch_size), "--max_steps", str(preset.sft_steps),
            "--learning_rate", str(preset.sft_learning_rate), "--lr_scheduler_type", "cosine",
            "--warmup_steps", str(max(1, preset.sft_steps // 20)), "--logging_steps", str(max(1, preset.sft_steps // 10)),
            "--save_strategy", "no", "--report_to", "none", "--seed", "0", "--disable_tqdm", "false",
            *(["--use_cpu", "true"] if preset.device == "cpu" else [])]


def score_pool(preset: DemoPreset, data: dict[str, Path], model_dir: Path, out: Path):
    """LearnAlign (and the baselines' columns) on the pool under the SFT model."""
    import datasets

    from curate import learnalign
    from curate.grad_features import GradientConfig
    from eval.data import load_data, save_dataset

    path = out / "scores" / "scored.jsonl"
    if path.exists():
        return load_data(str(path))
    pool = load_data(str(data["pool"]))
    config = learnalign.LearnAlignConfig(task="arith", num_rollouts=preset.num_rollouts, temperature=1.0,
                                         max_new_tokens=preset.max_new_tokens, backend="hf", chat=False,
                                         answer_mode=preset.answer_mode,
                                         chunk_size=preset.score_chunk_size, seed=0,
                                         gradients=GradientConfig(projection_dim=preset.projection_dim, seed=0))
    scored: datasets.Dataset = learnalign.score(pool, str(model_dir), config, cache_dir=out / "cache",
                                                device=preset.device)
    save_dataset(scored, path)
    return scored


def train_arm(preset: DemoPreset, model_dir: Path, train_rows, out_dir: Path, seed: int) -> Path:
    """GRPO from the SFT model on ``train_rows``: the same steps and rollouts for every arm."""
    from eval.cache import kill_point
    from eval.io import atomic_dir
    from rl.staged import run_grpo

    if (out_dir / "model.safetensors").exists():
        return out_dir
    with atomic_dir(out_dir) as tmp:  # a half-saved model is never taken for a finished one
        run_grpo(_grpo_argv(preset, model_dir, tmp, seed), train_rows)
        kill_point("grpo", 1)  # test hook: the first arm this process trains, not yet in place
    return out_dir


def _grpo_argv(preset: DemoPreset, model_dir: Path, out_dir: Path, seed: int) -> list[str]:
    from rl.staged import grpo_argv

    return grpo_argv(None, model_name_or_path=model_dir, task="arith", chat="false", output_dir=out_dir,
                     use_peft="false", learning_rate=preset.grpo_learning_rate, max_steps=preset.grpo_steps,
                     num_generations=preset.num_rollouts,
                     per_device_train_batch_size=preset.grpo_prompts_per_step * preset.num_rollouts,
                     max_completion_length=preset.max_new_tokens, seed=seed, dtype="float32",
                     answer_mode=preset.answer_mode,
                     use_cpu="true" if preset.device == "cpu" else None)


def accuracy(preset: DemoPreset, model_dir: Path, test: Path) -> tuple[float, list[bool]]:
    """Greedy accuracy on the test split and each problem's verdict (for paired comparisons), cached
    in ``<model folder>.eval`` (beside the model, not in it: the model's fingerprint, which keys the
    generation cache, must not change as the eval writes)."""
    from eval.evaluate import EvalConfig, evaluate
    from eval.tasks import TaskOptions

    eval_dir = model_dir.with_name(model_dir.name + ".eval")
    summary_path = eval_dir / "summary.json"
    if not summary_path.exists():
        evaluate(EvalConfig(task="arith", model=str(model_dir), out_dir=str(eval_dir), backend="hf",
                                  max_new_tokens=preset.max_new_tokens, device=preset.device, progress=False,
                                  options=TaskOptions(source=str(test), chat=False, answer_mode=preset.answer_mode)))
    samples = [json.loads(line) for line in (eval_dir / "samples.jsonl").read_text().splitlines()]
    return json.loads(summary_path.read_text())["accuracy"], [bool(s["correct"]) for s in samples]


def training_summary(arm_dir: Path) -> dict[str, Any]:
    """Per-step training reward and the mean share of zero-variance groups of one GRPO run."""
    path = arm_dir / "training_log.json"
    logs = json.loads(path.read_text()) if path.exists() else []
    steps = [entry for entry in logs if "reward" in entry]
    zero = [entry["frac_reward_zero_std"] for entry in steps if "frac_reward_zero_std" in entry]
    return {"train_reward": [round(float(entry["reward"]), 4) for entry in steps],
            "frac_reward_zero_std": round(statistics.fmean(zero), 4) if zero else None}


def comparisons(correct: dict[tuple[str, int, int], list[bool]], start: list[bool],
                seeds: tuple[int, ...]) -> list[dict[str, Any]]:
    """Each arm (per N) vs the SFT start, and learnalign vs random per N: paired over problems and
    seeds (:func:`eval.metrics.paired_comparison`)."""
    from eval.metrics import paired_comparison

    arms = sorted({(arm, n) for arm, n, _ in correct})
    table = lambda arm, n: [correct[(arm, n, s)] for s in seeds]  # noqa: E731
    pairs = [((arm, n), None) for arm, n in arms]
    pairs += [(("learnalign", n), ("random", n)) for arm, n in arms if arm == "learnalign" and ("random", n) in arms]
    out = []
    for (arm, n), other in pairs:
        result = paired_comparison(table(arm, n), start if other is None else table(*other))
        out.append({"a": arm, "b": "start" if other is None else other[0], "n": n, **result})
    return out


def _claim(out: Path, preset: DemoPreset, seed: int) -> None:
    """Stages are reused by their files alone, so ``--out`` may hold one preset and seed only:
    refuse a folder made with others before any work (``preset.json`` records them)."""
    from eval.io import atomic_write_json

    wanted = json.loads(json.dumps({"preset": asdict(preset), "seed": seed}))
    path = out / "preset.json"
    if path.exists():
        if json.loads(path.read_text(encoding="utf-8-sig")) != wanted:
            raise BadInputError(f"--out {out} holds a demo made with another preset or seed "
                                f"(see {path}); use a new --out")
        return
    atomic_write_json(path, wanted)


class UnlearnablePool(BadInputError):
    """The pool failed the learnability gate: the preset (task, SFT budget) needs calibrating."""


def pool_spread(success_rates: list[float]) -> dict[str, Any]:
    """The pool's success-rate summary: mean, counts at p = 0, p = 1 and in between, a histogram."""
    p = [float(x) for x in success_rates]
    edges = [i / 10 for i in range(11)]
    histogram = [sum(lo <= x < hi or (hi == 1.0 and x == 1.0) for x in p) for lo, hi in zip(edges, edges[1:])]
    return {"mean": statistics.fmean(p) if p else 0.0, "p_equals_0": sum(x == 0 for x in p),
            "p_equals_1": sum(x == 1 for x in p), "learnable": sum(0 < x < 1 for x in p), "size": len(p),
            "histogram": {"edges": edges, "counts": histogram}}


def learnability_gate(spread: dict[str, Any], preset: DemoPreset) -> None:
    """Stop before RL when the pool cannot show an effect (too many prompts at p = 0 or 1)."""
    size = max(spread["size"], 1)
    shares = {"p=0": spread["p_equals_0"] / size, "p=1": spread["p_equals_1"] / size,
              "0<p<1": spread["learnable"] / size}
    failed = [f"{name} {share:.0%} (limit {limit})" for name, share, limit, bad in (
        ("p=0", shares["p=0"], f"<= {preset.gate_max_p0:.0%}", shares["p=0"] > preset.gate_max_p0),
        ("p=1", shares["p=1"], f"<= {preset.gate_max_p1:.0%}", shares["p=1"] > preset.gate_max_p1),
        ("0<p<1", shares["0<p<1"], f">= {preset.gate_min_learnable:.0%}", shares["0<p<1"] < preset.gate_min_learnable),
    ) if bad]
    if failed:
        counts = " ".join(f"[{lo:.1f},{hi:.1f}{']' if hi == 1.0 else ')'}:{c}" for lo, hi, c in zip(
            spread["histogram"]["edges"], spread["histogram"]["edges"][1:], spread["histogram"]["counts"]))
        raise UnlearnablePool(f"learnability gate: the pool under the scoring policy has {'; '.join(failed)}; "
                              f"histogram of p {counts}; calibrate the preset (task difficulty, SFT steps) first")


def run(preset: DemoPreset, out: str | Path, seed: int = 0) -> dict[str, Any]:
    """The whole demo; returns the results (also in ``results.json`` / ``results.md``)."""
    from tqdm.auto import tqdm

    from curate import learnalign
    from eval.io import atomic_write_json, atomic_write_text

    out = Path(out)
    if any(n > preset.pool_size for n in preset.ns):
        raise BadInputError(f"every N must be at most the pool size {preset.pool_size}, got {list(preset.ns)}")
    unknown = [a for a in preset.arms if a not in ARMS]
    if unknown:
        raise BadInputError(f"unknown arm(s) {unknown}; choose from {', '.join(ARMS)}")
    _claim(out, preset, seed)
    started = time.monotonic()
    timings: dict[str, float] = {}

    def lap(name: str, t0: float) -> None:
        timings[name] = round(time.monotonic() - t0, 1)

    t0 = time.monotonic()
    data = make_data(preset, out, seed)
    model_dir = train_sft(preset, data, out)
    lap("sft", t0)
    t0 = time.monotonic()
    scored = score_pool(preset, data, model_dir, out)
    lap("scoring", t0)
    spread = pool_spread(scored["success_rate"])
    print(f"pool success rates under the SFT model: mean {spread['mean']:.3f}, {spread['learnable']} of "
          f"{spread['size']} prompts learnable (0 < p < 1), {spread['p_equals_0']} at p=0, {spread['p_equals_1']} at p=1")
    atomic_write_json(out / "pool.json", spread)
    learnability_gate(spread, preset)

    t0 = time.monotonic()
    jobs = [(arm, n, s) for arm in preset.arms for n in preset.ns for s in preset.seeds]
    jobs += [("full", len(scored), s) for s in preset.seeds]
    results: list[dict[str, Any]] = []
    start_acc, start_correct = accuracy(preset, model_dir, data["test"])
    correct: dict[tuple[str, int, int], list[bool]] = {}
    for arm, n, s in tqdm(jobs, desc="GRPO arms", unit="run"):
        rows = scored if arm == "full" else learnalign.select(scored, n, arm, seed=s)
        arm_dir = train_arm(preset, model_dir, rows, out / "arms" / f"{arm}-n{n}-seed{s}", seed=s)
        acc, correct[(arm, n, s)] = accuracy(preset, arm_dir, data["test"])
        results.append({"arm": arm, "n": n, "seed": s, "accuracy": acc,
                        "selected_success_rate": statistics.fmean(float(x) for x in rows["success_rate"]),
                        **training_summary(arm_dir)})
    lap("grpo_and_eval", t0)
    timings["total"] = round(time.monotonic() - started, 1)
    report = {"preset": asdict(preset), "start_accuracy": start_acc, "pool_success_rate": spread,
              "runs": results, "table": table(results, preset),
              "comparisons": comparisons(correct, start_correct, preset.seeds), "seconds": timings,
              "files": {"results": str(out / "results.json"), "markdown": str(out / "results.md"),
                        "plots": [str(out / "pool_success_rate.png"), str(out / "accuracy.png")]}}
    atomic_write_json(out / "results.json", report)
    atomic_write_text(out / "results.md", markdown(report))
    plots(scored, report, out)
    return report


def table(results: list[dict[str, Any]], preset: DemoPreset) -> list[dict[str, Any]]:
    """One row per arm: accuracy mean and std over seeds for each N (the full pool: one N)."""
    rows = []
    for arm in (*preset.arms, "full"):
        row: dict[str, Any] = {"arm": arm}
        for r_n in sorted({r["n"] for r in results if r["arm"] == arm}):
            accs = [r["accuracy"] for r in results if r["arm"] == arm and r["n"] == r_n]
            row[f"N={r_n}"] = {"mean": statistics.fmean(accs), "std": statistics.pstdev(accs), "seeds": len(accs)}
        rows.append(row)
    return rows


def markdown(report: dict[str, Any]) -> str:
    columns = sorted({k for row in report["table"] for k in row if k.startswith("N=")}, key=lambda k: int(k[2:]))
    lines = [f"# curate demo ({report['preset']['name']} preset)", "",
             f"Test accuracy after GRPO (greedy, {report['preset']['test_size']} held-out problems), "
             f"mean ± std over seeds {list(report['preset']['seeds'])}. Start (SFT model): "
             f"{100 * report['start_accuracy']:.1f}%.", "",
             "| arm | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for row in report["table"]:
        cells = [f"{100 * row[c]['mean']:.1f} ± {100 * row[c]['std']:.1f}" if c in row else "" for c in columns]
        lines.append(f"| {row['arm']} | " + " | ".join(cells) + " |")
    lines += ["", "Paired comparisons (problems x seeds; 95% paired-bootstrap interval; exact McNemar p; an "
              "effect only when the interval excludes 0 and every seed agrees in sign):", "",
              "| a | b | N | mean diff | 95% interval | p | effect |", "|---|---|---|---|---|---|---|"]
    for c in report.get("comparisons", []):
        lines.append(f"| {c['a']} | {c['b']} | {c['n']} | {100 * c['mean_diff']:+.1f} | "
                     f"[{100 * c['ci95'][0]:+.1f}, {100 * c['ci95'][1]:+.1f}] | {c['p_value']:.3g} | "
                     f"{'yes' if c['effect'] else 'no'} |")
    spread = report["pool_success_rate"]
    lines += ["", f"Pool success rates under the SFT model: mean {spread['mean']:.3f}; {spread['learnable']} "
              f"learnable, {spread['p_equals_0']} at p=0, {spread['p_equals_1']} at p=1.",
              f"Wall time: {report['seconds']}", ""]
    return "\n".join(lines)


def plots(scored, report: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from eval.io import save_png

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist([float(x) for x in scored["success_rate"]], bins=[i / 10 for i in range(11)])
    ax.set_xlabel("success rate p under the SFT model")
    ax.set_ylabel("pool prompts")
    save_png(fig, out / "pool_success_rate.png")
    fig, ax = plt.subplots(figsize=(7, 3.8))
    labels, means, stds = [], [], []
    for row in report["table"]:
        for key in sorted((k for k in row if k.startswith("N=")), key=lambda k: int(k[2:])):
            labels.append(f"{row['arm']}\n{key}")
            means.append(100 * row[key]["mean"])
            stds.append(100 * row[key]["std"])
    ax.bar(range(len(labels)), means, yerr=stds, capsize=3)
    ax.axhline(100 * report["start_accuracy"], color="k", linestyle="--", linewidth=1, label="SFT start")
    ax.set_xticks(range(len(labels)), labels, fontsize=7)
    ax.set_ylabel("test accuracy (%)")
    ax.legend()
    save_png(fig, out / "accuracy.png")


def preset_with(name: str, **overrides: Any) -> DemoPreset:
    if name not in PRESETS:
        raise BadInputError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})

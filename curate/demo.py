"""``curate demo``: the LearnAlign experiment in miniature, offline, from scratch.

1. Data: ``arith`` word problems (:mod:`eval.tasks.arith`): an SFT set, a selection pool and a
   held-out test split, all seeded and disjoint. The SFT demonstrations carry a systematic error
   (for two of the eight items most answers end one too high, see ``sft_noise_*``); the pool and
   test splits are clean, and the strict verifier checks every line and the final answer.
2. SFT: a small Qwen2 with a near-character tokenizer is trained from scratch on the SFT set
   (``sft.train``, Dynamic Pack); it learns the arithmetic and the slip.
3. Scoring: LearnAlign's warmup (a short LoRA GRPO run on random pool rows) gives θ_s; under θ_s,
   G rollouts per pool prompt give p, GRPO gradients (the arms' loss: TRL's token-level "dapo"
   aggregation, their β) the alignment scores and the baselines' columns. A learnability gate stops
   the demo when the pool cannot show an effect.
4. RL: GRPO (``rl.grpo``, full fine-tuning) from the same SFT model on each arm's top-N and on the
   full pool, with the same steps and rollouts, for every N and seed; ``workers`` arms at a time.
5. Evaluation: greedy accuracy on the test split under the strict verifier; paired comparisons
   (each arm vs the SFT start, learnalign vs random) over problems and seeds; JSON, Markdown, plots.

Every stage writes into ``--out`` and is skipped when its output is already there (models appear
whole, written beside their folder and renamed; scoring and evaluation resume from their chunk
caches), so an interrupted demo resumes. Every random draw is seeded (data from ``--seed``, the
tiny model and SFT from 0, warmup and scoring from 0, each GRPO run from its seed), so a resumed
demo gives the results of an uninterrupted one.

Not in the demo (see the README): real models and datasets (``curate select learnalign`` and the
recipes do that), staged RL (:mod:`curate.staged`), and a distractor template absent from the test split.
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from curate.core.errors import BadInputError
from eval.tasks.arith import ArithConfig
from curate.llm.tiny import TinyModelConfig

ARMS = ("learnalign", "random", "learnability", "gradient", "gradient_cosine", "length")


@dataclass
class DemoPreset:
    """One demo configuration. The default was calibrated on the learnability gate and on the
    full-pool arm alone (never on a selection comparison; 2026-11-29, data seed 0): 1-6 steps of
    1-digit operands, a 512-token vocabulary, 540 SFT steps on demonstrations with the coins/stamps
    slip (rate 0.5); then 5% / 9% / 86% of the pool at p = 0 / p = 1 / in between under θ_s, greedy
    held-out accuracy 90.6%, sampled 57.6%. SFT learning is a sharp jump (the model suddenly learns
    to copy numbers from the question) whose timing moves with the data: the same 540 and 720 steps
    with a slip rate of 0.75 had not jumped (greedy 18-19%). GRPO: with every parameter trained it
    cost greedy accuracy at every learning rate tried; the tied embeddings and the first layer,
    which carry most of the GRPO gradient's norm, are frozen. Wall time: 13.8 min on 2 cores."""

    name: str
    model: TinyModelConfig = field(default_factory=lambda: TinyModelConfig(
        hidden_size=128, num_layers=4, num_heads=2, num_kv_heads=1, intermediate_size=384, vocab_size=512))
    problems: ArithConfig = field(default_factory=lambda: ArithConfig(min_steps=1, max_steps=6, max_digits=1))
    sft_problems: int = 20000
    # Systematic errors in the SFT demonstrations, as real SFT data has and a verifier catches: for
    # problems about these items, this share of the worked answers ends one too high ("#### N+1"
    # after a last line "... = N"). The SFT model learns the slip; RL with the verifier can unlearn
    # it, a skill that carries over to held-out problems (the pool and test splits are clean).
    sft_noise_items: tuple[str, ...] = ("coins", "stamps")
    sft_noise_rate: float = 0.5
    sft_steps: int = 540
    sft_batch_size: int = 64
    sft_learning_rate: float = 2e-3
    pool_size: int = 256
    test_size: int = 500
    num_rollouts: int = 8  # G, for scoring and GRPO
    max_new_tokens: int = 80  # a 6-step worked answer is up to 64 tokens
    # The held-out metric the comparisons use: "sampled" (the share of eval_samples answers at
    # temperature 1 that are right: the policy GRPO optimises) or "greedy"; both are reported.
    metric: str = "sampled"
    eval_samples: int = 4
    workers: int = 2  # GRPO arms trained (and evaluated) in parallel, one CPU thread each on a CPU
    answer_mode: str = "lines"  # the verifier for p, the GRPO reward and accuracy: every line right
    projection_dim: int = 2048
    score_chunk_size: int = 64  # pool prompts between scoring cache writes
    ns: tuple[int, ...] = (64,)
    seeds: tuple[int, ...] = (0, 1, 2)
    arms: tuple[str, ...] = ("learnalign", "random", "learnability", "gradient")
    grpo_steps: int = 36
    grpo_prompts_per_step: int = 4
    grpo_learning_rate: float = 3e-5
    grpo_beta: float = 0.0
    grpo_warmup_steps: int = 4  # learning-rate warmup of every arm's GRPO run
    # Parameters GRPO leaves as they are (a regular expression; None: train all). Calibrated on the
    # full-pool arm: the tied embeddings and the first layer carry most of the GRPO gradient's norm
    # here, and training them cost greedy accuracy (see the README's demo section).
    grpo_freeze: str | None = r"embed_tokens|layers\.0\."
    # LearnAlign's warmup (the paper's main method): a short LoRA GRPO run on warmup_samples random
    # pool rows gives the scoring policy θ_s; 0 steps scores under the SFT model (the paper's ablation).
    warmup_steps: int = 20
    warmup_samples: int = 64
    device: str = "cpu"
    # The learnability gate (before any RL): shares of the pool at p = 0, at p = 1, and in between
    # under the scoring policy. A pool outside these bounds cannot show what selection does.
    gate_max_p0: float = 0.30
    gate_max_p1: float = 0.20
    gate_min_learnable: float = 0.50


PRESETS: dict[str, DemoPreset] = {
    "default": DemoPreset("default"),
    "smoke": DemoPreset("smoke", sft_problems=600, sft_steps=30, pool_size=24, test_size=24, num_rollouts=4,
                        max_new_tokens=24, projection_dim=256, ns=(6,), seeds=(0,), arms=("learnalign", "random"),
                        grpo_steps=2, grpo_prompts_per_step=2, grpo_warmup_steps=0, warmup_steps=2, warmup_samples=4,
                        # The smoke run checks the plumbing in seconds; its 30 SFT steps learn nothing.
                        gate_max_p0=1.0, gate_max_p1=1.0, gate_min_learnable=0.0),
    "gpu": DemoPreset("gpu", model=TinyModelConfig(hidden_size=512, num_layers=8, num_heads=8, num_kv_heads=2,
                                                   intermediate_size=1536, vocab_size=300),
                      problems=ArithConfig(max_steps=4, max_digits=3), sft_problems=50000, sft_steps=3000,
                      sft_batch_size=128, sft_learning_rate=1e-3, pool_size=2000, test_size=1000, num_rollouts=8,
                      max_new_tokens=64, projection_dim=8192, ns=(100, 250, 500), seeds=(0, 1, 2), grpo_steps=100,
                      grpo_prompts_per_step=8, arms=("learnalign", "random", "learnability", "gradient", "length"),
                      workers=1, device="auto"),
}


def make_data(preset: DemoPreset, out: Path, seed: int = 0) -> dict[str, Path]:
    """Disjoint SFT, pool and test splits as jsonl files."""
    from curate.llm.data import save_dataset
    from eval.tasks.arith import generate

    sizes = {"sft": preset.sft_problems, "pool": preset.pool_size, "test": preset.test_size}
    paths = {name: out / "data" / f"{name}.jsonl" for name in sizes}
    if all(p.exists() for p in paths.values()):
        return paths
    seen: list[str] = []
    for i, (name, size) in enumerate(sizes.items()):
        ds = generate(size, seed=1000 * seed + i, config=preset.problems, exclude=seen)
        seen += ds["question"]
        if name == "sft" and preset.sft_noise_rate > 0:
            ds = slip_answers(ds, preset.sft_noise_items, preset.sft_noise_rate, seed=1000 * seed + 99)
        save_dataset(ds, paths[name])
    return paths


def slip_answers(ds, items: tuple[str, ...], rate: float, seed: int):
    """The demonstrations' systematic error: for questions about ``items``, a seeded ``rate`` share of
    the answers ends "#### N+1" (the worked lines stay right), marked in a ``slipped`` column."""
    import random

    from eval.tasks.arith import question_item

    rng = random.Random(seed)

    def slip(row: dict[str, Any]) -> dict[str, Any]:
        hit = question_item(row["question"]) in items and rng.random() < rate
        if hit:
            body, _, final = row["answer"].rpartition("#### ")
            row["answer"] = f"{body}#### {int(final) + 1}"
        return {**row, "slipped": hit}

    return ds.map(slip, load_from_cache_file=False)


def train_sft(preset: DemoPreset, data: dict[str, Path], out: Path) -> Path:
    """The starting policy: a tiny Qwen2 trained from scratch with SFT (no chat template: plain
    "Question: ...\\nAnswer:" prompts, as the task uses)."""
    from curate.core.cache import kill_point
    from curate.llm.data import load_data
    from curate.core.io import atomic_dir
    from curate.llm.tiny import build_tiny_model
    from sft import train as sft_train

    model_dir = out / "sft_model"
    if (model_dir / "model.safetensors").exists():
        return model_dir
    rows = load_data(str(data["sft"]))
    init = out / "init_model"
    build_tiny_model(init, [f"Question: {q}\nAnswer: {a}" for q, a in zip(rows["question"], rows["answer"])],
                     preset.model, chat_template=False)
    with atomic_dir(model_dir) as tmp:  # a half-saved model is never taken for a finished one
        sft_train.train(*_sft_configs(preset, data, init, tmp))
        kill_point("sft", 1)  # test hook: trained, not yet in place
    return model_dir


def _sft_configs(preset: DemoPreset, data: dict[str, Path], init: Path, model_dir: Path) -> tuple:
    from sft.train import sft_configs

    return sft_configs(None, model_name_or_path=init, dataset=data["sft"], output_dir=model_dir,
                       padding="dynamic_pack", chat=False, max_length=256, dtype="float32",
                       per_device_train_batch_size=preset.sft_batch_size, max_steps=preset.sft_steps,
                       learning_rate=preset.sft_learning_rate, lr_scheduler_type="cosine",
                       warmup_steps=max(1, preset.sft_steps // 20), logging_steps=max(1, preset.sft_steps // 10),
                       save_strategy="no", report_to="none", seed=0, disable_tqdm=False,
                       use_cpu=True if preset.device == "cpu" else None)


def scoring_policy(preset: DemoPreset, pool, model_dir: Path, out: Path) -> Path:
    """θ_s: the SFT model after LearnAlign's warmup (a short LoRA GRPO run on random pool rows, with
    the arms' verifier and β), or the SFT model itself when ``warmup_steps`` is 0."""
    from rl.runs import warmup

    if preset.warmup_steps <= 0:
        return model_dir
    return warmup(str(model_dir), pool, out / "warmup", task="arith", samples=min(preset.warmup_samples, len(pool)),
                  steps=preset.warmup_steps, num_generations=preset.num_rollouts,
                  max_completion_length=preset.max_new_tokens, seed=0, use_cpu=preset.device == "cpu",
                  chat=False, answer_mode=preset.answer_mode, beta=preset.grpo_beta)


def score_pool(preset: DemoPreset, data: dict[str, Path], model_dir: Path, out: Path):
    """LearnAlign (and the baselines' columns) on the pool under the scoring policy θ_s, with the
    gradient of the arms' GRPO loss (TRL's token-level "dapo" aggregation, their β)."""
    import datasets

    from curate import learnalign
    from curate.grad_features import GradientConfig
    from curate.llm.data import load_data, save_dataset

    path = out / "scores" / "scored.jsonl"
    if path.exists():
        return load_data(str(path))
    pool = load_data(str(data["pool"]))
    scorer = scoring_policy(preset, pool, model_dir, out)
    config = learnalign.LearnAlignConfig(task="arith", num_rollouts=preset.num_rollouts, temperature=1.0,
                                         max_new_tokens=preset.max_new_tokens, backend="hf", chat=False,
                                         answer_mode=preset.answer_mode,
                                         chunk_size=preset.score_chunk_size, seed=0,
                                         gradients=GradientConfig(projection_dim=preset.projection_dim, seed=0,
                                                                  beta=preset.grpo_beta, loss_type="dapo"))
    scored: datasets.Dataset = learnalign.score(pool, str(scorer), config, cache_dir=out / "cache",
                                                device=preset.device)
    save_dataset(scored, path)
    return scored


def train_arm(preset: DemoPreset, model_dir: Path, train_rows, out_dir: Path, seed: int) -> Path:
    """GRPO from the SFT model on ``train_rows``: the same steps and rollouts for every arm."""
    from curate.core.cache import kill_point
    from curate.core.io import atomic_dir
    from rl.runs import run_grpo

    if (out_dir / "model.safetensors").exists():
        return out_dir
    with atomic_dir(out_dir) as tmp:  # a half-saved model is never taken for a finished one
        run_grpo(_grpo_configs(preset, model_dir, tmp, seed), train_rows)
        kill_point("grpo", 1)  # test hook: the first arm this process trains, not yet in place
    return out_dir


def _grpo_configs(preset: DemoPreset, model_dir: Path, out_dir: Path, seed: int) -> tuple:
    from rl.runs import grpo_configs

    return grpo_configs(None, model_name_or_path=model_dir, task="arith", chat=False, output_dir=out_dir,
                        use_peft=False, learning_rate=preset.grpo_learning_rate, max_steps=preset.grpo_steps,
                        beta=preset.grpo_beta, warmup_steps=preset.grpo_warmup_steps, loss_type="dapo",
                        num_generations=preset.num_rollouts,
                        per_device_train_batch_size=preset.grpo_prompts_per_step * preset.num_rollouts,
                        max_completion_length=preset.max_new_tokens, seed=seed, dtype="float32",
                        answer_mode=preset.answer_mode, freeze=preset.grpo_freeze,
                        use_cpu=True if preset.device == "cpu" else None)


METRICS = ("sampled", "greedy")


def accuracy(preset: DemoPreset, model_dir: Path, test: Path, metric: str = "greedy") -> tuple[float, list[float]]:
    """Accuracy on the test split under the strict verifier and each problem's score (for paired
    comparisons): ``greedy`` (one greedy answer: 0 or 1) or ``sampled`` (``eval_samples`` answers
    at temperature 1, the policy GRPO trains and p measures: the share right; the same sampling
    seed for every model). Cached in ``<model folder>.eval`` / ``.eval-sampled`` (beside the
    model, not in it: the model's fingerprint, which keys the generation cache, must not change)."""
    from eval.evaluate import EvalConfig, evaluate
    from eval.tasks import TaskOptions

    sampled = metric == "sampled"
    eval_dir = model_dir.with_name(model_dir.name + (".eval-sampled" if sampled else ".eval"))
    summary_path = eval_dir / "summary.json"
    if not summary_path.exists():
        evaluate(EvalConfig(task="arith", model=str(model_dir), out_dir=str(eval_dir), backend="hf",
                            n=preset.eval_samples if sampled else 1, temperature=1.0 if sampled else 0.0,
                            top_p=1.0, seed=0, batch_size=128, max_new_tokens=preset.max_new_tokens,
                            device=preset.device, progress=False,
                            options=TaskOptions(source=str(test), chat=False, answer_mode=preset.answer_mode)))
    per_problem: dict[Any, list[float]] = {}
    for line in (eval_dir / "samples.jsonl").read_text().splitlines():
        sample = json.loads(line)
        per_problem.setdefault(sample["task_id"], []).append(float(sample["correct"]))
    return json.loads(summary_path.read_text())["accuracy"], [statistics.fmean(v) for v in per_problem.values()]


def evaluate_all(preset: DemoPreset, model_dir: Path, test: Path) -> dict[str, tuple[float, list[float]]]:
    """Both metrics of one model (the primary one, ``preset.metric``, and the other)."""
    return {metric: accuracy(preset, model_dir, test, metric) for metric in METRICS}


def training_summary(arm_dir: Path) -> dict[str, Any]:
    """Per-step training reward and the mean share of zero-variance groups of one GRPO run."""
    path = arm_dir / "training_log.json"
    logs = json.loads(path.read_text()) if path.exists() else []
    steps = [entry for entry in logs if "reward" in entry]
    zero = [entry["frac_reward_zero_std"] for entry in steps if "frac_reward_zero_std" in entry]
    return {"train_reward": [round(float(entry["reward"]), 4) for entry in steps],
            "frac_reward_zero_std": round(statistics.fmean(zero), 4) if zero else None}


def comparisons(correct: dict[tuple[str, int, int], list[float]], start: list[float],
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


def arm_job(preset: DemoPreset, model_dir: Path, out: Path, data: dict[str, Path], job: tuple[str, int, int]
            ) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """One arm: select its rows from the scored pool, GRPO from the SFT model, both accuracies."""
    from curate import learnalign
    from curate.llm.data import load_data

    arm, n, s = job
    scored = load_data(str(out / "scores" / "scored.jsonl"))
    rows = scored if arm == "full" else learnalign.select(scored, n, arm, seed=s)
    arm_dir = train_arm(preset, model_dir, rows, out / "arms" / f"{arm}-n{n}-seed{s}", seed=s)
    scores = evaluate_all(preset, arm_dir, data["test"])
    return ({"arm": arm, "n": n, "seed": s, "accuracy": scores[preset.metric][0],
             **{f"{metric}_accuracy": scores[metric][0] for metric in METRICS},
             "selected_success_rate": statistics.fmean(float(x) for x in rows["success_rate"]),
             **training_summary(arm_dir)}, {metric: scores[metric][1] for metric in METRICS})


def _one_thread(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def run_arms(preset: DemoPreset, model_dir: Path, out: Path, data: dict[str, Path],
             jobs: list[tuple[str, int, int]]) -> list[tuple[dict[str, Any], dict[str, list[float]]]]:
    """Every arm's (result, per-problem scores by metric), in ``jobs`` order. With ``workers`` > 1 the arms run in that
    many spawned processes, splitting the CPU threads between them (on 2 cores two single-thread
    GRPO runs do more than one with two threads); each arm is seeded on its own, so the results do
    not depend on which worker ran it or when."""
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing
    import os

    from tqdm.auto import tqdm

    if preset.workers <= 1 or len(jobs) <= 1:
        return [arm_job(preset, model_dir, out, data, job) for job in tqdm(jobs, desc="GRPO arms", unit="run")]
    threads = max(1, (os.cpu_count() or 1) // preset.workers) if preset.device == "cpu" else 0
    context = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
    with ProcessPoolExecutor(preset.workers, mp_context=context, initializer=_one_thread if threads else None,
                             initargs=(threads,) if threads else ()) as pool:
        futures = [pool.submit(arm_job, preset, model_dir, out, data, job) for job in jobs]
        bar = tqdm(total=len(jobs), desc=f"GRPO arms ({preset.workers} workers)", unit="run")
        for future in futures:
            future.add_done_callback(lambda _: bar.update())
        try:
            return [future.result() for future in futures]
        finally:
            bar.close()


def _claim(out: Path, preset: DemoPreset, seed: int) -> None:
    """Stages are reused by their files alone, so ``--out`` may hold one preset and seed only:
    refuse a folder made with others before any work (``preset.json`` records them)."""
    from curate.core.io import atomic_write_json

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
    from curate.core.io import atomic_write_json, atomic_write_text

    out = Path(out)
    if preset.metric not in METRICS:
        raise BadInputError(f"metric must be one of {', '.join(METRICS)}, got '{preset.metric}'")
    if preset.workers < 1:
        raise BadInputError(f"workers must be at least 1, got {preset.workers}")
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
    print(f"pool success rates under the scoring policy: mean {spread['mean']:.3f}, {spread['learnable']} of "
          f"{spread['size']} prompts learnable (0 < p < 1), {spread['p_equals_0']} at p=0, {spread['p_equals_1']} at p=1")
    atomic_write_json(out / "pool.json", spread)
    learnability_gate(spread, preset)

    t0 = time.monotonic()
    jobs = [(arm, n, s) for arm in preset.arms for n in preset.ns for s in preset.seeds]
    jobs += [("full", len(scored), s) for s in preset.seeds]
    start = evaluate_all(preset, model_dir, data["test"])
    results: list[dict[str, Any]] = []
    scores: dict[str, dict[tuple[str, int, int], list[float]]] = {metric: {} for metric in METRICS}
    for (arm, n, s), (result, per_problem) in zip(jobs, run_arms(preset, model_dir, out, data, jobs)):
        results.append(result)
        for metric in METRICS:
            scores[metric][(arm, n, s)] = per_problem[metric]
    lap("grpo_and_eval", t0)
    timings["total"] = round(time.monotonic() - started, 1)
    other = next(metric for metric in METRICS if metric != preset.metric)
    report = {"preset": asdict(preset), "metric": preset.metric, "start_accuracy": start[preset.metric][0],
              **{f"start_{metric}_accuracy": start[metric][0] for metric in METRICS},
              "pool_success_rate": spread, "runs": results, "table": table(results, preset),
              "comparisons": comparisons(scores[preset.metric], start[preset.metric][1], preset.seeds),
              f"comparisons_{other}": comparisons(scores[other], start[other][1], preset.seeds),
              "table_" + other: table(results, preset, f"{other}_accuracy"), "seconds": timings,
              "files": {"results": str(out / "results.json"), "markdown": str(out / "results.md"),
                        "plots": [str(out / "pool_success_rate.png"), str(out / "accuracy.png"),
                                  str(out / "train_reward.png")]}}
    atomic_write_json(out / "results.json", report)
    atomic_write_text(out / "results.md", markdown(report))
    plots(scored, report, out)
    return report


def table(results: list[dict[str, Any]], preset: DemoPreset, key: str = "accuracy") -> list[dict[str, Any]]:
    """One row per arm: accuracy mean and std over seeds for each N (the full pool: one N)."""
    rows = []
    for arm in (*preset.arms, "full"):
        row: dict[str, Any] = {"arm": arm}
        for r_n in sorted({r["n"] for r in results if r["arm"] == arm}):
            accs = [r[key] for r in results if r["arm"] == arm and r["n"] == r_n]
            row[f"N={r_n}"] = {"mean": statistics.fmean(accs), "std": statistics.pstdev(accs), "seeds": len(accs)}
        rows.append(row)
    return rows


METRIC_NAMES = {"sampled": "sampled accuracy (share of {k} answers at temperature 1 right)",
                "greedy": "greedy accuracy"}


def markdown(report: dict[str, Any]) -> str:
    preset, metric = report["preset"], report.get("metric", "greedy")
    other = next(m for m in METRICS if m != metric)
    name = lambda m: METRIC_NAMES[m].format(k=preset.get("eval_samples", 1))  # noqa: E731
    lines = [f"# curate demo ({preset['name']} preset)", "",
             f"Primary metric: {name(metric)} on {preset['test_size']} held-out problems under the strict "
             f"verifier, mean ± std over seeds {list(preset['seeds'])}. Start (SFT model): "
             f"{100 * report['start_accuracy']:.1f}%.", ""]
    lines += _table_lines(report["table"])
    lines += ["", f"Paired comparisons on the primary metric (problems x seeds; 95% paired-bootstrap interval over "
              f"problems; p: {'McNemar' if metric == 'greedy' else 'sign-flip permutation'}; an effect only when "
              "the interval excludes 0 and every seed agrees in sign):", ""]
    lines += _comparison_lines(report.get("comparisons", []))
    if f"table_{other}" in report:
        lines += ["", f"Secondary metric: {name(other)}; start {100 * report[f'start_{other}_accuracy']:.1f}%.", ""]
        lines += _table_lines(report[f"table_{other}"]) + [""] + _comparison_lines(report[f"comparisons_{other}"])
    spread = report["pool_success_rate"]
    lines += ["", f"Pool success rates under the scoring policy: mean {spread['mean']:.3f}; {spread['learnable']} "
              f"learnable, {spread['p_equals_0']} at p=0, {spread['p_equals_1']} at p=1.",
              f"Wall time (s): {report['seconds']}", ""]
    return "\n".join(lines)


def _table_lines(rows: list[dict[str, Any]]) -> list[str]:
    columns = sorted({k for row in rows for k in row if k.startswith("N=")}, key=lambda k: int(k[2:]))
    lines = ["| arm | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for row in rows:
        cells = [f"{100 * row[c]['mean']:.1f} ± {100 * row[c]['std']:.1f}" if c in row else "" for c in columns]
        lines.append(f"| {row['arm']} | " + " | ".join(cells) + " |")
    return lines


def _comparison_lines(items: list[dict[str, Any]]) -> list[str]:
    lines = ["| a | b | N | mean diff (points) | 95% interval | p | effect |", "|---|---|---|---|---|---|---|"]
    for c in items:
        lines.append(f"| {c['a']} | {c['b']} | {c['n']} | {100 * c['mean_diff']:+.1f} | "
                     f"[{100 * c['ci95'][0]:+.1f}, {100 * c['ci95'][1]:+.1f}] | {c['p_value']:.3g} | "
                     f"{'yes' if c['effect'] else 'no'} |")
    return lines


def plots(scored, report: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from curate.core.io import save_png

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist([float(x) for x in scored["success_rate"]], bins=[i / 10 for i in range(11)])
    ax.set_xlabel("success rate p under the scoring policy")
    ax.set_ylabel("pool prompts")
    save_png(fig, out / "pool_success_rate.png")
    save_png(accuracy_figure(report), out / "accuracy.png")
    save_png(reward_figure(report), out / "train_reward.png")


def accuracy_figure(report: dict[str, Any]):
    """Accuracy per arm and N (mean over seeds) with the 95% paired interval of its difference to
    the SFT start (problems x seeds, the same bootstrap as ``comparisons``) around that start."""
    import matplotlib.pyplot as plt

    start = 100 * report["start_accuracy"]
    vs_start = {(c["a"], c["n"]): c for c in report["comparisons"] if c["b"] == "start"}
    labels, means, low, high = [], [], [], []
    for row in report["table"]:
        for key in sorted((k for k in row if k.startswith("N=")), key=lambda k: int(k[2:])):
            c = vs_start.get((row["arm"], int(key[2:])))
            mean = 100 * row[key]["mean"]
            labels.append(f"{row['arm']}\n{key}")
            means.append(mean)
            low.append(mean - (start + 100 * c["ci95"][0]) if c else 0.0)
            high.append((start + 100 * c["ci95"][1]) - mean if c else 0.0)
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ax.bar(range(len(labels)), means, yerr=[low, high], capsize=3)
    ax.axhline(start, color="k", linestyle="--", linewidth=1, label="SFT start")
    ax.set_xticks(range(len(labels)), labels, fontsize=7)
    ax.set_ylabel("test accuracy (%), 95% paired interval vs start")
    ax.set_ylim(max(0.0, min(means + [start]) - 15), min(100.0, max(means + [start]) + 8))
    ax.legend()
    return fig


def reward_figure(report: dict[str, Any]):
    """GRPO training reward per step, mean over seeds, one line per arm and N (a moving average of 5)."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 3.8))
    for arm, n in sorted({(r["arm"], r["n"]) for r in report["runs"]}):
        curves = [r["train_reward"] for r in report["runs"] if r["arm"] == arm and r["n"] == n and r["train_reward"]]
        if not curves:
            continue
        steps = min(len(c) for c in curves)
        mean = np.mean([c[:steps] for c in curves], axis=0)
        width = min(5, steps)
        smooth = np.convolve(mean, np.ones(width) / width, mode="valid")
        ax.plot(range(width, steps + 1), smooth, label=f"{arm} N={n}")
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("training reward (strict verifier)")
    ax.legend(fontsize=7)
    return fig


def preset_with(name: str, **overrides: Any) -> DemoPreset:
    if name not in PRESETS:
        raise BadInputError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})

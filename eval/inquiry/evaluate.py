"""``curate eval gsm8k-hidden``: LaMAI (or a baseline) on GSM8K-Hidden with a simulated user.

Writes ``samples.jsonl`` (one line per problem: the visible question, the hidden sentence, every
(q, a) in order, u per turn, the final completion, its answer and verdict, whether a user reply
stated the gold number) and ``summary.json`` (accuracy with its Wilson 95% interval, questions
asked per problem, the share of problems with a question, the leakage rate, the gate threshold and
every setting). Problems are run in chunks cached under ``<out>/cache/`` with a key of everything
that decides them (model files, backend, settings, seed, problems), so a killed run resumes.

The gate threshold δ is a number, or ``median``: the median u of the step-1 samples on the first
``calibration`` problems of the train split (the spec: calibrate δ per embedder on a dev split).
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from curate.core.cache import derive_seed, digest, model_fingerprint, run_chunked
from curate.core.errors import BadInputError
from curate.core.io import atomic_write_json, atomic_write_text
from eval.inquiry.dialogue import Problem
from eval.inquiry.embed import Embedder, load_embedder, spread
from eval.inquiry.llm import ModelAssistant, Sampling
from eval.inquiry.loop import InquiryConfig, inquire
from eval.inquiry.registry import GSM8K_USERS
from eval.inquiry.users import ModelUser, RetrievalUser, leaks
from eval.metrics import wilson_interval
from eval.tasks import TaskOptions, get_task

TASK = "gsm8k-hidden"


@dataclass
class InquiryEvalConfig:
    model: str
    out_dir: str
    inquiry: InquiryConfig = field(default_factory=InquiryConfig)
    user: str = "retrieval"
    user_model: str | None = None  # the model user's checkpoint (default: the assistant's)
    embedder: str = "hashing"
    threshold: float | str = "median"
    calibration: int = 16
    sampling: Sampling = field(default_factory=Sampling)
    backend: str = "auto"
    dtype: str = "auto"
    device: str = "auto"
    batch_size: int = 32
    chunk_size: int = 8
    resume: bool = True
    progress: bool = True
    options: TaskOptions = field(default_factory=TaskOptions)

    def __post_init__(self) -> None:
        if self.user not in GSM8K_USERS:
            raise BadInputError(f"--user '{self.user}' is not one of {', '.join(GSM8K_USERS)} for {TASK}")
        if isinstance(self.threshold, str) and self.threshold != "median":
            raise BadInputError(f"--threshold must be a number >= 0 or 'median', got '{self.threshold}'")
        if not isinstance(self.threshold, str) and self.threshold < 0:
            raise BadInputError(f"--threshold must be a number >= 0 or 'median', got {self.threshold}")
        if self.calibration < 1:
            raise BadInputError(f"--calibration-size must be at least 1, got {self.calibration}")


def problems_from(rows: list[dict[str, Any]], full: bool = False) -> list[Problem]:
    """GSM8K-Hidden rows as problems; ``full``: the whole question visible (the reference)."""
    return [Problem(row["task_id"], row["full_question"] if full else row["question"], (row["hidden"],), row["gold"])
            for row in rows]


def calibrate(assistant: ModelAssistant, problems: list[Problem], samples: int, seed: int,
              embedder: Embedder) -> float:
    """The median of u over ``problems`` (step-1 samples with an empty dialogue)."""
    values = []
    for problem in problems:
        [answers] = assistant.sample_answers(problem, [()], samples, derive_seed(seed, "calibrate", problem.id))
        values.append(spread(embedder.embed([assistant.answer_key(a) for a in answers])))
    return float(statistics.median(values))


def evaluate_inquiry(config: InquiryEvalConfig, generator=None) -> dict[str, Any]:
    from curate.llm.generation import load_generator

    started = time.monotonic()
    task = get_task(TASK)
    rows = list(task.load(config.options))
    out = Path(config.out_dir)
    embedder = load_embedder(config.embedder)  # a wrong name fails here, before the model loads
    generator = generator or load_generator(config.model, config.backend, dtype=config.dtype, device=config.device,
                                            batch_size=config.batch_size, progress=False)
    assistant = ModelAssistant(generator, task, config.options, config.sampling)
    if config.user == "model":
        user_generator = generator if config.user_model in (None, config.model) else load_generator(
            config.user_model, config.backend, dtype=config.dtype, device=config.device, progress=False)
        user = ModelUser(user_generator, chat=config.options.chat)
    else:
        user = RetrievalUser()
    key = digest(TASK, generator.name, model_fingerprint(config.model), model_fingerprint(config.user_model),
                 json.dumps({k: v for k, v in asdict(config).items()
                             if k not in ("out_dir", "batch_size", "chunk_size", "resume", "progress", "device")},
                            sort_keys=True, default=str),
                 *(row["task_id"] + row["question"] for row in rows))
    threshold = config.threshold
    if config.inquiry.policy in ("none", "full"):  # no gate: nothing to calibrate
        threshold = 0.0 if threshold == "median" else threshold
    elif threshold == "median":
        threshold = _cached_threshold(out / "cache" / f"threshold-{key}.json", lambda: calibrate(
            assistant, problems_from(list(task.load(replace(config.options, split="train", limit=config.calibration)))),
            config.inquiry.samples, config.inquiry.seed, embedder))
    inquiry = replace(config.inquiry, threshold=float(threshold))
    problems = problems_from(rows, full=inquiry.policy == "full")

    def compute(_: int, chunk: list[Problem]) -> list[dict[str, Any]]:
        return [inquire(p, assistant, user, inquiry, embedder).to_json() for p in chunk]

    results = run_chunked(problems, compute, out / "cache" / f"inquiries-{key}.jsonl", chunk_size=config.chunk_size,
                          resume=config.resume, progress=config.progress, desc=f"inquire ({inquiry.policy})",
                          unit="problem", stage="inquire")
    verdicts = task.verify(rows, [[r["final"]] for r in results], config.options)
    records = [_record(row, result, judged[0]) for row, result, judged in zip(rows, results, verdicts)]
    summary = _summary(config, inquiry, records, generator.name, time.monotonic() - started, out)
    atomic_write_text(out / "samples.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    atomic_write_json(out / "summary.json", summary)
    return summary


def _cached_threshold(path: Path, compute) -> float:
    if path.exists():
        return float(json.loads(path.read_text())["threshold"])
    value = compute()
    atomic_write_json(path, {"threshold": value})
    return value


def _record(row: dict[str, Any], result: dict[str, Any], verdict) -> dict[str, Any]:
    return {"task_id": row["task_id"], "question": row["question"], "hidden": row["hidden"],
            "dialogue": result["dialogue"], "questions_asked": result["questions_asked"],
            "u": [step["u"] for step in result["trace"]], "completion": result["final"],
            "answer": verdict.answer, "correct": verdict.correct, "error": verdict.error, "gold": row["gold"],
            "leaked": any(leaks(turn["answer"], row["gold"]) for turn in result["dialogue"])}


def _summary(config: InquiryEvalConfig, inquiry: InquiryConfig, records: list[dict[str, Any]], backend: str,
             seconds: float, out: Path) -> dict[str, Any]:
    correct = sum(r["correct"] for r in records)
    low, high = wilson_interval(correct, len(records))
    asked = [r["questions_asked"] for r in records]
    return {
        "task": TASK, "headline": "accuracy", "problems": len(records), "samples": len(records),
        "accuracy": correct / len(records), "accuracy_ci95": [low, high],
        "questions_per_problem": statistics.fmean(asked), "share_asking": sum(a > 0 for a in asked) / len(asked),
        "leakage_rate": sum(r["leaked"] for r in records) / len(records),
        "inquiry": asdict(inquiry), "threshold": inquiry.threshold, "threshold_rule": config.threshold,
        "user": config.user, "user_model": config.user_model, "embedder": config.embedder,
        "model": config.model, "backend": backend, "sampling": asdict(config.sampling),
        "options": asdict(config.options), "seconds": round(seconds, 2),
        "files": {"samples": str(out / "samples.jsonl"), "summary": str(out / "summary.json")},
    }

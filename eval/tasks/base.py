"""Tasks as small declarative units: a name, a loader, a prompt builder, a verifier and a metric.

A task turns its dataset into rows that carry a ``task_id``, the user-facing ``question`` and
whatever the verifier needs (gold answer, tests). Evaluation (:mod:`eval.evaluate`), selection
(``curate``) and RL rewards (``rl``) look tasks up by name in :data:`TASKS`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import datasets

from curate.core.errors import BadInputError


@dataclass
class TaskOptions:
    """Options a task's loader, prompt builder and verifier read; tasks ignore what they lack."""

    source: str | None = None  # dataset path or hub id (None: the task's default)
    prompt_column: str | None = None  # the source's question column (None: the task's choice)
    answer_column: str | None = None  # the source's reference-answer column
    split: str = "test"
    limit: int | None = None
    num_fewshot: int = 0  # worked examples before the question (from the train split)
    fewshot_seed: int = 1234
    chat: bool | None = None  # None: use the chat template when the tokenizer has one
    system: str | None = None
    answer_mode: str = "flexible"  # GSM8K answer extraction: strict or flexible
    workers: int | None = None  # sandbox processes at once (code tasks)
    timeout_s: float = 10.0  # per program (code tasks)

    def __post_init__(self) -> None:
        if self.num_fewshot < 0:
            raise BadInputError(f"num_fewshot must be >= 0, got {self.num_fewshot}")
        if self.limit is not None and self.limit < 1:
            raise BadInputError(f"limit must be a positive integer, got {self.limit}")
        if self.timeout_s <= 0:
            raise BadInputError(f"timeout_s must be positive, got {self.timeout_s}")


@dataclass(frozen=True)
class Verdict:
    """The verifier's judgement of one completion."""

    correct: bool
    answer: str | None = None  # what was extracted (GSM8K) or run (code)
    error: str = ""  # why it failed, one line ('' when correct)
    extra: dict[str, Any] = field(default_factory=dict)  # task-specific fields for the sample file


@dataclass(frozen=True)
class Task:
    """One benchmark. ``verify(rows, completions, options)`` judges ``completions[i][j]`` (sample
    j of row i) in one batch, so code tasks can run their sandbox in parallel."""

    name: str
    description: str
    load: Callable[[TaskOptions], datasets.Dataset]
    build_prompt: Callable[[dict[str, Any], Any, TaskOptions], str]  # (row, tokenizer, options)
    verify: Callable[[Sequence[dict[str, Any]], Sequence[Sequence[str]], TaskOptions], list[list[Verdict]]]
    stop: Callable[[TaskOptions, bool], tuple[str, ...]]  # (options, chat) -> stop strings
    max_new_tokens: int = 256
    ks: tuple[int, ...] = (1,)  # pass@k values reported (those with k <= n)
    headline: str = "accuracy"  # the summary's main number: "accuracy" or "pass@1"
    # A user's dataset as task rows (columns checked, named in the error); for selection and RL.
    prepare: Callable[[datasets.Dataset], datasets.Dataset] | None = None
    describe: Callable[[TaskOptions], dict[str, Any]] | None = None  # the verifier, for summary.json
    answer_modes: tuple[str, ...] = ()  # the verifier's modes (TaskOptions.answer_mode); () = not used

    def check_answer_mode(self, mode: str, flag: str = "answer_mode") -> str:
        """``mode``, or a one-line error naming ``flag``, the value and this task's modes."""
        if self.answer_modes and mode not in self.answer_modes:
            raise BadInputError(f"{flag} '{mode}' is not a mode of task '{self.name}'; "
                                f"choose one of {', '.join(self.answer_modes)}")
        return mode

    def rows_from(self, ds: datasets.Dataset) -> datasets.Dataset:
        if self.prepare is None:
            raise BadInputError(f"task '{self.name}' cannot read a user's dataset")
        return self.prepare(ds)


def map_columns(ds: datasets.Dataset, prompt_column: str | None = None, answer_column: str | None = None, *,
                flags: tuple[str, str] = ("--prompt-column", "--answer-column")) -> datasets.Dataset:
    """A user's dataset with the named prompt and answer columns under the names every task reads
    first, ``prompt`` and ``response`` (tasks take the first of :data:`~curate.llm.data.PROMPT_CANDIDATES`
    / :data:`~curate.llm.data.RESPONSE_CANDIDATES` present, code tasks read ``prompt``), so that
    ``get_task(name).rows_from(map_columns(ds, "q", "a"))`` reads columns ``q`` and ``a``; other
    columns of those names are dropped. None leaves the task's own choice. A missing column is one
    :class:`BadInputError` line naming its flag (``flags``: the prompt's, the answer's, as the caller
    spells them) and value, with the available columns."""
    from curate.llm.data import PROMPT_CANDIDATES, RESPONSE_CANDIDATES

    if prompt_column is not None and prompt_column == answer_column:
        raise BadInputError(f"{flags[0]} and {flags[1]} name the same column '{prompt_column}'")
    renames = {}
    for flag, column, target in zip(flags, (prompt_column, answer_column), (PROMPT_CANDIDATES[0], RESPONSE_CANDIDATES[0])):
        if column is not None and column not in ds.column_names:
            raise BadInputError(f"{flag} '{column}': no such column; available columns: {', '.join(ds.column_names)}")
        if column is not None:
            renames[column] = target
    shadowed = [c for c in renames.values() if c in ds.column_names and c not in renames]
    return ds.remove_columns(shadowed).rename_columns({k: v for k, v in renames.items() if k != v})


TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    if task.name in TASKS:
        raise ValueError(f"task '{task.name}' is already registered")
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    import importlib

    from eval.tasks import BUILTIN

    if name not in TASKS and name in BUILTIN:
        importlib.import_module(BUILTIN[name].module)  # a built-in task registers itself on import
    if name not in TASKS:
        raise BadInputError(f"unknown task '{name}'; available tasks: {', '.join(sorted(set(TASKS) | set(BUILTIN)))}")
    return TASKS[name]

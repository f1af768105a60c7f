"""GSM8K (Cobbe et al. 2021): grade-school word problems, answers checked by their final number.

Prompts are zero- or k-shot (worked examples drawn, seeded, from the train split), plain
("Question: ...\\nAnswer:") or through the chat template. The verifier reads the answer in one of
:data:`eval.gsm8k_answers.MODES`: curatekit's ``strict``/``flexible`` compare numbers by value with
the gold "#### N"; ``lm-eval-strict``/``lm-eval-flexible`` are lm-evaluation-harness 0.4's gsm8k
filters and exact_match against the whole reference solution.
"""
from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from typing import Any

import datasets

from curate.llm.data import RESPONSE_CANDIDATES, PROMPT_CANDIDATES, default_data_dir, load_data, resolve_column
from curate.core.errors import BadInputError
from eval.gsm8k_answers import LM_EVAL_INVALID, LM_EVAL_MODES, MODES, check_mode, extract_gold, score
from curate.llm.chat import render_prompt
from eval.tasks import BUILTIN
from eval.tasks.base import Task, TaskOptions, Verdict, map_columns, register_task

HUB_ID, HUB_CONFIG = "openai/gsm8k", "main"


def default_source(split: str) -> str:
    """The offline copy (``<data>/gsm8k/<split>.jsonl``) when present, else the hub dataset."""
    data_dir = default_data_dir()
    if data_dir is not None and (data_dir / "gsm8k" / f"{split}.jsonl").exists():
        return str(data_dir / "gsm8k" / f"{split}.jsonl")
    return HUB_ID


def numeric_rows(ds: datasets.Dataset, prefix: str) -> datasets.Dataset:
    """Rows with ``task_id``, ``question``, ``answer`` (worked solution) and ``gold`` (its number)."""
    question = resolve_column(ds, None, PROMPT_CANDIDATES, "prompt")
    answer = resolve_column(ds, None, RESPONSE_CANDIDATES, "response")
    questions, answers = list(ds[question]), list(ds[answer])
    return datasets.Dataset.from_dict({
        "task_id": [f"{prefix}/{i}" for i in range(len(ds))],
        "question": questions,
        "answer": answers,
        "gold": [extract_gold(a) for a in answers],
    })


def load(options: TaskOptions) -> datasets.Dataset:
    source = options.source or default_source(options.split)
    ds = load_data(source, split=options.split, config=HUB_CONFIG if source == HUB_ID else None,
                   limit=options.limit)
    return numeric_rows(user_columns(ds, options), "gsm8k")


def user_columns(ds: datasets.Dataset, options: TaskOptions) -> datasets.Dataset:
    """``ds`` with the columns ``options`` names for question and answer (``--prompt-column``,
    ``--answer-column``) where the task reads them."""
    return map_columns(ds, options.prompt_column, options.answer_column, flags=("--prompt-column", "--answer-column"))


@functools.cache
def _train_examples() -> list[tuple[str, str]]:
    source = default_source("train")
    ds = load_data(source, split="train", config=HUB_CONFIG if source == HUB_ID else None)
    return list(zip(ds["question"], ds["answer"]))


def fewshot_examples(k: int, seed: int, exclude: str, pool: Sequence[tuple[str, str]] | None = None
                     ) -> list[tuple[str, str]]:
    """``k`` worked examples, the same for every question (seeded), never the question itself."""
    if k == 0:
        return []
    pool = list(pool if pool is not None else _train_examples())
    if k >= len(pool):
        raise BadInputError(f"num_fewshot={k} but the train split has only {len(pool)} examples")
    picked = random.Random(seed).sample(pool, k + 1)
    return [ex for ex in picked if ex[0] != exclude][:k]


def build_prompt(row: dict[str, Any], tokenizer: Any, options: TaskOptions,
                 pool: Sequence[tuple[str, str]] | None = None) -> str:
    examples = fewshot_examples(options.num_fewshot, options.fewshot_seed, row["question"], pool)
    return render_prompt(tokenizer, [*examples, (row["question"], "")], system=options.system, chat=options.chat)


def verify(rows: Sequence[dict[str, Any]], completions: Sequence[Sequence[str]],
           options: TaskOptions) -> list[list[Verdict]]:
    mode = check_mode(options.answer_mode)
    verdicts = []
    for row, samples in zip(rows, completions):
        # lm-eval compares with the whole solution; rows without one (a bare gold) still work.
        reference = (row.get("answer") or row["gold"]) if mode in LM_EVAL_MODES else row["gold"]
        verdicts.append([_judge(text, row["gold"], reference, mode) for text in samples])
    return verdicts


def _judge(text: str, gold: str, reference: str, mode: str) -> Verdict:
    answer, correct = score(text, reference, mode)
    missing = answer is None or answer == LM_EVAL_INVALID
    error = "" if correct else ("no answer found" if missing else f"expected {gold}")
    return Verdict(correct, answer, error, {"gold": gold})


def stop(options: TaskOptions, chat: bool) -> tuple[str, ...]:
    # A plain prompt's answer ends where the model starts the next "Question:".
    return () if chat else ("Question:", "\n\n\n")


TASK = register_task(Task(
    name="gsm8k", description=BUILTIN["gsm8k"].description,
    load=load, build_prompt=build_prompt, verify=verify, stop=stop, max_new_tokens=256, answer_modes=MODES,
    prepare=lambda ds: numeric_rows(ds, "gsm8k"),
))

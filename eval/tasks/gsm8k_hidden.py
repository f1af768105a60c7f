"""GSM8K-Hidden (LaMAI's offline benchmark, spec "Running offline"): each GSM8K question with one
non-final sentence that contains a number hidden from the assistant; only the simulated user holds it.

The question is split into sentences (after ``.``, ``!`` or ``?`` followed by a space and a capital,
digit, currency sign or quote); the sentence to hide is drawn, seeded by ``fewshot_seed`` and the
row, among the non-final ones with a digit (1,225 of the 1,319 test questions have one; the others
are left out). Rows keep the full question (``full_question``) and the hidden sentence (``hidden``).
Answers are judged by GSM8K's verifier against the full question's gold number. The inquiry itself
(``curate eval gsm8k-hidden --inquiry ...``) is :mod:`eval.inquiry.evaluate`.
"""
from __future__ import annotations

import random
import re
from typing import Any

import datasets

from curate.llm.data import load_data
from eval.tasks import BUILTIN
from eval.tasks import gsm8k
from eval.tasks.base import Task, TaskOptions, register_task

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9$\"'(])")


def sentences(question: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(question.strip()) if s]


def hide_sentence(question: str, seed: int | str) -> tuple[str, str] | None:
    """(visible question, hidden sentence), or None when no non-final sentence has a digit."""
    parts = sentences(question)
    eligible = [i for i, s in enumerate(parts[:-1]) if re.search(r"\d", s)]
    if not eligible:
        return None
    hidden = random.Random(f"gsm8k-hidden:{seed}").choice(eligible)
    return " ".join(p for i, p in enumerate(parts) if i != hidden), parts[hidden]


def hidden_rows(ds: datasets.Dataset, seed: int, prefix: str = "gsm8k-hidden") -> datasets.Dataset:
    rows = gsm8k.numeric_rows(ds, "gsm8k")
    kept: dict[str, list[Any]] = {k: [] for k in ("task_id", "question", "hidden", "full_question", "answer", "gold")}
    for i, row in enumerate(rows):
        split = hide_sentence(row["question"], f"{seed}:{i}")
        if split is None:
            continue
        for key, value in zip(kept, (f"{prefix}/{i}", *split, row["question"], row["answer"], row["gold"])):
            kept[key].append(value)
    return datasets.Dataset.from_dict(kept)


def load(options: TaskOptions) -> datasets.Dataset:
    source = options.source or gsm8k.default_source(options.split)
    ds = load_data(source, split=options.split, config=gsm8k.HUB_CONFIG if source == gsm8k.HUB_ID else None)
    rows = hidden_rows(gsm8k.user_columns(ds, options), options.fewshot_seed)
    return rows.select(range(min(options.limit, len(rows)))) if options.limit else rows


TASK = register_task(Task(
    name="gsm8k-hidden", description=BUILTIN["gsm8k-hidden"].description,
    load=load, build_prompt=gsm8k.build_prompt, verify=gsm8k.verify, stop=gsm8k.stop, max_new_tokens=256,
    answer_modes=gsm8k.TASK.answer_modes,
    prepare=lambda ds: hidden_rows(ds, 1234),
))

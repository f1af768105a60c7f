"""``arith``: synthetic GSM8K-style word problems with step-by-step answers ("#### N").

A problem starts someone with a quantity of something and applies ``min_steps``..``max_steps``
additions or subtractions (each number has 1..``max_digits`` digits, the count drawn uniformly, so
easy and hard problems mix; never below zero), then asks how many there are now. The worked answer writes one equation per step and ends "#### N", so the GSM8K verifier and
prompts serve unchanged. Splits are generated from a seed; the test split never repeats a train
question. ``source`` may instead name a file of such rows (e.g. written by ``curate demo``).
"""
from __future__ import annotations

import functools
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import datasets

from curate.core.errors import BadInputError
from eval.tasks import gsm8k
from eval.tasks import BUILTIN
from eval.tasks.base import Task, TaskOptions, Verdict, register_task

NAMES = ("Ada", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lea", "Max", "Noa")
ITEMS = ("apples", "stamps", "marbles", "coins", "books", "shells", "cards", "pens")
ADD = ("{who} buys {n} more.", "{who} finds {n} more.", "{who} gets {n} more from a friend.")
SUB = ("{who} gives away {n}.", "{who} sells {n}.", "{who} loses {n}.")


@dataclass(frozen=True)
class ArithConfig:
    min_steps: int = 1
    max_steps: int = 3
    max_digits: int = 2
    ops: str = "+-"

    def __post_init__(self) -> None:
        if not 1 <= self.min_steps <= self.max_steps:
            raise BadInputError(f"need 1 <= min_steps <= max_steps, got {self.min_steps}, {self.max_steps}")
        if not 1 <= self.max_digits <= 6:
            raise BadInputError(f"max_digits must be in [1, 6], got {self.max_digits}")
        if not self.ops or set(self.ops) - set("+-"):
            raise BadInputError(f"ops must be made of '+' and '-', got '{self.ops}'")


def make_problem(rng: random.Random, config: ArithConfig) -> dict[str, Any]:
    """One problem: ``question``, ``answer`` (worked, ending "#### N") and ``steps``."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)

    def number(cap: int | None = None) -> int:
        top = 10 ** rng.randint(1, config.max_digits) - 1
        return rng.randint(1, min(top, cap) if cap else top)

    value = number()
    sentences, lines = [f"{name} has {value} {item}."], []
    steps = rng.randint(config.min_steps, config.max_steps)
    for _ in range(steps):
        op = rng.choice(config.ops) if value > 0 else "+"
        n = number() if op == "+" else number(cap=value)
        new = value + n if op == "+" else value - n
        sentences.append(rng.choice(ADD if op == "+" else SUB).format(who=name, n=n))
        lines.append(f"{value} {op} {n} = {new}")
        value = new
    question = " ".join(sentences) + f" How many {item} does {name} have now?"
    return {"question": question, "answer": "\n".join(lines) + f"\n#### {value}", "steps": steps}


def generate(count: int, seed: int, config: ArithConfig | None = None,
             exclude: Sequence[str] = ()) -> datasets.Dataset:
    """``count`` distinct problems from ``seed`` (none whose question is in ``exclude``)."""
    config = config or ArithConfig()
    rng, seen, rows = random.Random(seed), set(exclude), []
    attempts = 0
    while len(rows) < count:
        attempts += 1
        if attempts > 50 * count + 1000:
            raise BadInputError(f"cannot make {count} distinct problems with {config}; allow more steps or digits")
        problem = make_problem(rng, config)
        if problem["question"] not in seen:
            seen.add(problem["question"])
            rows.append(problem)
    return datasets.Dataset.from_list(rows)


@functools.cache
def default_split(split: str) -> datasets.Dataset:
    train = generate(2000, seed=0)
    if split == "train":
        return train
    if split == "test":
        return generate(500, seed=1, exclude=train["question"])
    raise BadInputError(f"arith has splits 'train' and 'test', got '{split}'")


def load(options: TaskOptions) -> datasets.Dataset:
    if options.source:
        from curate.llm.data import load_data

        ds = gsm8k.user_columns(load_data(options.source, split=options.split, limit=options.limit), options)
    else:
        ds = default_split(options.split)
        ds = ds.select(range(min(len(ds), options.limit or len(ds))))
    return gsm8k.numeric_rows(ds, "arith")


@functools.cache
def _fewshot_pool() -> tuple[tuple[str, str], ...]:
    train = default_split("train")
    return tuple(zip(train["question"], train["answer"]))


def build_prompt(row: dict[str, Any], tokenizer: Any, options: TaskOptions) -> str:
    # The few-shot pool is built once, and only when asked for (reading 2000 rows per prompt was
    # most of an evaluation's time).
    return gsm8k.build_prompt(row, tokenizer, options, pool=_fewshot_pool() if options.num_fewshot else None)


# The strict verifier ("lines"): the final answer, and every equation line the one the question implies.
_START = re.compile(r"^(\w+) has (\d+) (\w+)\.")
_STEP = [(re.compile(re.escape(t).replace(r"\{who\}", r"\w+").replace(r"\{n\}", r"(\d+)")), op)
         for templates, op in ((ADD, "+"), (SUB, "-")) for t in templates]
_EQUATION = re.compile(r"(-?\d+)\s*([+\-])\s*(-?\d+)\s*=\s*(-?\d+)")


def slip_answers(ds: datasets.Dataset, items: Sequence[str], rate: float, seed: int) -> datasets.Dataset:
    """A systematic error in worked answers, as real SFT data has and a verifier catches: for
    questions about ``items``, a seeded ``rate`` share of the answers ends "#### N+1" (the worked
    lines stay right), marked in a ``slipped`` column."""
    rng = random.Random(seed)

    def slip(row: dict[str, Any]) -> dict[str, Any]:
        hit = question_item(row["question"]) in items and rng.random() < rate
        if hit:
            body, _, final = row["answer"].rpartition("#### ")
            row["answer"] = f"{body}#### {int(final) + 1}"
        return {**row, "slipped": hit}

    return ds.map(slip, load_from_cache_file=False)


def question_item(question: str) -> str | None:
    """What a problem counts ("apples", ...), or None if it is not one of this task's questions."""
    start = _START.match(question)
    return start.group(3) if start else None


def expected_lines(question: str) -> list[str] | None:
    """The worked lines ("a + b = c") a problem's question implies, or None if it is not one of
    this task's questions."""
    start = _START.match(question)
    if not start:
        return None
    value, lines = int(start.group(2)), []
    for sentence in re.findall(r"[^.?]+\.", question[start.end():]):
        step = next(((m, op) for pattern, op in _STEP if (m := pattern.fullmatch(sentence.strip()))), None)
        if step is None:
            return None
        n = int(step[0].group(1))
        new = value + n if step[1] == "+" else value - n
        lines.append(f"{value} {step[1]} {n} = {new}")
        value = new
    return lines


def check_lines(question: str, completion: str) -> str:
    """'' when the completion's equation lines are exactly the question's worked lines, in order;
    else why not."""
    expected = expected_lines(question)
    if expected is None:
        return "not an arith question"
    written = [f"{a} {op} {b} = {c}" for a, op, b, c in _EQUATION.findall(completion)]
    for i, (want, got) in enumerate(zip(expected, written)):
        if want != got:
            return f"line {i + 1}: wrote {got}, expected {want}"
    if len(written) != len(expected):
        return f"wrote {len(written)} equation lines, expected {len(expected)}"
    return ""


def verify(rows: Sequence[dict[str, Any]], completions: Sequence[Sequence[str]],
           options: TaskOptions) -> list[list[Verdict]]:
    """GSM8K's verifier; with ``answer_mode="lines"`` (strict) the final answer read strictly and
    every intermediate line right (a right number reached through a wrong line fails)."""
    if options.answer_mode != "lines":
        return gsm8k.verify(rows, completions, options)
    verdicts = gsm8k.verify(rows, completions, replace(options, answer_mode="strict"))
    for row, samples, judged in zip(rows, completions, verdicts):
        for j, (text, verdict) in enumerate(zip(samples, judged)):
            wrong_line = check_lines(row["question"], text)
            if verdict.correct and wrong_line:
                judged[j] = replace(verdict, correct=False, error=wrong_line)
    return verdicts


TASK = register_task(Task(
    name="arith", description=BUILTIN["arith"].description,
    load=load, build_prompt=build_prompt, verify=verify, stop=gsm8k.stop, max_new_tokens=64,
    answer_modes=gsm8k.MODES + ("lines",),
    prepare=lambda ds: gsm8k.numeric_rows(ds, "arith"),
))

"""The synthetic `arith` task: every worked answer is arithmetically right and ends "#### N", the
GSM8K verifier accepts it, difficulty settings hold, and splits are seeded and disjoint."""
from __future__ import annotations

import re

import pytest

from curate.core.errors import BadInputError
from eval.tasks import TaskOptions, get_task
from eval.tasks.arith import ArithConfig, generate


@pytest.mark.parametrize("config", [ArithConfig(), ArithConfig(min_steps=2, max_steps=4, max_digits=3),
                                    ArithConfig(ops="+", max_digits=1, max_steps=1)])
def test_worked_answers_are_right(config):
    ds = generate(300, seed=3, config=config)
    for row in ds:
        lines = row["answer"].splitlines()
        equations, final = lines[:-1], lines[-1]
        assert len(equations) == row["steps"] and config.min_steps <= row["steps"] <= config.max_steps
        value = None
        for eq in equations:
            a, op, b, c = re.fullmatch(r"(\d+) ([+-]) (\d+) = (\d+)", eq).groups()
            assert op in config.ops and int(b) < 10 ** config.max_digits
            assert value is None or int(a) == value  # each step continues the last
            assert int(c) == (int(a) + int(b) if op == "+" else int(a) - int(b)) >= 0
            value = int(c)
        assert final == f"#### {value}"
        assert row["question"].endswith("have now?")


def test_the_gsm8k_verifier_accepts_the_worked_answer():
    task = get_task("arith")
    rows = list(task.load(TaskOptions(split="test", limit=50)))
    verdicts = task.verify(rows, [[r["answer"], "I do not know"] for r in rows], TaskOptions())
    assert all(v[0].correct and not v[1].correct for v in verdicts)


def test_splits_are_seeded_and_disjoint():
    task = get_task("arith")
    train, test = (task.load(TaskOptions(split=s)) for s in ("train", "test"))
    assert not set(train["question"]) & set(test["question"])
    assert generate(20, seed=7)["question"] == generate(20, seed=7)["question"]
    assert generate(20, seed=7)["question"] != generate(20, seed=8)["question"]


def test_bad_settings_are_refused():
    with pytest.raises(BadInputError, match="max_digits"):
        ArithConfig(max_digits=0)
    with pytest.raises(BadInputError, match="ops"):
        ArithConfig(ops="*")
    with pytest.raises(BadInputError, match="min_steps"):
        ArithConfig(min_steps=3, max_steps=2)

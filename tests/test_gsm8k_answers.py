"""GSM8K answer extraction on tricky completions, in both modes."""
from __future__ import annotations

import json

import pytest

from eval.errors import BadInputError
from eval.gsm8k_answers import extract_answer, extract_gold, is_correct, normalize_number

# (completion, strict answer, flexible answer)
CASES = [
    ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "72", "72"),
    ("#### 1,000", "1000", "1000"),
    ("The total is 1,234,567 dollars.", None, "1234567"),
    ("She pays $1,250.00 in total.\n#### $1,250.00", "1250", "1250"),
    ("The answer is 42.", "42", "42"),
    ("The answer is: 42", "42", "42"),
    ("The final answer is 7", "7", "7"),
    ("the answer is -3", "-3", "-3"),
    ("It drops 5 degrees to -12", None, "-12"),
    ("#### -8", "-8", "-8"),
    ("He runs 3.5 km each day", None, "3.5"),
    ("So 10.0 liters remain.\n#### 10.0", "10", "10"),
    ("That costs $5.50.", None, "5.5"),
    ("There are 5 apples and 7 oranges, 12 fruits in all.", None, "12"),
    ("I don't know.", None, None),
    ("", None, None),
    ("#### 18\nThe answer is 20", "18", "18"),
    ("The answer is 3. Then later 9 more.", "3", "3"),
    ("She has 12 marbles. #### 12 marbles", "12", "12"),
    ("3 + 4 = 7\n7 * 2 = 14", None, "14"),
    ("Total: 2,000.", None, "2000"),
    ("It takes 45 minutes.", None, "45"),
    ("The answer is $ 30", "30", "30"),
    ("Profit = 0.25 * 400 = 100\n#### 100", "100", "100"),
    ("They earn 1000 dollars and the answer is 1,000", "1000", "1000"),
    ("#### 0", "0", "0"),
    ("Answer: 007", None, "7"),
    ("It is 12:30 now, so 30 minutes.", None, "30"),
    ("2.50 + 2.50 = 5.00", None, "5"),
    ("10% of 50 is 5", None, "5"),
    ("#### 3.75", "3.75", "3.75"),
    ("The answer is 1,000,000.", "1000000", "1000000"),
    ("Step 1: 6 eggs.\nStep 2: 6 - 3 = 3 eggs left.", None, "3"),
]


@pytest.mark.parametrize("completion, strict, flexible", CASES)
def test_extraction(completion, strict, flexible):
    assert extract_answer(completion, "strict") == strict
    assert extract_answer(completion, "flexible") == flexible


def test_at_least_thirty_tricky_cases():
    assert len(CASES) >= 30


@pytest.mark.parametrize("raw, normal", [("1,000", "1000"), ("$5.50", "5.5"), ("3.0", "3"), ("-0.50", "-0.5"),
                                         ("42.", "42"), ("abc", None)])
def test_normalize_number(raw, normal):
    assert normalize_number(raw) == normal


def test_gold_of_every_gsm8k_test_answer(gsm8k_dir):
    rows = [json.loads(line) for line in (gsm8k_dir / "test.jsonl").read_text().splitlines()]
    golds = [extract_gold(r["answer"]) for r in rows]
    assert len(golds) == 1319 and all(g is not None for g in golds)
    # The reference solution itself is judged correct in strict mode.
    assert all(is_correct(r["answer"], g, "strict") for r, g in zip(rows, golds))


def test_is_correct_compares_normalised_numbers():
    assert is_correct("The answer is $1,000.00", "1000")
    assert not is_correct("The answer is 999", "1000")
    assert not is_correct("no number here", "5")


def test_bad_input():
    with pytest.raises(BadInputError, match="no '#### N' gold number"):
        extract_gold("just text")
    with pytest.raises(BadInputError, match="unknown extraction mode 'loose'"):
        extract_answer("#### 1", "loose")

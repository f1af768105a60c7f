"""GSM8K answers in curatekit's own modes: extraction on tricky completions, number parsing
(leading-dot decimals, negatives, thousands separators, currency, units, fractions), value
comparison, and the answer mode wired through the task, the CLI and summary.json.

lm-evaluation-harness's modes are checked against the real package in test_lm_eval_agreement.py."""
from __future__ import annotations

import json

import pytest

from curate.cli import main
from curate.core.errors import BadInputError
from eval.gsm8k_answers import MODES, extract_answer, extract_gold, is_correct, normalize_number
from eval.rewards import TaskReward
from eval.tasks import TaskOptions, get_task

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


# Numbers as a person writes them: (completion, strict answer, flexible answer), exact values.
NUMBER_CASES = [
    ("#### .25", "0.25", "0.25"),  # kills reading `.25` as 25
    ("She saves .5 of it", None, "0.5"),  # same, in flexible
    ("#### -.5", "-0.5", "-0.5"),  # kills dropping the sign of a leading-dot decimal
    ("#### -5.", "-5", "-5"),  # kills keeping the sentence's period ("-5." is not "-5" as text)
    ("#### -3", "-3", "-3"),
    ("x = -12.5 degrees", None, "-12.5"),
    ("#### \u22125", "-5", "-5"),  # kills ignoring the unicode minus (reads 5)
    ("He had 10-3 apples", None, "3"),  # kills reading a subtraction's "-3" as negative
    ("(\u22124) + 6 = 2", None, "2"),
    ("#### (\u22124)", None, "-4"),  # strict wants the number right after "####"
    ("-$5 is the change", None, "-5"),  # kills losing the sign before a currency symbol
    ("#### $1,000", "1000", "1000"),  # kills stopping at "$"
    ("#### $1,234.50", "1234.5", "1234.5"),  # kills "1,234.50" -> 1234 or 1.234
    ("#### 1,234,567", "1234567", "1234567"),
    ("Total: 1,000.", None, "1000"),  # kills the sentence's period as a decimal point
    ("#### 1,000.00", "1000", "1000"),
    ("The numbers 3,4,5", None, "5"),  # kills commas without 3-digit groups as thousands (345)
    ("The answer is: $ 30.00", "30", "30"),
    ("Costs \u20ac40", None, "40"),
    ("\u00a32.50 each", None, "2.5"),
    ("#### 12 dollars", "12", "12"),  # units after the number
    ("The answer is 12 dollars.", "12", "12"),
    ("It weighs 5kg", None, "5"),  # kills needing a word boundary after the number
    ("That is 5% of them", None, "5"),
    ("#### 3/4", "0.75", "0.75"),  # kills reading "3/4" as 3 (strict) or 4 (flexible)
    ("#### 1/3", "1/3", "1/3"),  # no finite decimal: kept as a reduced fraction
    ("#### 10/4", "2.5", "2.5"),
    ("#### 0.50", "0.5", "0.5"),
    ("#### 2.50.", "2.5", "2.5"),
    ("#### 3.14159", "3.14159", "3.14159"),
    ("#### 007", "7", "7"),
    ("#### **72**", "72", "72"),  # markdown bold between "####" and the number
    ("THE ANSWER IS 9", "9", "9"),  # kills a case-sensitive "The answer is"
    ("#### 72\n#### 5", "72", "72"),  # strict and flexible: the first "####"
    ("The answer is 5. Check: 5 + 3 = 8", "5", "5"),  # a stated answer beats later numbers
    ("It takes 1.5 hours, i.e. .5 more than 1", None, "1"),  # kills first number instead of last
    ("#### .", None, None),  # kills "." alone as a number
    ("Wait... no", None, None),  # kills lm-eval's "..." as a number in curatekit's modes
    ("Step 2: 6 - 3 = 3", None, "3"),
    ("#### 0", "0", "0"),
    ("#### -0", "0", "0"),  # value compare: -0 is 0
]


@pytest.mark.parametrize("completion, strict, flexible", NUMBER_CASES)
def test_number_parsing(completion, strict, flexible):
    assert extract_answer(completion, "strict") == strict
    assert extract_answer(completion, "flexible") == flexible


def test_at_least_forty_number_cases():
    assert len(NUMBER_CASES) >= 40


@pytest.mark.parametrize("raw, normal", [
    ("1,000", "1000"), ("$5.50", "5.5"), ("3.0", "3"), ("-0.50", "-0.5"), ("42.", "42"), ("abc", None),
    (".25", "0.25"), ("-.25", "-0.25"), ("\u22123", "-3"), ("1,000.", "1000"), ("$1,234.50", "1234.5"),
    ("7/8", "0.875"), ("2/6", "1/3"), ("5/0", None), (".", None), ("-", None), ("", None),
    ("1/1024", "0.0009765625"), ("123456789012345678901234567890.5", "123456789012345678901234567890.5"),
])
def test_normalize_number(raw, normal):
    assert normalize_number(raw) == normal


# (completion, reference: a gold number or a whole "... #### N" solution, mode, correct)
COMPARE_CASES = [
    ("#### .25", "0.25", "strict", True),
    ("#### 25", "0.25", "strict", False),  # kills comparing digits without the decimal point
    ("The answer is $1,000.00", "1000", "strict", True),  # kills string compare
    ("#### 1000", "So 1,000 in all.\n#### 1,000", "strict", True),  # kills not normalising the gold
    ("#### 0.75", "3/4", "strict", True),
    ("#### 0.33", "1/3", "flexible", False),  # kills float rounding
    ("#### -5", "5", "strict", False),  # kills dropping the sign
    ("#### 5.", "5", "strict", True),
    ("It weighs 12 dollars", "12", "flexible", True),
    ("It weighs 12 dollars", "12", "strict", False),
    ("#### 72.0", "Natalia sold 72 clips.\n#### 72", "flexible", True),
    ("#### 72.0", "Natalia sold 72 clips.\n#### 72", "lm-eval-strict", False),  # lm-eval: strings
    ("#### \u22125", "-5", "flexible", True),
]


@pytest.mark.parametrize("completion, reference, mode, correct", COMPARE_CASES)
def test_comparison(completion, reference, mode, correct):
    assert is_correct(completion, reference, mode) is correct


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
    with pytest.raises(BadInputError, match="unknown answer mode 'loose' \\(--answer-mode"):
        extract_answer("#### 1", "loose")
    with pytest.raises(BadInputError, match="unknown answer mode 'lm-eval'"):
        get_task("gsm8k").verify([{"gold": "1"}], [["#### 1"]], TaskOptions(answer_mode="lm-eval"))


def test_task_verifier_in_lm_eval_modes():
    task = get_task("gsm8k")
    row = {"gold": "1000", "answer": "10 * 100 = 1,000 dollars.\n#### 1,000"}
    texts = ["#### 1,000", "#### 1000.00", "so $1,000 in all", "no idea"]
    strict = task.verify([row], [texts], TaskOptions(answer_mode="lm-eval-strict"))[0]
    flexible = task.verify([row], [texts], TaskOptions(answer_mode="lm-eval-flexible"))[0]
    assert [v.correct for v in strict] == [True, False, False, False]
    assert [v.correct for v in flexible] == [True, False, True, False]
    assert [v.answer for v in strict] == ["1,000", "1000.00", "[invalid]", "[invalid]"]
    assert strict[2].error == "no answer found" and strict[1].error == "expected 1000"
    # A row with only the gold number (no solution) is compared with that number.
    bare = task.verify([{"gold": "1000"}], [["#### 1000"]], TaskOptions(answer_mode="lm-eval-strict"))
    assert bare[0][0].correct


def test_grpo_reward_in_every_mode():
    completions = [[{"role": "assistant", "content": "#### 1,000"}], "so .25 left", "nothing"]
    columns = {"gold": ["1000", "0.25", "3"], "answer": ["#### 1000", "#### 0.25", "#### 3"]}
    rewards = {mode: TaskReward("gsm8k", TaskOptions(answer_mode=mode))(["p"] * 3, completions, **columns)
               for mode in MODES}
    assert rewards == {"strict": [1.0, 0.0, 0.0], "flexible": [1.0, 1.0, 0.0],
                       "lm-eval-strict": [1.0, 0.0, 0.0], "lm-eval-flexible": [1.0, 0.0, 0.0]}


def test_cli_answer_mode_reaches_the_summary(tmp_path, gsm8k_dir, capsys):
    rows = [json.loads(line) for line in (gsm8k_dir / "test.jsonl").read_text().splitlines()[:2]]
    gold = extract_gold(rows[0]["answer"])
    predictions = tmp_path / "predictions.jsonl"
    lines = [{"task_id": "gsm8k/0", "completion": f"The answer is {gold}."},
             {"task_id": "gsm8k/1", "completion": rows[1]["answer"]}]
    predictions.write_text("".join(json.dumps(x) + "\n" for x in lines))
    accuracy = {}
    for mode in MODES:
        out = tmp_path / mode
        assert main(["eval", "gsm8k", "--predictions", str(predictions), "--out", str(out),
                     "--answer-mode", mode]) == 0
        summary = json.loads((out / "summary.json").read_text())
        assert summary["options"]["answer_mode"] == mode
        accuracy[mode] = summary["accuracy"]
    # "The answer is N." has no "#### N": lm-eval-strict alone misses it.
    assert accuracy == {"strict": 1.0, "flexible": 1.0, "lm-eval-strict": 0.5, "lm-eval-flexible": 1.0}
    with pytest.raises(SystemExit):
        main(["eval", "gsm8k", "--predictions", str(predictions), "--answer-mode", "loose"])
    assert "invalid choice: 'loose'" in capsys.readouterr().err


def test_help_lists_every_mode(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "gsm8k", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "{" + ",".join(MODES) + "}" in text and "lm-evaluation-harness 0.4" in text

"""curatekit's ``lm-eval-strict`` / ``lm-eval-flexible`` against lm-evaluation-harness 0.4 itself.

The reference run uses lm-eval's own pieces, no model and no hub: the gsm8k task config shipped in
the package (``lm_eval/tasks/gsm8k/gsm8k.yaml``), its filter pipelines built by
``build_filter_ensemble`` (RegexFilter, then take_first), the target rendered by its template, and
``exact_match`` with the task's metric arguments. Every case also carries the filtered string and
the verdict derived by hand from those rules, so a change on either side shows up as a failure.
"""
from __future__ import annotations

import importlib.resources
import re
from functools import cache
from typing import Any

import pytest
import yaml
from lm_eval.api.instance import Instance
from lm_eval.api.metrics import exact_match_fn
from lm_eval.filters import build_filter_ensemble
from lm_eval.utils import apply_template

from eval import gsm8k_answers
from eval.gsm8k_answers import LM_EVAL_INVALID as INV
from eval.gsm8k_answers import score

# GSM8K train[0]'s solution, and two more references of the same shape.
R72 = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
       "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72")
R1000 = "He pays 10 * 100 = <<10*100=1000>>1000 dollars.\n#### 1000"
R1000_COMMA = "He pays 10 * 100 = <<10*100=1000>>1,000 dollars.\n#### 1,000"

# (completion, reference, strict string, strict verdict, flexible string, flexible verdict)
CASES = [
    # Plain agreement: the filters and the gold's "(?s).*#### " strip.
    ("Natalia sold 24 clips in May.\n#### 72", R72, "72", True, "72", True),
    ("#### 72", R72, "72", True, "72", True),
    # Leading-dot decimals are NOT read as 0.25 by lm-eval: string compare (kills "numeric compare").
    ("#### .25", "So .25\n#### 0.25", ".25", False, ".25", False),
    ("#### .25", "#### .25", ".25", True, ".25", True),
    # Trailing period removed by "\.$" on the prediction (kills "not stripping the trailing period").
    ("#### -5.", "#### -5", "-5.", True, "-5.", True),
    # ...and on the gold (kills "not stripping the trailing period from gold").
    ("#### 72", "x #### 72.", "72", True, "72", True),
    # "$" is outside the strict class: no strict match at all (kills "allowing $ in strict").
    ("#### $1,000", R1000, INV, False, "$1,000", True),
    # Commas removed from both sides (kills "not applying regexes_to_ignore to the gold").
    ("#### 1000", R1000_COMMA, "1000", True, "1000", True),
    ("#### 1,000", R1000, "1,000", True, "1,000", True),
    # Several "####": strict takes the first, flexible the last (kills "first match in flexible").
    ("#### 5\n#### 72", R72, "5", False, "72", True),
    ("#### 72\n#### 5", R72, "72", True, "5", False),
    # Numbers after the answer: flexible picks them up (kills "flexible = strict when #### exists").
    ("#### 72\nCheck: 72 - 24 = 48", R72, "72", True, "48", False),
    ("#### 72\nThe answer is 72.", R72, "72", True, "72.", True),
    # No number at all: the fallback string, wrong (kills "None instead of [invalid]").
    ("I don't know.", R72, INV, False, INV, False),
    ("", R72, INV, False, INV, False),
    # A fraction is not a number for lm-eval (kills "reading 3/4 as 0.75 in lm-eval modes").
    ("#### 3/4", "#### 0.75", "3", False, "4", False),
    # The unicode minus is no minus: strict finds nothing, flexible reads "5" (kills "normalising \u2212").
    ("#### \u22125", "#### -5", INV, False, "5", False),
    ("#### -5", "#### -5", "-5", True, "-5", True),
    # Trailing text after the number.
    ("#### 72 apples in all", R72, "72", True, "72", True),
    ("The answer is 72.", R72, INV, False, "72.", True),
    ("The answer is 72.\n", R72, INV, False, "72.", True),
    # No numeric compare: 1000.00 is not 1000 (kills "Decimal compare in lm-eval modes").
    ("#### 1000.00", R1000, "1000.00", False, "1000.00", False),
    ("#### 72.0", R72, "72.0", False, "72.0", False),
    # A gold that keeps a trailing newline is never matched (kills "stripping the gold").
    ("#### 72", "x\n#### 72\n", "72", False, "72", False),
    # Strict needs exactly one space after "####" (kills "\s*" after ####).
    ("####72", R72, INV, False, "72", True),
    ("####  72", R72, INV, False, "72", True),
    ("#### 7 2", R72, "7", False, "2", False),
    # Flexible's class takes "$" and runs of dots and commas as a number (kills "\d+ only").
    ("It costs $72", R72, INV, False, "$72", True),
    ("Hmm... let me think...", R72, INV, False, "...", False),
    ("The answer is 72...", R72, INV, False, "72...", False),
    ("I count 3,4,5 so 345", "#### 345", INV, False, "345", True),
    ("Those are 3,4,5", "#### 345", INV, False, "3,4,5", True),
    ("#### ,72", R72, ",72", True, ",72", True),
    # A minus sign is kept, so -72 is not 72 (kills "dropping the sign").
    ("The change is -72", R72, INV, False, "-72", False),
    ("--72", "#### -72", INV, False, "-72", True),
    ("#### -0", "#### 0", "-0", False, "-0", False),
    ("x = -.5", "#### -0.5", INV, False, "-.5", False),
    # Calculator annotations and percent signs.
    ("<<48/2=24>>24 clips\n#### 72", R72, "72", True, "72", True),
    ("That is 72% of them", R72, INV, False, "72", True),
    ("At 12:30 she had 72", R72, INV, False, "72", True),
    ("1e3 is 1000", R1000, INV, False, "1000", True),
    # Only ASCII digits count (kills "\d" instead of [0-9]).
    ("#### \uff17\uff12", R72, INV, False, INV, False),
    # Markdown: "**72**." ends in "**." whose lone "." is no match; the last match is "72".
    ("The answer is **72**.", R72, INV, False, "72", True),
    # The gold's "(?s).*####" is greedy: only the text after the last "#### " stays.
    ("#### 72", "first #### 5\nthen #### 72", "72", True, "72", True),
    # Case is ignored: "[invalid]" equals a gold of "[INVALID]" (kills "ignore_case=False").
    ("no number", "#### [INVALID]", INV, True, INV, True),
    # numpy string arrays drop trailing NULs, so "72\0" equals "72" (kills "plain str compare").
    ("#### 72", "x #### 72\x00", "72", True, "72", True),
]


@cache
def _task_config() -> dict[str, Any]:
    text = (importlib.resources.files("lm_eval") / "tasks" / "gsm8k" / "gsm8k.yaml").read_text()
    return yaml.safe_load(text)


def lm_eval_judge(completion: str, reference: str) -> dict[str, tuple[str, bool]]:
    """lm-eval's filtered string and exact_match verdict per filter: {"strict-match": ..., ...}."""
    config = _task_config()
    metric = config["metric_list"][0]
    kwargs = {k: metric[k] for k in ("ignore_case", "ignore_punctuation", "regexes_to_ignore")}
    gold = apply_template(config["doc_to_target"], {"answer": reference})
    judged = {}
    for spec in config["filter_list"]:
        steps = [(f["function"], {k: v for k, v in f.items() if k != "function"}) for f in spec["filter"]]
        instance = Instance("generate_until", doc={"answer": reference}, arguments=("", {}), idx=0)
        instance.resps = [completion]
        build_filter_ensemble(spec["name"], steps).apply([instance])
        predicted = instance.filtered_resps[spec["name"]]
        result = exact_match_fn(references=[gold], predictions=[predicted], **kwargs)["exact_match"]
        judged[spec["name"]] = (predicted, bool(result == 1.0))
    return judged


def test_enough_cases():
    assert len(CASES) >= 40


def test_the_task_config_is_the_one_reproduced():
    """The lm-eval version installed still has the filters and metric arguments curatekit encodes."""
    config = _task_config()
    filters = {spec["name"]: spec["filter"] for spec in config["filter_list"]}
    assert filters["strict-match"][0]["regex_pattern"] == gsm8k_answers._LM_EVAL_STRICT.pattern
    assert filters["flexible-extract"][0]["regex_pattern"] == gsm8k_answers._LM_EVAL_FLEXIBLE.pattern
    assert filters["flexible-extract"][0]["group_select"] == -1
    assert "group_select" not in filters["strict-match"][0]  # RegexFilter's default: 0, the first
    assert [f["function"] for f in filters["strict-match"][1:]] == ["take_first"]
    assert [f["function"] for f in filters["flexible-extract"][1:]] == ["take_first"]
    metric = config["metric_list"][0]
    assert metric["metric"] == "exact_match" and metric["ignore_case"] and not metric["ignore_punctuation"]
    assert tuple(metric["regexes_to_ignore"]) == gsm8k_answers._LM_EVAL_IGNORE


@pytest.mark.parametrize("completion, reference, strict, strict_ok, flexible, flexible_ok", CASES,
                         ids=[re.sub(r"\W+", "_", c[0])[:30] or "empty" for c in CASES])
def test_same_string_and_verdict_as_lm_eval(completion, reference, strict, strict_ok, flexible, flexible_ok):
    expected = {"strict-match": (strict, strict_ok), "flexible-extract": (flexible, flexible_ok)}
    assert lm_eval_judge(completion, reference) == expected
    assert score(completion, reference, "lm-eval-strict") == expected["strict-match"]
    assert score(completion, reference, "lm-eval-flexible") == expected["flexible-extract"]

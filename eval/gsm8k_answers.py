"""GSM8K answers: the gold number after "####", and a completion's answer in one of four modes.

curatekit's own modes read numbers the way a person would ("$1,234.50", ".25", "-3", "1,000.",
"3/4", "12 dollars", "5kg") and compare their values, so "$1,000.00", "1000" and "1,000." agree:

- ``strict``: the first "#### N", else the last "The answer is N"; nothing else counts.
- ``flexible``: the strict answer when there is one, else the last number in the text.

The ``lm-eval-*`` modes reproduce lm-evaluation-harness 0.4's ``gsm8k`` task exactly (its regex
filters, "take_first", then ``exact_match`` with ignore_case and the task's regexes_to_ignore on both
the prediction and the full reference solution); their answer is lm-eval's filtered string,
"[invalid]" when its regex finds nothing:

- ``lm-eval-strict``: the first ``#### (-?[0-9.,]+)``.
- ``lm-eval-flexible``: the last ``(-?[$0-9.,]{2,})|(-?[0-9]+)``.
"""
from __future__ import annotations

import re
from decimal import Decimal
from fractions import Fraction

from curate.core.errors import BadInputError

CURATEKIT_MODES = ("strict", "flexible")
LM_EVAL_MODES = ("lm-eval-strict", "lm-eval-flexible")
MODES = CURATEKIT_MODES + LM_EVAL_MODES

# --- curatekit's modes -------------------------------------------------------------------------
# A minus sign only when it does not follow a word or ")" ("10-3" is two numbers, "x = -3" one);
# the unicode minus counts. Thousands groups need exactly three digits ("3,4,5" is three numbers).
_SIGN = r"(?:(?<![\w)])[-\u2212])?"
_CURRENCY = r"(?:[$\u20ac\u00a3]\s?)?"
_MAGNITUDE = r"(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)"
_NUMBER = rf"{_SIGN}{_CURRENCY}{_MAGNITUDE}(?:/\d+)?"
_LEAD = r"[\s*:]*"  # spaces, markdown bold, a colon between the marker and the number
_HASHES = re.compile(rf"####{_LEAD}({_NUMBER})")
_STATED = re.compile(rf"the (?:final )?answer is{_LEAD}({_NUMBER})", re.IGNORECASE)
_ANY_NUMBER = re.compile(_NUMBER)
_GOLD = re.compile(rf"{_LEAD}({_NUMBER})")  # what follows the last "####" of a reference solution

# --- lm-evaluation-harness 0.4, lm_eval/tasks/gsm8k/gsm8k.yaml ----------------------------------
LM_EVAL_INVALID = "[invalid]"  # RegexFilter's fallback
_LM_EVAL_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")  # group_select 0: the first match
_LM_EVAL_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")  # group_select -1: the last match
_LM_EVAL_IGNORE = (",", r"\$", r"(?s).*#### ", r"\.$")  # exact_match's regexes_to_ignore, in order


def check_mode(mode: str) -> str:
    """``mode`` itself, or a :class:`BadInputError` naming the flag and the bad value."""
    if mode not in MODES:
        raise BadInputError(f"unknown answer mode '{mode}' (--answer-mode / answer_mode); "
                            f"choose one of {', '.join(MODES)}")
    return mode


def normalize_number(text: str) -> str | None:
    """Canonical form of a number, or None: "$1,000.50" -> "1000.5", ".25" -> "0.25",
    "\u22123" -> "-3", "1,000." -> "1000", "3/4" -> "0.75", "1/3" -> "1/3"."""
    cleaned = re.sub(r"[\s,$\u20ac\u00a3]", "", text).replace("\u2212", "-").rstrip(".")
    try:
        value = Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        return None
    return _canonical(value)


def _canonical(value: Fraction) -> str:
    """An integer, a terminating decimal without trailing zeros, else "p/q" in lowest terms."""
    if value.denominator == 1:
        return str(value.numerator)
    twos, fives = _multiplicity(value.denominator, 2), _multiplicity(value.denominator, 5)
    if value.denominator != 2**twos * 5**fives:  # 1/3 has no finite decimal form
        return f"{value.numerator}/{value.denominator}"
    digits = max(twos, fives)
    scaled = value.numerator * 10**digits // value.denominator  # exact, and no trailing zeros
    return format(Decimal(f"{scaled}e-{digits}"), "f")


def _multiplicity(number: int, factor: int) -> int:
    count = 0
    while number % factor == 0:
        number, count = number // factor, count + 1
    return count


def extract_gold(answer: str) -> str:
    """The gold number of a GSM8K answer ("... #### 72"), normalised."""
    _, sep, tail = answer.rpartition("####")
    match = _GOLD.match(tail) if sep else None
    gold = normalize_number(match.group(1)) if match else None
    if gold is None:
        raise BadInputError(f"GSM8K answer has no '#### N' gold number: {answer[-80:]!r}")
    return gold


def _curatekit_answer(completion: str, mode: str) -> str | None:
    hashed = _HASHES.search(completion)
    if hashed:
        return normalize_number(hashed.group(1))
    stated = _STATED.findall(completion)
    if stated:
        return normalize_number(stated[-1])
    if mode == "strict":
        return None
    numbers = _ANY_NUMBER.findall(completion)
    return normalize_number(numbers[-1]) if numbers else None


def lm_eval_filter(completion: str, mode: str) -> str:
    """lm-eval's RegexFilter then take_first: the chosen match's first non-empty group, stripped."""
    pattern, pick = (_LM_EVAL_STRICT, 0) if mode == "lm-eval-strict" else (_LM_EVAL_FLEXIBLE, -1)
    matches = pattern.findall(completion)
    if not matches:
        return LM_EVAL_INVALID
    chosen = matches[pick]
    if isinstance(chosen, tuple):  # several groups: the first that matched
        chosen = next((group for group in chosen if group), LM_EVAL_INVALID)
    return chosen.strip()


def lm_eval_normalize(text: str) -> str:
    """What lm-eval's exact_match compares: the ignored regexes removed, then lower case."""
    for pattern in _LM_EVAL_IGNORE:
        # Each step goes through a numpy string array there, which drops trailing NUL characters.
        text = re.sub(pattern, "", text).rstrip("\0")
    return text.lower()


def extract_answer(completion: str, mode: str = "flexible") -> str | None:
    """The model's answer: in curatekit's modes its normalised number or None when it gave none;
    in the lm-eval modes lm-eval's filtered string ("[invalid]" when none)."""
    if check_mode(mode) in LM_EVAL_MODES:
        return lm_eval_filter(completion, mode)
    return _curatekit_answer(completion, mode)


def score(completion: str, reference: str, mode: str = "flexible") -> tuple[str | None, bool]:
    """The completion's answer (as :func:`extract_answer`) and whether it matches ``reference``: a
    gold number ("1,000") or a full solution ending "#### N" (what lm-eval's modes compare with)."""
    answer = extract_answer(completion, mode)
    if mode in LM_EVAL_MODES:
        return answer, lm_eval_normalize(answer) == lm_eval_normalize(reference)
    gold = extract_gold(reference) if "####" in reference else normalize_number(reference)
    return answer, answer is not None and answer == gold


def is_correct(completion: str, reference: str, mode: str = "flexible") -> bool:
    """Whether the completion's answer matches ``reference`` (see :func:`score`)."""
    return score(completion, reference, mode)[1]

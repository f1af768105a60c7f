"""GSM8K answers: the gold number after "####", and extraction from a model's completion in
two modes like lm-evaluation-harness: ``strict`` ("#### N" or "The answer is N") and
``flexible`` (the last number in the text). Numbers compare after normalisation:
"$1,000.00", "1000" and "1,000." are the same answer."""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from eval.errors import BadInputError

_NUMBER = r"-?\$?\s?\d[\d,]*(?:\.\d+)?"
_STRICT = [re.compile(rf"####\s*({_NUMBER})"), re.compile(rf"[Tt]he (?:final )?answer is:?\s*({_NUMBER})")]
_ANY_NUMBER = re.compile(_NUMBER)
MODES = ("strict", "flexible")


def normalize_number(text: str) -> str | None:
    """Canonical form of a number: no "$", thousands separators or trailing zeros ("1,000.50" -> "1000.5")."""
    cleaned = text.strip().replace("$", "").replace(",", "").replace(" ", "").rstrip(".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def extract_gold(answer: str) -> str:
    """The gold number of a GSM8K answer ("... #### 72")."""
    _, sep, tail = answer.rpartition("####")
    gold = normalize_number(tail) if sep else None
    if gold is None:
        raise BadInputError(f"GSM8K answer has no '#### N' gold number: {answer[-80:]!r}")
    return gold


def extract_answer(completion: str, mode: str = "flexible") -> str | None:
    """The model's answer, or None when it gave none.

    strict: the first "#### N", else the last "The answer is N". flexible: the strict answer when
    there is one, else the last number anywhere in the text.
    """
    if mode not in MODES:
        raise BadInputError(f"unknown extraction mode '{mode}'; choose one of {', '.join(MODES)}")
    hashed = _STRICT[0].search(completion)
    if hashed:
        return normalize_number(hashed.group(1))
    stated = _STRICT[1].findall(completion)
    if stated:
        return normalize_number(stated[-1])
    if mode == "strict":
        return None
    numbers = _ANY_NUMBER.findall(completion)
    return normalize_number(numbers[-1]) if numbers else None


def is_correct(completion: str, gold: str, mode: str = "flexible") -> bool:
    """Whether the completion's extracted answer equals the (normalised) gold number."""
    predicted = extract_answer(completion, mode)
    return predicted is not None and predicted == normalize_number(gold)

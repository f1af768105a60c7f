"""Rewards for RL, from the same verifiers and sandbox as evaluation.

- :class:`TaskReward`: 1.0 when the task's verifier accepts a completion, else 0.0 (GSM8K
  correctness, HumanEval all-tests-pass).
- :class:`CodePassReward`: the fraction of a problem's tests a completion passes. Each top-level
  statement of the test function that holds an ``assert`` counts as one test; the statements run
  one after another in the sandbox and a failing one does not stop the rest. A program that does
  not get as far as the tests (syntax error, crash, timeout) scores 0.

Both follow TRL's reward-function signature, ``reward(prompts, completions, **columns)``, where
``columns`` are the dataset's columns for the batch, and accept plain or conversational completions.
"""
from __future__ import annotations

import ast
import builtins
import os
import textwrap
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from curate.core.errors import BadInputError
from eval.humaneval import postprocess_completion
from eval.sandbox import Sandbox, SandboxConfig
from eval.tasks import TaskOptions, get_task


def completion_text(completion: Any) -> str:
    """The text of a plain completion or of a conversational one (a list of messages)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    raise BadInputError(f"cannot read a completion of type {type(completion).__name__}")


def _rows(columns: dict[str, Any], count: int) -> list[dict[str, Any]]:
    per_sample = {k: v for k, v in columns.items() if isinstance(v, (list, tuple)) and len(v) == count}
    return [{k: v[i] for k, v in per_sample.items()} for i in range(count)]


class TaskReward:
    """1.0 for a completion the task's verifier accepts, else 0.0."""

    def __init__(self, task: str, options: TaskOptions | None = None) -> None:
        self.task = get_task(task)
        self.options = options or TaskOptions()
        self.__name__ = f"{task}_correct"  # TRL logs rewards by function name

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float]:
        # rl.grpo hands TRL the rendered prompt as `prompt` and keeps a code task's own in `code_prompt`
        # (TRL passes the prompt column separately): the verifier reads the task's row as it was.
        rows = [{**row, "prompt": row["code_prompt"]} if "code_prompt" in row else row
                for row in _rows(columns, len(completions))]
        texts = [[completion_text(c)] for c in completions]
        return [float(judged[0].correct) for judged in self.task.verify(rows, texts, self.options)]


def counting_check(test_code: str, function: str = "check") -> str:
    """Rewrite ``test_code`` so that ``function`` returns ``(passed, total)`` over its assert-holding
    top-level statements instead of stopping at the first failure."""
    try:
        tree = ast.parse(test_code)
    except SyntaxError as err:
        raise BadInputError(f"test code does not parse: {err}") from err
    found = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == function]
    if not found:
        raise BadInputError(f"test code defines no function '{function}'")
    check = found[-1]
    body: list[ast.stmt] = ast.parse("__passed, __total = 0, 0").body
    for stmt in check.body:
        if not any(isinstance(node, ast.Assert) for node in ast.walk(stmt)):
            body.append(stmt)  # set-up (imports, helpers, data) runs as written
            continue
        guard = ast.parse("try:\n    pass\nexcept BaseException:\n    pass\nelse:\n    __passed += 1\n"
                          "__total += 1").body
        guard[0].body = [stmt]
        body.extend(guard)
    body.extend(ast.parse("return __passed, __total").body)
    check.body = body
    return ast.unparse(ast.fix_missing_locations(tree))


def check_from_asserts(tests: Sequence[str]) -> str:
    """A list of assert statements (MBPP's ``test_list``) as a ``check(candidate)`` function."""
    if not tests:
        raise BadInputError("a code problem needs at least one test")
    return "def check(candidate):\n" + "".join(textwrap.indent(t.strip(), "    ") + "\n" for t in tests)


def _parse(source: str) -> ast.Module:
    try:
        return ast.parse(source)
    except SyntaxError:
        return ast.Module(body=[], type_ignores=[])


def called_names(code: str, test_code: str, prelude: str = "") -> list[str]:
    """Top-level functions of ``code`` that ``test_code`` calls by name (MBPP's asserts do), but
    never a builtin or a name the trusted prelude or test binds (the sandbox's judge refuses those
    too: a candidate must not replace ``abs`` or a prompt's helper)."""
    try:
        defined = {n.name for n in ast.parse(code).body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    except SyntaxError:
        return []
    trusted = [_parse(test_code), _parse(prelude)]
    bound = set(dir(builtins)) | {n.id for tree in trusted for n in ast.walk(tree)
                                  if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    bound |= {n.name for tree in trusted for n in ast.walk(tree)
              if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    bound |= {(a.asname or a.name).split(".")[0] for tree in trusted for n in ast.walk(tree)
              if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    called = [n.func.id for n in ast.walk(trusted[0]) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    return list(dict.fromkeys(name for name in called if name in defined and name not in bound))


def pass_fractions(programs: Sequence[str], tests: Sequence[str], entry_points: Sequence[str | None],
                   sandbox: Sandbox | None = None, workers: int | None = None,
                   preludes: Sequence[str] | None = None) -> list[float]:
    """For each program, the fraction of its tests (``check`` code) it passes. The tests run in the
    sandbox's judge process, apart from the program (see :mod:`eval.sandbox`); ``preludes`` are
    the problems' trusted prompts (helpers the tests may use)."""
    sandbox = sandbox or Sandbox()
    preludes = preludes or [""] * len(programs)

    def one(args: tuple[str, str, str | None, str]) -> float:
        code, test_code, entry_point, prelude = args
        names = [entry_point] if entry_point else []
        names += [n for n in called_names(code, test_code, prelude) if n not in names]
        result = sandbox.check(code, counting_check(test_code), names, prelude=prelude, counts=True)
        if not result.passed or not result.counts:
            return 0.0
        passed, total = result.counts
        return passed / total if total else 0.0

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return list(pool.map(one, zip(programs, tests, entry_points, preludes)))


class CodePassReward:
    """The fraction of tests passed, for rows with HumanEval-style ``test``/``entry_point`` columns
    (the completion continues the prompt, or ``code_prompt`` when the prompt is a chat) or
    MBPP-style ``test_list`` (the completion is the whole solution)."""

    def __init__(self, sandbox_config: SandboxConfig | None = None, workers: int | None = None) -> None:
        self.sandbox = Sandbox(sandbox_config or SandboxConfig(timeout_s=10.0))
        self.workers = workers
        self.__name__ = "code_pass_fraction"

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float]:
        programs, tests, entry_points, preludes = [], [], [], []
        for prompt, row, completion in zip(prompts, _rows(columns, len(completions)), completions):
            text = completion_text(completion)
            if "test_list" in row:
                programs.append(postprocess_completion(text, row.get("entry_point") or ""))
                tests.append(check_from_asserts(row["test_list"]))
                entry_points.append(row.get("entry_point"))
                preludes.append("")
            elif {"test", "entry_point"} <= row.keys():
                # The code the completion continues: a `code_prompt` column, else a plain-text prompt
                # (TRL passes the prompt column separately); chat completions restate the function.
                prefix = row.get("code_prompt", prompt if isinstance(prompt, str) else "")
                programs.append(prefix + postprocess_completion(text, row["entry_point"]))
                tests.append(row["test"])
                entry_points.append(row["entry_point"])
                preludes.append(prefix)
            else:
                raise BadInputError("code reward needs columns 'test' and 'entry_point' "
                                    f"(HumanEval) or 'test_list' (MBPP); got {', '.join(sorted(row))}")
        return pass_fractions(programs, tests, entry_points, self.sandbox, self.workers, preludes)

"""The task registry: ``get_task("gsm8k")``, ``get_task("humaneval")``, ``get_task("arith")``,
``get_task("pyfunc")``, ``get_task("gsm8k-hidden")``; see :mod:`eval.tasks.base`. :data:`BUILTIN` names the built-in tasks with
their one-line descriptions and is importable without loading any task (``curate eval --help`` is
built from it); the task modules are imported, and register themselves, when anything else here is
first used."""
from __future__ import annotations

import importlib
from typing import Any, NamedTuple


class Builtin(NamedTuple):
    module: str
    description: str


BUILTIN: dict[str, Builtin] = {
    "gsm8k": Builtin("eval.tasks.gsm8k", "GSM8K grade-school math, exact match on the final number"),
    "gsm8k-hidden": Builtin("eval.tasks.gsm8k_hidden", "GSM8K with one number-bearing sentence held by a simulated "
                            "user (LaMAI's active inquiry: --inquiry)"),
    "humaneval": Builtin("eval.tasks.humaneval", "HumanEval Python function synthesis, pass@k in the sandbox"),
    "arith": Builtin("eval.tasks.arith", "synthetic +/- word problems with worked answers (curate demo's task), "
                     "GSM8K verifier"),
    "pyfunc": Builtin("eval.tasks.pyfunc", "synthetic write-a-function problems at 3 levels with hidden tests, "
                      "pass@k in the sandbox"),
}
_FROM_BASE = ("TASKS", "Task", "TaskOptions", "Verdict", "get_task", "register_task")
__all__ = ["BUILTIN", *_FROM_BASE]


def __getattr__(name: str) -> Any:
    if name not in _FROM_BASE:
        raise AttributeError(f"module 'eval.tasks' has no attribute '{name}'")
    base = importlib.import_module("eval.tasks.base")
    for entry in BUILTIN.values():
        importlib.import_module(entry.module)  # registers the built-in tasks
    return getattr(base, name)

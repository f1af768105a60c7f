"""The task registry: ``get_task("gsm8k")``, ``get_task("humaneval")``, ``get_task("arith")``;
see :mod:`eval.tasks.base`."""
from eval.tasks.base import TASKS, Task, TaskOptions, Verdict, get_task, register_task
from eval.tasks import gsm8k, humaneval, arith  # noqa: F401  (registers the built-in tasks)

__all__ = ["TASKS", "Task", "TaskOptions", "Verdict", "get_task", "register_task"]

"""Run a function in a forked child and return its exit code: the kill-and-resume tests' runner
(the child's own test hook SIGKILLs it; -9 then reads as killed). Forked, not spawned, so the child
starts in milliseconds with the parent's imports."""
from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import Any

FORK = multiprocessing.get_context("fork")


def run_forked(target: Callable[..., Any], *args: Any, timeout: float = 120) -> int | None:
    """``target(*args)`` in a forked child; its exit code (-9: SIGKILLed; a hung child is killed)."""
    child = FORK.Process(target=target, args=args)
    child.start()
    child.join(timeout)
    if child.is_alive():  # hung: end it and fail
        child.kill()
        child.join()
    return child.exitcode

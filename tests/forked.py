"""Run a function in a child process and return its exit code: the kill-and-resume tests' runner
(the child's own test hook SIGKILLs it; -9 then reads as killed).

Children come from a fork server, not from the test process: a plain fork of a busy pytest-xdist
worker copies torch's thread pools mid-lock and the child can hang (seen on the 2-core CI). The
server is a fresh single-threaded interpreter with torch preloaded, so each child still starts fast.
The child imports the test module anew, so anything it needs from the test (environment, patches)
it must set itself."""
from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import Any

SERVER = multiprocessing.get_context("forkserver")
SERVER.set_forkserver_preload(["torch"])


def run_forked(target: Callable[..., Any], *args: Any, timeout: float = 300) -> int | None:
    """``target(*args)`` in a child; its exit code (-9: SIGKILLed; a hung child is killed)."""
    child = SERVER.Process(target=target, args=args)
    child.start()
    child.join(timeout)
    if child.is_alive():  # hung: end it and fail
        child.kill()
        child.join()
    return child.exitcode

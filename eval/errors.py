"""User-facing errors: the CLI prints them as one line and exits with code 2."""
from __future__ import annotations

from collections.abc import Callable


class BadInputError(ValueError):
    """Bad user input (path, column, value). The message names the bad field and value."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, for one-line error reports."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def exit_code(prog: str, run: Callable[[], object]) -> int:
    """Run ``run``; a :class:`BadInputError` becomes one line on stderr and exit code 2."""
    import sys

    try:
        run()
    except BadInputError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    return 0

"""User-facing errors and the one error boundary every command and script runs under.

Bad input (a :class:`BadInputError`, or an ``OSError`` on a path the user gave on the command
line) becomes one line ``PROG: error: MESSAGE`` on stderr and exit code 2; an interrupt exits 130;
anything else is a bug and keeps its traceback (exit 1). ``--debug`` (or ``CURATEKIT_DEBUG=1``)
re-raises bad input too, with its traceback.
"""
from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable, Iterable, Sequence

EXIT_OK, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 2, 130  # a bug: 1, Python's own


class BadInputError(ValueError):
    """Bad user input (path, column, value). The message names the bad field and value."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, for one-line error reports."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def check_fields(given: Iterable[str], known: Iterable[str], where: str = "", what: str = "field") -> None:
    """Refuse keys of ``given`` not in ``known``, naming the first with its closest known key."""
    known = sorted(known)
    unknown = sorted(set(given) - set(known))
    if unknown:
        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        also = f"; also unknown: {', '.join(unknown[1:])}" if unknown[1:] else ""
        raise BadInputError(f"{where + ': ' if where else ''}unknown {what} '{unknown[0]}'{hint}{also}")


def argv_paths(argv: Sequence[str]) -> list[tuple[str, str]]:
    """``(flag, value)`` for every value on a command line (flag '' for positionals): the paths a
    user may have given, to name in an ``OSError`` report."""
    pairs, flag = [], ""
    for token in argv:
        if token.startswith("-") and len(token) > 1 and not token[1].isdigit():
            name, sep, value = token.partition("=")
            pairs += [(name, value)] if sep else []
            flag = "" if sep else name
        else:
            pairs.append((flag, token))
            flag = ""
    return pairs


def _within(path: str, root: str) -> bool:
    path, root = os.path.abspath(path), os.path.abspath(root)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def user_error_message(err: BaseException, argv: Sequence[str]) -> str | None:
    """The one-line report of a user error, or None when ``err`` is not one (a bug)."""
    if isinstance(err, BadInputError):
        return " ".join(str(err).split("\n")).strip() or type(err).__name__
    if not isinstance(err, OSError) or not err.filename:
        return None
    filename = os.fsdecode(err.filename)
    given = [(flag, value) for flag, value in argv_paths(argv) if value and _within(filename, value)]
    if not given:
        return None  # an OSError on a path the user did not give is a bug, not bad input
    flag, value = max(given, key=lambda pair: len(pair[1]))  # the most specific path
    where = f"{flag} {value}" if flag else value
    reason = err.strerror or type(err).__name__
    detail = "" if os.path.abspath(filename) == os.path.abspath(value) else f" ({filename})"
    return f"{where}: {reason}{detail}"


def debug_requested() -> bool:
    """``CURATEKIT_DEBUG=1``: tracebacks for bad input too (the scripts' ``--debug`` is TRL's)."""
    return os.environ.get("CURATEKIT_DEBUG", "") not in ("", "0")


def run_main(prog: str, run: Callable[[], object], argv: Sequence[str], debug: bool = False) -> int:
    """Run a command or script body under the error boundary and return its exit code."""
    try:
        return int(run() or EXIT_OK)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (BadInputError, OSError) as err:
        message = user_error_message(err, argv)
        if message is None or debug or debug_requested():
            raise
        print(f"{prog}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT

"""User-facing errors: the CLI prints them as one line and exits with code 2."""


class BadInputError(ValueError):
    """Bad user input (path, column, value). The message names the bad field and value."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, for one-line error reports."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__

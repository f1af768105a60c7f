"""TRL training scripts (``sft.train``, ``rl.grpo``): the YAML recipe read into the scripts'
dataclasses with every unknown or mistyped field named in one line (from the command line, or from
Python as config objects: a recipe or defaults with fields on top), and the entry point that checks
the model and ``output_dir`` before any work."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from curate.core.errors import BadInputError, check_fields, run_main
from curate.core.io import guarded_output, read_yaml
from curate.llm.models import check_model_path


def parse_recipe(parser: Any, argv: Sequence[str]) -> tuple:
    """``TrlParser.parse_args_and_config`` with the checks a user needs: the ``--config`` YAML read
    by :func:`read_yaml`, unknown fields and options named, and refused values raised as
    :class:`BadInputError`. ``parser`` is a ``TrlParser`` (duck-typed, so eval/ needs no TRL)."""
    argv = list(argv)
    if "--config" in argv:
        at = argv.index("--config")
        if at + 1 >= len(argv):
            raise BadInputError("--config needs a YAML file")
        _apply_recipe(parser, argv[at + 1])
        del argv[at:at + 2]
    _, rest = parser.parse_known_args(argv)
    options = {s for action in parser._actions for s in action.option_strings}
    check_fields({t.partition("=")[0] for t in rest if t.startswith("-")}, options, what="option")
    return _dataclasses(parser, argv)


def _dataclasses(parser: Any, argv: list[str]) -> tuple:
    """The parser's dataclasses; a refused value is one :class:`BadInputError` line."""
    try:
        return parser.parse_args_into_dataclasses(args=argv)
    except BadInputError:
        raise
    except (ValueError, argparse.ArgumentError) as err:  # a config class or a field's type refused a value
        raise BadInputError(" ".join(str(err).split())) from err


def _apply_recipe(parser: Any, path: str | os.PathLike) -> None:
    """The recipe's fields become the parser's defaults (the command line overrides them)."""
    parser.set_defaults_with_config(**_read_recipe(parser, path))


def _read_recipe(parser: Any, path: str | os.PathLike) -> dict[str, Any]:
    """The recipe's fields, each checked against the parser's; its ``env`` mapping is exported, as
    TRL does."""
    config = read_yaml(path, "--config")
    env = config.pop("env", None) or {}
    if not isinstance(env, dict):
        raise BadInputError(f"--config {path}: 'env' must be a mapping of variables")
    check_fields(config, _fields(parser), f"--config {path}")
    os.environ.update({str(k): str(v) for k, v in env.items()})
    return config


def _fields(parser: Any) -> set[str]:
    return {action.dest for action in parser._actions}


def recipe_fields(parser: Any, recipe: str | os.PathLike | None, fields: dict[str, Any],
                  defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """The fields of a run built from Python: the recipe's (read and checked as :func:`parse_recipe`
    reads it) or, without one, ``defaults``, with ``fields`` on top (None: left out; paths as
    strings). :func:`build_configs` checks the names."""
    base = _read_recipe(parser, recipe) if recipe else dict(defaults or {})
    given = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in fields.items() if v is not None}
    return {**base, **given}


def build_configs(parser: Any, fields: dict[str, Any]) -> tuple:
    """The parser's dataclasses from ``fields`` (see :func:`recipe_fields`), built as the command
    line builds them from a recipe: a string value goes through its field's type ("true", "1e-4"),
    any other value is taken as it is, and every config class checks its values; a refused value is
    one :class:`BadInputError` line. ``parser`` (a fresh ``TrlParser``) takes the fields as its
    defaults. A field the parser does not know is one line naming it and its closest match."""
    check_fields(fields, _fields(parser))
    parser.set_defaults_with_config(**fields)
    parser.exit_on_error = False  # a value its type refuses raises instead of exiting
    return _dataclasses(parser, [])


def script_main(prog: str, parse: Callable[[list[str]], tuple], train: Callable[..., object],
                argv: Sequence[str] | None = None) -> int:
    """Entry point of a TRL training script: parse the recipe and flags, check the model and
    ``output_dir`` before any work, train; bad input exits 2 and leaves no new ``output_dir``."""
    argv = list(sys.argv[1:] if argv is None else argv)

    def run() -> None:
        script_args, training_args, model_args = parse(argv)
        if model_args.model_name_or_path:
            check_model_path(model_args.model_name_or_path, "model_name_or_path")
        with guarded_output(training_args.output_dir, "output_dir"):
            train(script_args, training_args, model_args)

    return run_main(prog, run, argv)

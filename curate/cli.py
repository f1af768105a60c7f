"""The ``curate`` command. Each subcommand module registers its parser and imports heavy
libraries (torch, transformers) only when it runs, so ``curate --help`` stays fast."""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from curate import __version__

# Modules that each define ``register(subparsers)``; one per command group.
COMMAND_MODULES = ("curate.commands.data", "curate.commands.demo", "curate.commands.eval", "curate.commands.model",
                   "curate.commands.run",
                   "curate.commands.select", "curate.commands.vision")


def common_options() -> argparse.ArgumentParser:
    """Options every leaf command accepts (after its name), e.g. ``curate data inspect X --debug``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show full tracebacks on errors")
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="curate",
        description="curatekit: score and select post-training data, train on it, evaluate it.",
    )
    parser.add_argument("--version", action="version", version=f"curatekit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, then run the command under the one error boundary (:func:`curate.core.errors.run_main`):
    bad input exits 2 with one line on stderr, an interrupt 130, a bug 1 with its traceback."""
    from curate.core.errors import run_main

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    return run_main("curate", lambda: run_command(args), argv, debug=args.debug)


def run_command(args: argparse.Namespace) -> int:
    """Check the options commands share, then run the command; when bad input stops it, the
    ``--out`` it created is removed. Commands whose ``--out`` is a file (or a dataset: file or
    folder by suffix) say so with ``set_defaults(out_kind=...)``."""
    from curate.core.io import guarded_output

    check_shared_options(args)
    if getattr(args, "out", None) is None and getattr(args, "default_out", None):
        args.out = args.default_out(args)  # e.g. eval's runs/eval/TASK-NAME, checked like a given --out
    if getattr(args, "out", None) is None:
        return int(args.func(args) or 0)
    with guarded_output(args.out, "--out", getattr(args, "out_kind", "dir")):
        return int(args.func(args) or 0)


def check_shared_options(args: argparse.Namespace) -> None:
    """Before any work: the integer options a command lists in ``set_defaults(positive=...)``,
    ``--model`` (a model folder, or a hub id) and ``--device``."""
    from curate.core.errors import BadInputError

    for name in getattr(args, "positive", ()):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise BadInputError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if getattr(args, "model", None):
        from curate.llm.models import check_model_path

        check_model_path(args.model, "--model")
    if getattr(args, "device", None) not in (None, "auto"):
        from curate.core.device import check_device

        check_device(args.device, "--device")


if __name__ == "__main__":
    sys.exit(main())

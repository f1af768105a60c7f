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
    parser = build_parser()
    args = parser.parse_args(argv)
    from eval.errors import BadInputError

    try:
        return int(args.func(args) or 0)
    except BadInputError as err:
        if args.debug:
            raise
        print(f"curate: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("curate: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""``curate data ...``: look at a dataset before curating it."""
from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    from curate.cli import common_options

    data = subparsers.add_parser("data", help="inspect datasets")
    data_sub = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    inspect = data_sub.add_parser(
        "inspect", parents=[common_options()], help="rows, columns and token-length statistics",
        description="Rows, columns and length statistics of a dataset's prompt/response columns.",
    )
    add_dataset_options(inspect)
    inspect.add_argument("--tokenizer", help="tokenizer (hub id or folder) for lengths in tokens; "
                         "without it lengths are in characters")
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")
    inspect.add_argument("--out", help="also write the report as JSON to this file")
    inspect.set_defaults(func=run_inspect, out_kind="file")


def add_dataset_options(parser: argparse.ArgumentParser) -> None:
    """Dataset source, split and column options shared by every command that reads a dataset."""
    parser.add_argument("dataset", help="hub id, .jsonl/.json/.parquet/.csv file, or save_to_disk folder")
    parser.add_argument("--split", default="train", help="split to read (default: train)")
    parser.add_argument("--config", help="hub dataset configuration, e.g. 'main' for openai/gsm8k")
    parser.add_argument("--prompt-column", help="prompt column (default: first of prompt, question, "
                        "instruction, problem, query, input)")
    parser.add_argument("--response-column", help="response column (default: first of response, "
                        "answer, completion, output, solution, canonical_solution)")
    parser.add_argument("--limit", type=int, help="use only the first N rows")


def run_inspect(args: argparse.Namespace) -> int:
    from curate.inspect import format_report, inspect_dataset
    from curate.llm.data import PROMPT_CANDIDATES, RESPONSE_CANDIDATES, load_data, resolve_column
    from curate.core.io import atomic_write_json

    ds = load_data(args.dataset, split=args.split, config=args.config, limit=args.limit)
    prompt = resolve_column(ds, args.prompt_column, PROMPT_CANDIDATES, "prompt")
    response = resolve_column(ds, args.response_column, RESPONSE_CANDIDATES, "response")
    tokenizer = None
    if args.tokenizer:
        from curate.llm.models import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer)
    report = inspect_dataset(ds, prompt, response, tokenizer)
    report = {"dataset": str(args.dataset), "split": args.split,
              "tokenizer": args.tokenizer, **report}
    print(json.dumps(report, indent=2) if args.json else format_report(report, args.dataset))
    if args.out:
        atomic_write_json(args.out, report)
    return 0

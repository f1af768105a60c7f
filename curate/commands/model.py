"""``curate model ...``: build the tiny offline model used by tests and the demo."""
from __future__ import annotations

import argparse
from dataclasses import fields


def register(subparsers: argparse._SubParsersAction) -> None:
    from curate.cli import common_options
    from curate.llm.tiny import TinyModelConfig

    model = subparsers.add_parser("model", help="build models for offline use")
    model_sub = model.add_subparsers(dest="model_command", metavar="COMMAND", required=True)
    tiny = model_sub.add_parser(
        "tiny", parents=[common_options()],
        help="build a tiny Qwen2 model and BPE tokenizer (no download)",
        description="Train a byte-level BPE tokenizer on a dataset's text, initialise a small "
        "Qwen2 causal LM, and save both with save_pretrained.",
    )
    tiny.add_argument("--out", required=True, help="folder to write (replaced whole, atomically)")
    tiny.add_argument("--texts", help="dataset whose string columns train the tokenizer "
                      "(default: GSM8K train from the offline data folder)")
    tiny.add_argument("--limit", type=int, default=2000, help="rows of --texts to use (default: 2000)")
    for f in fields(TinyModelConfig):
        tiny.add_argument(f"--{f.name.replace('_', '-')}", type=int, default=f.default,
                          help=f"(default: {f.default})")
    tiny.set_defaults(func=run_tiny, positive=("limit",))


def run_tiny(args: argparse.Namespace) -> int:
    from curate.llm.data import default_data_dir, load_data
    from curate.core.errors import BadInputError
    from curate.llm.tiny import TinyModelConfig, build_tiny_model

    source = args.texts
    if source is None:
        data_dir = default_data_dir()
        if data_dir is None or not (data_dir / "gsm8k" / "train.jsonl").exists():
            raise BadInputError("no --texts given and no offline GSM8K found (set CURATEKIT_DATA)")
        source = str(data_dir / "gsm8k" / "train.jsonl")
    config = TinyModelConfig(**{f.name: getattr(args, f.name) for f in fields(TinyModelConfig)})
    ds = load_data(source, limit=args.limit)
    text_columns = [name for name, feat in ds.features.items() if getattr(feat, "dtype", None) == "string"]
    if not text_columns:
        raise BadInputError(f"--texts {source} has no string columns; columns: {', '.join(ds.column_names)}")
    texts = ["\n".join(row[c] for c in text_columns) for row in ds]
    out = build_tiny_model(args.out, texts, config)
    print(f"tiny model ({config.num_layers} layers, hidden {config.hidden_size}, "
          f"head_dim {config.head_dim}) written to {out}")
    return 0

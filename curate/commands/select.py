"""``curate select METHOD``: score a dataset, select from it, write the selection and a report."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    from curate.cli import common_options

    parser = subparsers.add_parser("select", help="score and select training data (cdas)")
    methods = parser.add_subparsers(dest="method_name", metavar="METHOD", required=True)
    cdas = methods.add_parser(
        "cdas", parents=[common_options()], help="CodeACT: IFD complexity + k-means diversity",
        description="Score every sample's IFD = PPL(A|Q)/PPL(A) under --model, cluster the prompts' "
        "sentence embeddings with k-means, drop IFD >= 1 and keep the highest-IFD share --ratio of "
        "every cluster. Writes the selection to --out (.jsonl/.json/.parquet/.csv by suffix, else a "
        "save_to_disk folder) and OUT.report.json and OUT.ifd.png beside it.",
    )
    cdas.add_argument("--dataset", required=True, help="hub id, data file, or save_to_disk folder")
    cdas.add_argument("--model", required=True, help="the model to be fine-tuned (folder or hub id)")
    cdas.add_argument("--out", required=True, help="where to write the selected dataset")
    cdas.add_argument("--ratio", type=float, default=0.4, help="share of every cluster kept (default: 0.4)")
    cdas.add_argument("--method", default="cdas", choices=["cdas", "ifd", "length", "random"],
                      help="cdas, or a baseline at the same count (default: cdas)")
    cdas.add_argument("--num-clusters", type=int, default=10, help="k-means clusters (default: 10)")
    cdas.add_argument("--embedding-model", help="sentence-transformers model (default: offline all-MiniLM-L6-v2)")
    cdas.add_argument("--max-length", type=int, default=1024, help="IFD window in tokens (default: 1024)")
    cdas.add_argument("--batch-tokens", type=int, default=16384, help="padded tokens per forward (default: 16384)")
    cdas.add_argument("--chat-template", action="store_true", help="show questions through the chat template "
                      "(default: CodeACT's 'Question:/Answer:' template)")
    cdas.add_argument("--split", default="train", help="(default: train)")
    cdas.add_argument("--config", help="hub dataset configuration, e.g. 'main' for openai/gsm8k")
    cdas.add_argument("--prompt-column", help="(default: first of prompt, question, instruction, ...)")
    cdas.add_argument("--response-column", help="(default: first of response, answer, completion, ...)")
    cdas.add_argument("--limit", type=int, help="only the first N rows")
    cdas.add_argument("--seed", type=int, default=0, help="k-means and random-baseline seed (default: 0)")
    cdas.add_argument("--dtype", default="auto")
    cdas.add_argument("--device", default="auto")
    cdas.add_argument("--cache-dir", help="IFD cache (default: $CURATEKIT_CACHE or ~/.cache/curatekit)")
    cdas.set_defaults(func=run_cdas)


def sidecar(out: str | Path, suffix: str) -> Path:
    """``runs/sel.jsonl`` -> ``runs/sel.report.json``; ``runs/sel`` -> ``runs/sel.report.json``."""
    out = Path(out)
    stem = out.name[: -len(out.suffix)] if out.suffix.lower() in (".jsonl", ".json", ".parquet", ".csv") else out.name
    return out.with_name(stem + suffix)


def run_cdas(args: argparse.Namespace) -> int:
    from curate import cdas
    from curate.ifd import IFDConfig
    from eval.data import load_data, save_dataset
    from eval.io import atomic_write_json

    config = cdas.CDASConfig(
        ratio=args.ratio, num_clusters=args.num_clusters, embedding_model=args.embedding_model, seed=args.seed,
        prompt_column=args.prompt_column, response_column=args.response_column,
        ifd=IFDConfig(max_length=args.max_length, max_tokens_per_batch=max(args.batch_tokens, args.max_length),
                      use_chat_template=args.chat_template),
    )
    ds = load_data(args.dataset, split=args.split, config=args.config, limit=args.limit)
    scored = cdas.score(ds, args.model, config=config, cache_dir=args.cache_dir, device=args.device,
                        dtype=args.dtype)
    selected = cdas.select(scored, args.ratio, args.method, args.seed)
    if len(selected) == 0:
        from eval.errors import BadInputError

        raise BadInputError(f"nothing selected: no cluster keeps a row at ratio {args.ratio} "
                            "(too few rows with IFD < 1); raise --ratio or use more data")
    report = cdas.report(scored, selected, args.ratio, args.method)
    report.update(dataset=args.dataset, model=args.model, config={
        "num_clusters": args.num_clusters, "embedding_model": config.embedding_model or cdas.default_embedding_model(),
        "max_length": args.max_length, "seed": args.seed})
    out = save_dataset(selected, args.out)
    report_path = atomic_write_json(sidecar(args.out, ".report.json"), report)
    plot = cdas.plot_ifd(scored, selected, sidecar(args.out, ".ifd.png"))
    print(f"cdas ({args.method}): {report['selected']} of {report['rows']} rows selected "
          f"({report['ifd_at_least_1']} with IFD >= 1, {report['skipped']} skipped)")
    for row in report["clusters"]:
        print(f"  cluster {row['cluster']:>2}: {row['rows']:>5} rows, {row['ifd_below_1']:>5} with IFD < 1, "
              f"{row['selected']:>5} selected")
    print(f"selected: {out}\nreport:   {report_path}\nplot:     {plot}")
    return 0

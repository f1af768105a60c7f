"""``curate select SELECTOR``: a thin layer over the selector registry (:mod:`curate.registry`).
Every selector scores the dataset, selects by ``--method`` with ``--n`` (a count) or ``--ratio``
(a fraction), and writes OUT/selected.jsonl, OUT/scored.jsonl (every row: its scores, its
``row_index`` and a ``selected`` flag), OUT/report.json, a plot, OUT/run.json and OUT/run.log."""
from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DESCRIPTIONS = {
    "cdas": "Score every sample's IFD = PPL(A|Q)/PPL(A) under --model on the text SFT trains on, cluster "
            "the prompts' sentence embeddings with k-means, drop IFD >= 1 and keep the highest-IFD share "
            "--ratio of every cluster (or --n rows in all).",
    "learnalign": "Warm up --model with a short GRPO run on a random subset (unless --no-warmup), roll out G "
                  "completions per prompt to get success rates p, compute each prompt's projected GRPO "
                  "gradient over LoRA parameters, score V_i <g_i, mean_j V_j g_j> with V = p(1-p), and keep "
                  "the top --n (or --ratio of the pool). OUT/warmup/ keeps the warmup adapter.",
}
# Options that do not change what a run computes (left out of run.json, so a rerun with other
# values resumes).
NOT_CONFIG = ("func", "debug", "overwrite", "device", "cache_dir", "positive", "out_kind", "selector", "out",
              "command", "method_name", "push_to_hub")


def register(subparsers: argparse._SubParsersAction) -> None:
    from curate.cli import common_options
    from curate.registry import SELECTORS, methods_help

    missing = set(SELECTORS) ^ set(CLI)
    if missing:
        raise RuntimeError(f"selectors without CLI options (or options without a selector): {sorted(missing)}")
    parser = subparsers.add_parser("select", help=f"score and select training data ({', '.join(SELECTORS)})")
    selectors = parser.add_subparsers(dest="method_name", metavar="SELECTOR", required=True)
    for name, entry in SELECTORS.items():
        sub = selectors.add_parser(name, parents=[common_options()], help=entry.help,
                                   description=f"{entry.help}. {DESCRIPTIONS.get(name, '')} Writes OUT/selected.jsonl, "
                                   "OUT/scored.jsonl (every row with its scores, row_index and a selected flag), "
                                   "OUT/report.json, a plot, OUT/run.json and OUT/run.log.")
        sub.add_argument("--dataset", required=True, help="hub id, data file, or save_to_disk folder")
        sub.add_argument("--model", required=True, help="the model to be trained (folder or hub id)")
        sub.add_argument("--out", required=True, help="output folder")
        count = sub.add_mutually_exclusive_group(required=name != "cdas")
        count.add_argument("--n", type=int, help="rows to select")
        count.add_argument("--ratio", type=float, help="share to select, in (0, 1]" + (
            ": of every cluster (default: 0.4)" if name == "cdas" else ": of the pool"))
        sub.add_argument("--method", default=entry.methods[0], choices=entry.methods, help=methods_help(name))
        CLI[name].options(sub)
        sub.add_argument("--split", default="train", help="(default: train)")
        sub.add_argument("--config", help="hub dataset configuration, e.g. 'main' for openai/gsm8k")
        sub.add_argument("--limit", type=int, help="only the first N rows")
        sub.add_argument("--seed", type=int, default=0, help="k-means, rollouts, projection, random baseline "
                         "and tie-break seed (default: 0)")
        sub.add_argument("--dtype", default="auto", help="auto (fp32 on CPU, bf16 on a GPU that has it), bf16, fp32")
        sub.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
        sub.add_argument("--cache-dir", help="score caches (default: $CURATEKIT_CACHE or ~/.cache/curatekit)")
        sub.add_argument("--push-to-hub", metavar="REPO", help="also push the selection and its dataset card to "
                         "this hub dataset repository (namespace/name; needs the network and a token)")
        sub.add_argument("--overwrite", action="store_true",
                         help="write into a non-empty --out that holds another configuration's run")
        sub.set_defaults(func=run_select, selector=name, positive=("limit", "n") + CLI[name].positive)


def add_cdas_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt-column", help="(default: first of prompt, question, instruction, ...)")
    parser.add_argument("--response-column", help="(default: first of response, answer, completion, ...)")
    parser.add_argument("--num-clusters", type=int, default=10, help="k-means clusters (default: 10)")
    parser.add_argument("--embedding-model", help="sentence-transformers model (default: offline all-MiniLM-L6-v2)")
    parser.add_argument("--max-length", type=int, default=1024, help="IFD window in tokens (default: 1024)")
    parser.add_argument("--batch-tokens", type=int, default=16384, help="padded tokens per forward (default: 16384)")
    parser.add_argument("--prompt-format", default="auto", choices=["auto", "chat", "plain", "codeact"],
                        help="how IFD renders each sample: auto (default) is the text SFT trains on (the chat "
                        "template when the tokenizer has one, else plain 'Question: ...\\nAnswer:'); codeact is "
                        "CodeACT's own 'Question:\\n...\\n\\nAnswer:\\n'")


def add_learnalign_options(parser: argparse.ArgumentParser) -> None:
    from eval.tasks import BUILTIN

    parser.add_argument("--task", default="gsm8k", help="eval task whose prompts and verifier give the success "
                        f"rates: {', '.join(BUILTIN)} (default: gsm8k)")
    parser.add_argument("--prompt-column", help="the question column (default: the task's, e.g. 'question')")
    parser.add_argument("--answer-column", "--response-column", dest="answer_column",
                        help="the reference answer the verifier checks (default: the task's, e.g. 'answer')")
    parser.add_argument("--num-rollouts", type=int, default=8, help="G rollouts per prompt (default: 8)")
    parser.add_argument("--temperature", type=float, default=1.0, help="(default: 1.0)")
    parser.add_argument("--max-new-tokens", type=int, help="rollout length (default: the task's)")
    parser.add_argument("--projection-dim", type=int, default=8192, help="k (default: 8192)")
    parser.add_argument("--beta", type=float, default=0.04, help="KL coefficient in the gradient (default: 0.04)")
    parser.add_argument("--lora-r", type=int, default=8, help="(default: 8)")
    parser.add_argument("--target-modules", default="q_proj,v_proj", help="LoRA layers (default: q_proj,v_proj)")
    parser.add_argument("--no-warmup", action="store_true", help="score with --model itself (the paper's ablation)")
    parser.add_argument("--warmup-samples", type=int, default=300, help="random rows for warmup (default: 300)")
    parser.add_argument("--warmup-steps", type=int, help="GRPO steps of the warmup (default: one epoch)")
    parser.add_argument("--warmup-recipe", help="rl.grpo YAML for the warmup (default: small LoRA settings)")
    parser.add_argument("--with-ifd", action="store_true", help="also score IFD (for --method ifd)")
    parser.add_argument("--backend", default="auto", choices=["auto", "hf", "vllm"], help="rollouts (default: auto)")


def check_budget(args: argparse.Namespace, ds: Any) -> None:
    """--n within the pool, --ratio in (0, 1] and worth at least one row: before any scoring."""
    from curate.core.errors import BadInputError
    from curate.selection import resolve_count

    if args.n is not None and args.n > len(ds):
        raise BadInputError(f"--n must be in [1, {len(ds)}] (the pool size), got {args.n}")
    if args.ratio is not None and resolve_count(len(ds), ratio=args.ratio) < 1:
        raise BadInputError(f"--ratio {args.ratio} of {len(ds)} rows is less than one row")


def build_cdas(args: argparse.Namespace, ds: Any) -> Any:
    from curate.cdas import CDAS, CDASConfig
    from curate.ifd import IFDConfig

    check_budget(args, ds)
    config = CDASConfig(
        ratio=args.ratio or CDASConfig.ratio, num_clusters=args.num_clusters, embedding_model=args.embedding_model,
        seed=args.seed, prompt_column=args.prompt_column, response_column=args.response_column,
        ifd=IFDConfig(max_length=args.max_length, max_tokens_per_batch=max(args.batch_tokens, args.max_length),
                      chat={"auto": None, "chat": True}.get(args.prompt_format, False),
                      template="codeact" if args.prompt_format == "codeact" else "plain"))
    return CDAS(args.model, config, method=args.method, cache_dir=args.cache_dir, device=args.device,
                dtype=args.dtype)


def build_learnalign(args: argparse.Namespace, ds: Any) -> Any:
    from curate.core.errors import BadInputError
    from curate.core.io import read_yaml
    from curate.grad_features import GradientConfig, check_lora_targets
    from curate.learnalign import LearnAlign, LearnAlignConfig, WarmupConfig

    if args.warmup_recipe and not args.no_warmup:
        read_yaml(args.warmup_recipe, "--warmup-recipe")  # a missing or broken recipe, before any work
    check_budget(args, ds)
    targets = tuple(t.strip() for t in args.target_modules.split(",") if t.strip())
    check_lora_targets(args.model, targets)
    config = LearnAlignConfig(
        task=args.task, num_rollouts=args.num_rollouts, temperature=args.temperature,
        max_new_tokens=args.max_new_tokens, backend=args.backend, seed=args.seed, with_ifd=args.with_ifd,
        gradients=GradientConfig(projection_dim=args.projection_dim, beta=args.beta, lora_r=args.lora_r,
                                 lora_alpha=2 * args.lora_r, target_modules=targets, seed=args.seed))
    warmup = WarmupConfig(enabled=not args.no_warmup, samples=args.warmup_samples, steps=args.warmup_steps,
                          recipe=args.warmup_recipe)
    if args.method == "ifd" and not args.with_ifd:
        raise BadInputError("--method ifd needs --with-ifd")
    return LearnAlign(args.model, config, warmup=warmup, work_dir=args.out, method=args.method,
                      cache_dir=args.cache_dir, device=args.device, dtype=args.dtype)


def prepare_learnalign(args: argparse.Namespace, ds: Any) -> Any:
    """The task's columns from the user's (--prompt-column/--answer-column), checked before any work."""
    from eval.tasks import get_task
    from eval.tasks.base import map_columns

    ds = map_columns(ds, args.prompt_column, args.answer_column, flags=("--prompt-column", "--answer-column"))
    get_task(args.task).rows_from(ds)
    return ds


def run_select(args: argparse.Namespace) -> int:
    from curate.core.runs import claim_output, run_log
    from curate.llm.data import load_data

    if args.push_to_hub:
        from curate.selection import check_hub_repo

        check_hub_repo(args.push_to_hub)
    config = {k: v for k, v in sorted(vars(args).items()) if k not in NOT_CONFIG}
    out = claim_output(args.out, f"select {args.selector}", config, overwrite=args.overwrite)
    ds = load_data(args.dataset, split=args.split, config=args.config, limit=args.limit)
    ds = CLI[args.selector].prepare(args, ds)
    selector = CLI[args.selector].build(args, ds)
    with run_log(out):
        scored = selector.score(ds)
        selected = selector.select(scored, n=args.n, ratio=args.ratio)
        if not is_main_process():
            return 0  # under accelerate launch every rank scored a shard; the first one writes
        write_outputs(args, out, scored, selected, selector)
    return 0


def is_main_process() -> bool:
    from curate.llm.shards import end_distributed, is_main_process as main

    main_process = main()
    end_distributed()
    return main_process


def write_outputs(args: argparse.Namespace, out: Path, scored: Any, selected: Any, selector: Any) -> None:
    from curate.core.errors import BadInputError
    from curate.core.io import atomic_write_json, atomic_write_text
    from curate.llm.data import save_dataset
    from curate.selection import dataset_card, mark_selected

    if len(selected) == 0:
        raise BadInputError(f"nothing selected at --ratio {args.ratio}: no cluster keeps a row (too few rows "
                            "with IFD < 1); raise --ratio or use more data")
    report = {**selector.report(scored, selected), "dataset": args.dataset, "model": args.model, "n": args.n,
              "ratio": args.ratio, "config": {k: v for k, v in vars(args).items() if k not in NOT_CONFIG}}
    paths = {"selected": save_dataset(selected, out / "selected.jsonl"),
             "scored": save_dataset(mark_selected(scored, selected), out / "scored.jsonl"),
             "report": atomic_write_json(out / "report.json", report),
             "plot": selector.plot(scored, selected, out / CLI[args.selector].plot),
             "card": atomic_write_text(out / "README.md", dataset_card(
                 scored, selected, source=args.dataset, selector=args.selector, method=args.method,
                 budget={"n": args.n, "ratio": args.ratio}, config=report["config"],
                 scoring_model=getattr(selector, "scoring_model_", None) or args.model))}
    print(selector.summary(report))
    for name, path in paths.items():
        print(f"{name + ':':<10}{path}")
    if args.push_to_hub:
        from curate.selection import push_selection

        push_selection(selected, paths["card"].read_text(encoding="utf-8"), args.push_to_hub)
        print(f"{'pushed:':<10}https://huggingface.co/datasets/{args.push_to_hub}")


@dataclass(frozen=True)
class SelectorCLI:
    """What ``curate select NAME`` adds to a registered selector: its flags, the flags that must be
    positive, how the selector is built from them, an optional check of the data, the plot's name."""

    options: Callable[[argparse.ArgumentParser], None]
    positive: tuple[str, ...]
    build: Callable[[argparse.Namespace, Any], Any]
    plot: str
    prepare: Callable[[argparse.Namespace, Any], Any] = lambda args, ds: ds


CLI: dict[str, SelectorCLI] = {
    "cdas": SelectorCLI(add_cdas_options, ("num_clusters", "max_length", "batch_tokens"), build_cdas, "ifd.png"),
    "learnalign": SelectorCLI(add_learnalign_options, ("num_rollouts", "max_new_tokens", "projection_dim", "lora_r",
                                                       "warmup_samples", "warmup_steps"),
                              build_learnalign, "report.png", prepare_learnalign),
}

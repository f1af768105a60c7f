"""``curate select METHOD``: score a dataset, select from it, write the selection and a report."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    from curate.cli import common_options

    parser = subparsers.add_parser("select", help="score and select training data (cdas, learnalign)")
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
    cdas.add_argument("--prompt-format", default="auto", choices=["auto", "chat", "plain", "codeact"],
                      help="how IFD renders each sample: auto (default) is the text SFT trains on (the chat "
                      "template when the tokenizer has one, else plain 'Question: ...\\nAnswer:'); codeact is "
                      "CodeACT's own 'Question:\\n...\\n\\nAnswer:\\n'")
    cdas.add_argument("--prompt-column", help="(default: first of prompt, question, instruction, ...)")
    cdas.add_argument("--response-column", help="(default: first of response, answer, completion, ...)")
    add_run_options(cdas, seed_help="k-means and random-baseline seed", cache_help="IFD cache")
    cdas.set_defaults(func=run_cdas, out_kind="dataset", positive=("limit", "num_clusters", "max_length", "batch_tokens"))
    register_learnalign(methods)


def add_run_options(parser: argparse.ArgumentParser, seed_help: str, cache_help: str) -> None:
    """Dataset split/config/limit, seed, dtype, device and cache options every selection method takes."""
    parser.add_argument("--split", default="train", help="(default: train)")
    parser.add_argument("--config", help="hub dataset configuration, e.g. 'main' for openai/gsm8k")
    parser.add_argument("--limit", type=int, help="only the first N rows")
    parser.add_argument("--seed", type=int, default=0, help=f"{seed_help} (default: 0)")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cache-dir", help=f"{cache_help} (default: $CURATEKIT_CACHE or ~/.cache/curatekit)")


def register_learnalign(methods: argparse._SubParsersAction) -> None:
    from curate.cli import common_options

    la = methods.add_parser(
        "learnalign", parents=[common_options()], help="LearnAlign: learnability x aligned GRPO gradients",
        description="Warm up --model with a short GRPO run on a random subset (unless --no-warmup), "
        "roll out G completions per prompt to get success rates p, compute each prompt's projected "
        "GRPO gradient over LoRA parameters, score V_i <g_i, mean_j V_j g_j> with V = p(1-p), and keep "
        "the top --n. Writes OUT/selected.jsonl, OUT/scored.jsonl (every row with its scores), "
        "OUT/report.json, OUT/report.png and OUT/warmup/ (the warmup adapter).",
    )
    la.add_argument("--dataset", required=True, help="hub id, data file, or save_to_disk folder")
    la.add_argument("--model", required=True, help="the policy to be trained (folder or hub id)")
    la.add_argument("--n", type=int, required=True, help="rows to select")
    la.add_argument("--out", required=True, help="output folder")
    la.add_argument("--task", default="gsm8k", help="eval task: prompts and verifier (default: gsm8k)")
    la.add_argument("--method", default="learnalign",
                    choices=["learnalign", "random", "ifd", "length", "learnability", "gradient", "gradient_cosine"],
                    help="learnalign, or a baseline (default: learnalign)")
    la.add_argument("--num-rollouts", type=int, default=8, help="G rollouts per prompt (default: 8)")
    la.add_argument("--temperature", type=float, default=1.0, help="(default: 1.0)")
    la.add_argument("--max-new-tokens", type=int, help="rollout length (default: the task's)")
    la.add_argument("--projection-dim", type=int, default=8192, help="k (default: 8192)")
    la.add_argument("--beta", type=float, default=0.04, help="KL coefficient in the gradient (default: 0.04)")
    la.add_argument("--lora-r", type=int, default=8, help="(default: 8)")
    la.add_argument("--target-modules", default="q_proj,v_proj", help="LoRA layers (default: q_proj,v_proj)")
    la.add_argument("--no-warmup", action="store_true", help="score with --model itself (the paper's ablation)")
    la.add_argument("--warmup-samples", type=int, default=300, help="random rows for warmup (default: 300)")
    la.add_argument("--warmup-steps", type=int, help="GRPO steps of the warmup (default: one epoch)")
    la.add_argument("--warmup-recipe", help="rl.grpo YAML for the warmup (default: small LoRA settings)")
    la.add_argument("--with-ifd", action="store_true", help="also score IFD (for --method ifd)")
    la.add_argument("--backend", default="auto", choices=["auto", "hf", "vllm"], help="rollouts (default: auto)")
    add_run_options(la, seed_help="rollouts, projection and tie-breaking seed", cache_help="rollout/gradient cache")
    la.set_defaults(func=run_learnalign, positive=("limit", "n", "num_rollouts", "max_new_tokens", "projection_dim",
                                                   "lora_r", "warmup_samples", "warmup_steps"))


def sidecar(out: str | Path, suffix: str) -> Path:
    """``runs/sel.jsonl`` -> ``runs/sel.report.json``; ``runs/sel`` -> ``runs/sel.report.json``."""
    from curate.core.io import DATA_FILE_SUFFIXES

    out = Path(out)
    stem = out.name[: -len(out.suffix)] if out.suffix.lower() in DATA_FILE_SUFFIXES else out.name
    return out.with_name(stem + suffix)


def run_cdas(args: argparse.Namespace) -> int:
    from curate import cdas
    from curate.ifd import IFDConfig
    from curate.llm.data import load_data, save_dataset
    from curate.core.io import atomic_write_json

    config = cdas.CDASConfig(
        ratio=args.ratio, num_clusters=args.num_clusters, embedding_model=args.embedding_model, seed=args.seed,
        prompt_column=args.prompt_column, response_column=args.response_column,
        ifd=IFDConfig(max_length=args.max_length, max_tokens_per_batch=max(args.batch_tokens, args.max_length),
                      chat={"auto": None, "chat": True}.get(args.prompt_format, False),
                      template="codeact" if args.prompt_format == "codeact" else "plain"),
    )
    ds = load_data(args.dataset, split=args.split, config=args.config, limit=args.limit)
    scored = cdas.score(ds, args.model, config=config, cache_dir=args.cache_dir, device=args.device,
                        dtype=args.dtype)
    selected = cdas.select(scored, args.ratio, args.method, args.seed)
    if len(selected) == 0:
        from curate.core.errors import BadInputError

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


def run_learnalign(args: argparse.Namespace) -> int:
    from curate import learnalign
    from curate.grad_features import GradientConfig, check_lora_targets
    from curate.llm.data import load_data, save_dataset
    from curate.core.errors import BadInputError
    from curate.core.io import atomic_write_json, read_yaml
    from eval.tasks import get_task

    if args.warmup_recipe and not args.no_warmup:
        read_yaml(args.warmup_recipe, "--warmup-recipe")  # a missing or broken recipe, before any work
    targets = tuple(t.strip() for t in args.target_modules.split(",") if t.strip())
    config = learnalign.LearnAlignConfig(
        task=args.task, num_rollouts=args.num_rollouts, temperature=args.temperature,
        max_new_tokens=args.max_new_tokens, backend=args.backend, seed=args.seed, with_ifd=args.with_ifd,
        gradients=GradientConfig(projection_dim=args.projection_dim, beta=args.beta, lora_r=args.lora_r,
                                 lora_alpha=2 * args.lora_r, target_modules=targets, seed=args.seed))
    ds = load_data(args.dataset, split=args.split, config=args.config, limit=args.limit)
    get_task(args.task).rows_from(ds)  # the task's columns, before any work
    if args.n <= 0 or args.n > len(ds):
        raise BadInputError(f"--n must be in [1, {len(ds)}] (the pool size), got {args.n}")
    if args.method == "ifd" and not args.with_ifd:
        raise BadInputError("--method ifd needs --with-ifd")
    check_lora_targets(args.model, targets)
    out = Path(args.out)
    scorer = args.model
    if not args.no_warmup:
        from rl.runs import warmup

        samples = min(args.warmup_samples, len(ds))
        scorer = str(warmup(args.model, ds, out / "warmup", task=args.task, samples=samples, steps=args.warmup_steps,
                            num_generations=args.num_rollouts, max_completion_length=args.max_new_tokens or 256,
                            seed=args.seed, recipe=args.warmup_recipe,
                            use_cpu=True if args.device == "cpu" else None))
    scored = learnalign.score(ds, scorer, config, cache_dir=args.cache_dir, device=args.device, dtype=args.dtype)
    selected = learnalign.select(scored, args.n, args.method, args.seed)
    main_process = learnalign.is_main_process()
    learnalign.end_distributed()
    if not main_process:
        return 0  # under accelerate launch every rank scored a shard; the first one writes
    report = learnalign.report(scored, selected, args.method)
    report.update(dataset=args.dataset, model=args.model, scorer=scorer, warmup=not args.no_warmup,
                  num_rollouts=args.num_rollouts, projection_dim=args.projection_dim)
    paths = {"selected": save_dataset(selected, out / "selected.jsonl"),
             "scored": save_dataset(scored, out / "scored.jsonl"),
             "report": atomic_write_json(out / "report.json", report),
             "plot": learnalign.plot_report(scored, selected, out / "report.png")}
    rate = report["success_rate"]
    print(f"learnalign ({args.method}): {len(selected)} of {len(scored)} rows selected; success rate mean "
          f"{rate['mean']:.3f}, {rate['p_equals_0']} at p=0, {rate['p_equals_1']} at p=1, "
          f"{rate['learnable']} learnable")
    for name, path in paths.items():
        print(f"{name + ':':<10}{path}")
    return 0

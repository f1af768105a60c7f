"""``curate demo``: the LearnAlign experiment in miniature, offline (see :mod:`curate.demo`)."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from curate.cli import common_options
    from curate.demo import PRESETS

    demo = subparsers.add_parser(
        "demo", parents=[common_options()], help="offline mini-lab: SFT from scratch, LearnAlign vs baselines, GRPO",
        description="Train a small Qwen2 from scratch on synthetic arithmetic word problems, score a pool "
        "with LearnAlign and its baselines, run GRPO from the same start on each arm's top-N and on the "
        "full pool, and evaluate every run on a held-out split: the pipeline recipes/pipelines/demo_PRESET.yaml, "
        "run as `curate run` runs it. Writes OUT/report/report.md, report.json and plots; an interrupted run "
        "resumes.",
    )
    demo.add_argument("--preset", default="default", choices=PRESETS,
                      help="default: about 16 min on 2 CPU cores; smoke: under a minute; gpu: larger, for a GPU")
    demo.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    demo.add_argument("--seed", type=int, help="data seed (default: the preset's, 0)")
    demo.add_argument("--sft-steps", type=int, help="override the preset's SFT steps")
    demo.add_argument("--grpo-steps", type=int, help="override the preset's GRPO steps per arm")
    demo.add_argument("--device", help="override the preset's device (cpu, cuda, auto)")
    demo.add_argument("--workers", type=int, help="arms trained (and evaluated) in parallel (default: the preset's)")
    demo.add_argument("--dry-run", action="store_true", help="print the stages, cached or to run, and stop")
    demo.add_argument("--overwrite", action="store_true", help="write into a non-empty --out that holds another run")
    demo.set_defaults(func=run_demo, positive=("sft_steps", "grpo_steps", "workers"))


def run_demo(args: argparse.Namespace) -> int:
    from curate import demo

    overrides = dict(seed=args.seed, sft_steps=args.sft_steps, grpo_steps=args.grpo_steps, device=args.device,
                     workers=args.workers)
    if args.dry_run:
        from curate.pipeline import describe, plan

        print(describe(plan(demo.load(args.preset, **overrides), args.out)))
        return 0
    demo.run(args.preset, args.out, overwrite=args.overwrite, **overrides)
    report = f"{args.out}/report"
    print()
    print(open(f"{report}/report.md", encoding="utf-8").read())
    print(f"report: {report}/report.md, {report}/report.json\nplots:  {report}/accuracy.png, {report}/train_reward.png")
    return 0

"""``curate demo``: the LearnAlign experiment in miniature, offline (see :mod:`curate.demo`)."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from curate.cli import common_options

    demo = subparsers.add_parser(
        "demo", parents=[common_options()], help="offline mini-lab: SFT from scratch, LearnAlign vs baselines, GRPO",
        description="Train a small Qwen2 from scratch on synthetic arithmetic word problems, score a pool "
        "with LearnAlign and its baselines, run GRPO from the same start on each arm's top-N and on the "
        "full pool, and evaluate every run on a held-out split. Writes results.json, results.md and plots "
        "to --out; an interrupted run resumes.",
    )
    demo.add_argument("--preset", default="default", choices=["default", "smoke", "gpu"],
                      help="default: <= 15 min on 2 CPU cores; smoke: < 3 min; gpu: larger, for a GPU")
    demo.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    demo.add_argument("--seed", type=int, default=0, help="data seed (default: 0)")
    demo.add_argument("--sft-steps", type=int, help="override the preset's SFT steps")
    demo.add_argument("--grpo-steps", type=int, help="override the preset's GRPO steps per arm")
    demo.add_argument("--device", help="override the preset's device (cpu, cuda, auto)")
    demo.add_argument("--workers", type=int, help="GRPO arms trained in parallel (default: the preset's)")
    demo.set_defaults(func=run_demo, positive=("sft_steps", "grpo_steps", "workers"))


def run_demo(args: argparse.Namespace) -> int:
    from curate import demo

    preset = demo.preset_with(args.preset, sft_steps=args.sft_steps, grpo_steps=args.grpo_steps, device=args.device,
                              workers=args.workers)
    report = demo.run(preset, args.out, seed=args.seed)
    print()
    print(demo.markdown(report))
    files = report["files"]
    print(f"results:  {files['results']}\nmarkdown: {files['markdown']}\nplots:    {', '.join(files['plots'])}")
    return 0

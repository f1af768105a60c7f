"""``curate run PIPELINE.yaml``: a whole selection experiment from one file (:mod:`curate.pipeline`)."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    from curate.cli import common_options
    from curate.pipeline.spec import STAGE_KINDS

    parser = subparsers.add_parser(
        "run", parents=[common_options()], help="run a pipeline file: select -> train -> evaluate -> compare",
        description="Run a pipeline file (see recipes/pipelines/): every arm's selection, training from the same "
        "start with the same recipe, evaluation, and paired comparisons of every arm with the start and with each "
        "other in OUT/report/report.md. Each stage is cached by its inputs, so a rerun resumes.")
    parser.add_argument("pipeline", help="the pipeline YAML file")
    parser.add_argument("--out", help="output folder (default: runs/pipelines/NAME)")
    parser.add_argument("--dry-run", action="store_true", help="print the stages, cached or to run, and stop")
    parser.add_argument("--only", choices=STAGE_KINDS,
                        help="run this kind of stage again even where it is cached, and every later kind "
                        "(which reads it)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty --out that holds another run")
    parser.set_defaults(func=run_pipeline, default_out=default_out)


def default_out(args: argparse.Namespace) -> str:
    from pathlib import Path

    from curate.pipeline import load_pipeline

    return str(Path("runs") / "pipelines" / (load_pipeline(args.pipeline).name or Path(args.pipeline).stem))


def run_pipeline(args: argparse.Namespace) -> int:
    from curate.core.runs import claim_output, run_log
    from curate.pipeline import describe, load_pipeline, plan, run

    spec = load_pipeline(args.pipeline)
    if args.dry_run:
        print(describe(plan(spec, Path(args.out)), args.only))
        return 0
    out = claim_output(args.out, "run", {"pipeline": spec.name}, overwrite=args.overwrite)
    with run_log(out):
        report = run(spec, out, args.only)
    print((report / "report.md").read_text(encoding="utf-8"))
    print(f"report: {report / 'report.md'}")
    return 0

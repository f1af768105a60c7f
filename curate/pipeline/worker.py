"""Stages of a pipeline in other processes, planned there from OUT/pipeline.json (the checked spec):

- ``accelerate launch --config_file CONFIG -m curate.pipeline.worker OUT STAGE``: every rank runs
  the stage's work (training shards its batches, scoring its rows; the first rank writes), and the
  parent writes the stage's marker once the launch succeeded;
- ``workers: N``: each arm-and-seed chain (its training, then its evaluations; the start's
  evaluations form a chain of their own) runs in one of N spawned processes, the CPU threads split
  between them. Each stage is seeded on its own, so results do not depend on which process ran it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from curate.core.io import atomic_write_json

if TYPE_CHECKING:
    from curate.pipeline.spec import PipelineSpec
    from curate.pipeline.stages import Stage

SPEC_FILE = "pipeline.json"
LAUNCHED = ("score", "train")  # the kinds that run under `accelerate launch` when the file names a config


def save_spec(spec: PipelineSpec, out: Path) -> None:
    atomic_write_json(out / SPEC_FILE, asdict(spec))


def load_spec(out: Path) -> PipelineSpec:
    from curate.pipeline.spec import check_data, from_dict

    spec = from_dict(json.loads((out / SPEC_FILE).read_text(encoding="utf-8")), str(out / SPEC_FILE))
    check_data(spec, str(out / SPEC_FILE))
    return spec


def find(spec: PipelineSpec, out: Path, names: list[str]) -> list[Stage]:
    from curate.pipeline.stages import plan

    stages = {stage.name: stage for stage in plan(spec, out)}
    return [stages[name] for name in names]


def launcher(spec: PipelineSpec, out: Path) -> Callable[[Stage], None]:
    """Run a stage's work under ``accelerate launch`` with the file's config."""
    from curate.core.errors import BadInputError

    def launch(stage: Stage) -> None:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(spec.accelerate),
                   "-m", "curate.pipeline.worker", str(out), stage.name]
        done = subprocess.run(command, cwd=os.getcwd())
        if done.returncode != 0:
            raise BadInputError(f"{stage.name}: failed under accelerate launch --config_file {spec.accelerate} "
                                f"(exit {done.returncode}; its output is above)")

    return launch


def chains(todo: list[Stage]) -> list[list[Stage]]:
    """The train and eval stages of ``todo`` as independent chains: each trained model's training
    and evaluations, and the start's evaluations."""
    groups: dict[str, list[Stage]] = {}
    for stage in todo:
        if stage.kind in ("train", "eval"):
            groups.setdefault(stage.meta["model"], []).append(stage)
    return list(groups.values())


def _threads(count: int) -> None:
    import torch

    torch.set_num_threads(count)


def run_chains(spec: PipelineSpec, out: Path, groups: list[list[Stage]], workers: int,
               line: Callable[[str], None]) -> None:
    """Every chain in one of ``workers`` spawned processes (one CPU thread share each on a CPU)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // workers) if spec.device == "cpu" else 0
    context = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_threads if threads else None,
                             initargs=(threads,) if threads else ()) as pool:
        futures = [pool.submit(execute, spec, out, [stage.name for stage in chain]) for chain in groups]
        for chain, future in zip(groups, futures):
            future.result()
            for stage in chain:
                line(f"{stage.name}: {stage.work} (worker)")


def execute(spec: PipelineSpec, out: Path, names: list[str]) -> None:
    """Stages by name, in order, each with its marker (a worker process's job)."""
    for stage in find(spec, out, names):
        stage.execute()


def main(argv: list[str] | None = None) -> int:
    """One stage's work on this rank (``accelerate launch ... -m curate.pipeline.worker OUT STAGE``)."""
    from curate.core.errors import run_main
    from curate.llm.shards import end_distributed

    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="curate.pipeline.worker", description=main.__doc__)
    parser.add_argument("out")
    parser.add_argument("stage")
    args = parser.parse_args(argv)

    def work() -> None:
        out = Path(args.out)
        (stage,) = find(load_spec(out), out, [args.stage])
        stage.run(stage.path)
        end_distributed()

    return run_main("curate.pipeline.worker", work, argv)


if __name__ == "__main__":
    sys.exit(main())

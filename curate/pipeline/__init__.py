"""``curate run PIPELINE.yaml``: select -> train -> evaluate -> compare, in one file.

:mod:`.spec` reads and checks the file, :mod:`.stages` plans the stages (each cached by its inputs
in OUT, so a killed run resumes and an edited file reruns only what it changed), :mod:`.report`
writes the comparison. Stages run in this process; with ``workers: N`` each arm's training and
its evaluations run as one chain in N processes at a time (:mod:`.worker`), and with
``accelerate: CONFIG`` the scoring and training stages run under ``accelerate launch --config_file
CONFIG`` (single GPU, DDP, ZeRO: whatever the config says).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from curate.pipeline.spec import STAGE_KINDS, PipelineSpec, load_pipeline

if TYPE_CHECKING:
    from curate.pipeline.stages import Stage

__all__ = ["PipelineSpec", "load_pipeline", "plan", "run", "describe"]


def plan(spec: PipelineSpec, out: str | Path) -> list[Stage]:
    from curate.pipeline.stages import plan as stages_plan

    return stages_plan(spec, Path(out))


def rerun(stage: Stage, only: str | None) -> bool:
    """Whether ``--only KIND`` reruns ``stage``: stages of that kind and of every later kind, which
    read them (the keys of later stages name their inputs' settings, not the files a rerun rewrites)."""
    return only is not None and STAGE_KINDS.index(stage.kind) >= STAGE_KINDS.index(only)


def describe(stages: list[Stage], only: str | None = None) -> str:
    """The plan: every stage, whether it is cached or will run, and what it does."""
    lines = []
    for stage in stages:
        status = "run" if (rerun(stage, only) or not stage.done()) else "cached"
        lines.append(f"  [{status:>6}] {stage.name:<28} {stage.work}")
    todo = sum(1 for line in lines if "[   run]" in line)
    return f"{len(stages)} stages, {todo} to run:\n" + "\n".join(lines)


def run(spec: PipelineSpec, out: str | Path, only: str | None = None) -> Path:
    """Run every stage that is not done (and, with ``only``, every stage of that kind and after it);
    the report's folder."""
    from curate.core.errors import BadInputError
    from curate.core.runs import Stages, nested
    from curate.pipeline import worker

    if only is not None and only not in STAGE_KINDS:
        raise BadInputError(f"--only '{only}': choose one of {', '.join(STAGE_KINDS)}")
    out = Path(out)
    stages = plan(spec, out)
    todo = [stage for stage in stages if rerun(stage, only) or not stage.done()]
    line = Stages(len(todo))
    worker.save_spec(spec, out)  # what launched stages and worker processes plan from
    launch = worker.launcher(spec, out) if spec.accelerate else None
    chains = worker.chains(todo) if spec.workers > 1 else []
    side_by_side = {stage.name for chain in chains for stage in chain}
    for stage in todo:
        if stage.name in side_by_side:
            continue
        if stage.kind == "compare" and chains:
            worker.run_chains(spec, out, chains, spec.workers, line)
            chains = []
        line(f"{stage.name}: {stage.work}")
        with nested():
            stage.execute(launch if stage.kind in worker.LAUNCHED else None)
    if chains:  # no comparison left to run (e.g. --only train)
        worker.run_chains(spec, out, chains, spec.workers, line)
    return stages[-1].path

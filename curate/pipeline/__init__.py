"""``curate run PIPELINE.yaml``: select -> train -> evaluate -> compare, in one file.

:mod:`.spec` reads and checks the file, :mod:`.stages` plans the stages (each cached by its inputs
in OUT, so a killed run resumes and an edited file reruns only what it changed), :mod:`.report`
writes the comparison. Training and scoring run in this process (``accelerate launch`` of the
stages is not there yet).
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


def describe(stages: list[Stage], only: str | None = None) -> str:
    """The plan: every stage, whether it is cached or will run, and what it does."""
    lines = []
    for stage in stages:
        status = "run" if (only == stage.kind or not stage.done()) else "cached"
        lines.append(f"  [{status:>6}] {stage.name:<28} {stage.work}")
    todo = sum(1 for line in lines if "[   run]" in line)
    return f"{len(stages)} stages, {todo} to run:\n" + "\n".join(lines)


def run(spec: PipelineSpec, out: str | Path, only: str | None = None) -> Path:
    """Run every stage that is not done (and every stage of kind ``only``); the report's folder."""
    from curate.core.errors import BadInputError
    from curate.core.runs import Stages, nested

    if only is not None and only not in STAGE_KINDS:
        raise BadInputError(f"--only '{only}': choose one of {', '.join(STAGE_KINDS)}")
    stages = plan(spec, Path(out))
    todo = [stage for stage in stages if stage.kind == only or not stage.done()]
    line = Stages(len(todo))
    for stage in todo:
        line(f"{stage.name}: {stage.work}")
        with nested():
            stage.execute()
    return stages[-1].path

"""The pipeline file: one dataset, arms (a selector from the registry with its budget, or the
full pool), one training recipe every arm trains with from the same start, one evaluation.

    name: gsm8k-tiny
    model: runs/tiny                      # the start every arm trains from
    dataset: {source: ../shared/data/gsm8k/train.jsonl, limit: 64}
    seeds: [0, 1]                         # one trained model per arm and seed
    arms:
      - {name: learnalign, selector: learnalign, n: 16, config: {num_rollouts: 4}, warmup: {samples: 16, steps: 2}}
      - {name: random, selector: learnalign, method: random, n: 16, config: {num_rollouts: 4}}
      - {name: full}                      # no selector: the whole pool
    train: {kind: grpo, task: gsm8k, fields: {max_steps: 4, num_generations: 4}}
    eval: {task: gsm8k, limit: 100, num_samples: 1}

Everything is checked when the file is read, before any work: an unknown field, selector, method,
task or training kind is one line naming it (:func:`load_pipeline`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curate.core.config import from_mapping
from curate.core.errors import BadInputError, check_fields

TRAIN_KINDS = ("grpo", "sft")
STAGE_KINDS = ("score", "select", "train", "eval", "compare")  # in the order they run


@dataclass
class DatasetSpec:
    source: str = ""
    split: str = "train"
    config: str | None = None  # the hub dataset's configuration
    limit: int | None = None
    prompt_column: str | None = None
    answer_column: str | None = None

    def __post_init__(self) -> None:
        if not self.source:
            raise BadInputError("source is required (a data file, save_to_disk folder or hub id)")


@dataclass
class WarmupSpec:
    samples: int = 300
    steps: int | None = None
    recipe: str | None = None


@dataclass
class ArmSpec:
    """One arm: ``selector`` (a name in :data:`curate.registry.SELECTORS`) keeps ``n`` rows (or
    ``ratio``) by ``method`` (default: the selector's own); no selector means the full pool.
    ``config`` holds the selector's config fields, ``warmup`` LearnAlign's warmup (none: no warmup)."""

    name: str = ""
    selector: str | None = None
    method: str | None = None
    n: int | None = None
    ratio: float | None = None
    config: dict[str, Any] = field(default_factory=dict)
    warmup: WarmupSpec | None = None
    push_to_hub: str | None = None  # a hub dataset repository the selection and its card go to

    def __post_init__(self) -> None:
        from curate.registry import RULES, SELECTORS

        if not self.name:
            raise BadInputError("every arm needs a name")
        if self.selector is None:
            if self.method or self.n or self.ratio or self.config or self.warmup:
                raise BadInputError(f"arm '{self.name}': a full-pool arm (no selector) takes no method, n, ratio, "
                                    "config or warmup")
            return
        check_fields([self.selector], SELECTORS, f"arm '{self.name}'", what="selector")
        methods = SELECTORS[self.selector].methods
        if self.method is not None and self.method not in methods:
            check_fields([self.method], RULES, f"arm '{self.name}'", what="method")
            raise BadInputError(f"arm '{self.name}': method '{self.method}' is not one of {self.selector}'s: "
                                f"{', '.join(methods)}")
        if self.selector == "learnalign" and (self.n is None) == (self.ratio is None):
            raise BadInputError(f"arm '{self.name}': give exactly one of n or ratio")
        if self.warmup is not None and self.selector != "learnalign":
            raise BadInputError(f"arm '{self.name}': warmup is LearnAlign's; selector '{self.selector}' has none")

    def scoring_key(self) -> tuple:
        """What decides the scores: arms that differ only in method and budget share them."""
        return self.selector, sorted(self.config.items()), self.warmup


@dataclass
class TrainSpec:
    """``kind: grpo`` (rewards from ``task``'s verifier) or ``sft``, with an ``rl.grpo`` /
    ``sft.train`` recipe (none: small defaults) and ``fields`` on top of it."""

    kind: str = "grpo"
    recipe: str | None = None
    task: str = "gsm8k"
    fields: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in TRAIN_KINDS:
            check_fields([self.kind], TRAIN_KINDS, "train", what="kind")


@dataclass
class EvalSpec:
    task: str = "gsm8k"
    data: str | None = None  # default: the task's own test data
    split: str = "test"
    limit: int | None = None
    num_samples: int = 1
    temperature: float | None = None  # default: greedy for one sample, 0.8 for more
    max_new_tokens: int | None = None
    answer_mode: str = "flexible"
    chat: bool | None = None
    seed: int = 0


@dataclass
class PipelineSpec:
    name: str = ""
    model: str = ""
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    arms: tuple[ArmSpec, ...] = ()
    train: TrainSpec = field(default_factory=TrainSpec)
    eval: EvalSpec = field(default_factory=EvalSpec)
    seeds: tuple[int, ...] = (0,)
    device: str = "auto"

    def __post_init__(self) -> None:
        if not self.model:
            raise BadInputError("model is required (the start every arm trains from)")
        if not self.arms:
            raise BadInputError("arms: give at least one arm")
        names = [arm.name for arm in self.arms]
        if len(set(names)) < len(names):
            raise BadInputError(f"arms: names must differ, got {', '.join(names)}")
        if "start" in names:
            raise BadInputError("arms: 'start' names the untrained model; choose another arm name")
        if not self.seeds:
            raise BadInputError("seeds: give at least one seed")


def load_pipeline(path: str | os.PathLike) -> PipelineSpec:
    """The pipeline of a YAML file, checked: fields and their types, selectors and their methods,
    tasks, training kind, recipe files and the start model folder; one line naming what is wrong."""
    from curate.core.io import read_yaml

    where = f"{path}"
    spec = from_mapping(PipelineSpec, read_yaml(path, "pipeline"), where)
    check_references(spec, where)
    return spec


def check_references(spec: PipelineSpec, where: str) -> None:
    """What the file names must exist: tasks, recipes, the start model (a folder, or a hub id)."""
    from curate.llm.models import check_model_path
    from eval.tasks import get_task

    for section, task in (("train", spec.train.task), ("eval", spec.eval.task)):
        try:
            get_task(task)
        except BadInputError as err:
            raise BadInputError(f"{where}: {section}.task: {err}") from err
    get_task(spec.eval.task).check_answer_mode(spec.eval.answer_mode, f"{where}: eval.answer_mode")
    recipes = [("train.recipe", spec.train.recipe)]
    recipes += [(f"arm '{arm.name}': warmup.recipe", arm.warmup.recipe) for arm in spec.arms if arm.warmup]
    for name, recipe in recipes:
        if recipe is not None and not Path(recipe).is_file():
            raise BadInputError(f"{where}: {name}: no such file: {recipe}")
    check_model_path(spec.model, f"{where}: model")
    for arm in spec.arms:
        if arm.push_to_hub:
            from curate.selection import check_hub_repo

            check_hub_repo(arm.push_to_hub, f"{where}: arm '{arm.name}': push_to_hub")

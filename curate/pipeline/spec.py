"""The pipeline file: one dataset, arms (a selector from the registry with its budget, or the
full pool), one training recipe every arm trains with from the same start, one or more evaluations.

    name: gsm8k-tiny
    model: runs/tiny                      # the start every arm trains from
    dataset: {source: ../shared/data/gsm8k/train.jsonl, limit: 64}
    seeds: [0, 1]                         # one selection and one trained model per arm and seed
    arms:
      - {name: learnalign, selector: learnalign, n: 16, config: {num_rollouts: 4}, warmup: {samples: 16, steps: 2}}
      - {name: random, selector: learnalign, method: random, n: 16, config: {num_rollouts: 4}}
      - {name: full}                      # no selector: the whole pool
      - {name: full-online, train: {learnability_sampling: true}}   # this arm's training fields on top
    train: {kind: grpo, task: gsm8k, fields: {max_steps: 4, num_generations: 4}}
    eval: {task: gsm8k, limit: 100, num_samples: 1}

Optional sections: ``data`` (splits made by a generator, :mod:`.generators`, read elsewhere in the
file as ``data:NAME``), ``start`` (the start model made by SFT, from a tiny model built from
scratch or from ``model``), ``gate`` (the learnability gate on LearnAlign's scores: the run stops
before any training when the pool cannot show an effect), ``workers`` (train-and-evaluate chains
run side by side in that many processes), ``accelerate`` (an accelerate config file: scoring and
training stages run under ``accelerate launch`` with it), and ``eval`` as a list (several
evaluations, the first one primary). ``recipes/pipelines/demo_*.yaml`` use them all.

Everything is checked when the file is read, before any work: an unknown field, selector, method,
task, generator, split or training kind is one line naming it (:func:`load_pipeline`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curate.core.config import from_mapping
from curate.core.errors import BadInputError, check_fields
from curate.llm.tiny import TinyModelConfig

TRAIN_KINDS = ("grpo", "sft")
# What the pipeline sets in a run's fields itself (rl.runs.warmup's own, a training stage's, the start's).
WARMUP_SET = ("model_name_or_path", "task", "subset", "subset_seed", "max_steps", "seed", "use_peft",
              "num_generations", "per_device_train_batch_size", "max_completion_length", "use_cpu", "output_dir")
TRAIN_SET = ("model_name_or_path", "task", "dataset", "output_dir", "seed", "use_cpu")
START_SET = ("model_name_or_path", "dataset", "output_dir", "use_cpu")
STAGE_KINDS = ("data", "start", "score", "select", "train", "eval", "compare")  # in the order they run
DATA_PREFIX = "data:"  # "data:pool" is the data section's split "pool"


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
class DataSpec:
    """Splits (name: rows) made by ``generator`` (:data:`.generators.GENERATORS`) from ``seed``,
    disjoint, with the generator's ``config``; written to OUT/data/NAME.jsonl."""

    generator: str = ""
    seed: int = 0
    splits: dict[str, Any] = field(default_factory=dict)
    config: Any = field(default_factory=dict)  # read into the generator's config class when checked

    def __post_init__(self) -> None:
        from curate.pipeline.generators import GENERATORS

        check_fields([self.generator], GENERATORS, what="generator")
        if not self.splits:
            raise BadInputError("splits: name at least one split and its size")
        for name, size in self.splits.items():
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise BadInputError(f"splits.{name}: expected a positive integer, got {size!r}")


@dataclass
class StartSpec:
    """The start every arm trains from, made here by SFT on ``data`` (``sft.train`` with ``recipe``
    and ``fields``): from ``tiny`` (a Qwen2 of that shape built from scratch, its tokenizer trained
    on the SFT texts; no chat template unless ``chat_template``) or else from the file's ``model``."""

    data: str = ""
    tiny: TinyModelConfig | None = None
    chat_template: bool = False
    recipe: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.data:
            raise BadInputError("data is required (what SFT trains the start on: data:NAME or a dataset)")
        refuse_fields(self.fields, START_SET, "fields", "the start stage sets it (from model, data and device)")


@dataclass
class GateSpec:
    """The learnability gate (before any training), on the shares of the pool at p = 0, at p = 1
    and in between under LearnAlign's scoring policy: outside these bounds selection cannot show
    an effect, and the run stops with the pool's histogram."""

    max_p0: float = 1.0
    max_p1: float = 1.0
    min_learnable: float = 0.0

    def __post_init__(self) -> None:
        for name in ("max_p0", "max_p1", "min_learnable"):
            if not 0 <= getattr(self, name) <= 1:
                raise BadInputError(f"{name} is a share of the pool, in [0, 1]; got {getattr(self, name)}")


def refuse_fields(fields: dict[str, Any], reserved: tuple[str, ...], section: str, why: str) -> None:
    """Fields the pipeline sets itself are not the file's to give: one line naming the first."""
    taken = [name for name in fields if name in reserved]
    if taken:
        raise BadInputError(f"{section}.{taken[0]}: {why}; drop it from the file")


@dataclass
class WarmupSpec:
    samples: int = 300
    steps: int | None = None
    recipe: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)  # more GRPO fields of the warmup run (e.g. beta)

    def __post_init__(self) -> None:
        refuse_fields(self.fields, WARMUP_SET, "fields", "the warmup sets it (from samples, steps and the "
                      "selector's config)")


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
    train: dict[str, Any] = field(default_factory=dict)  # this arm's training fields on top of train.fields

    def __post_init__(self) -> None:
        from curate.registry import RULES, SELECTORS

        refuse_fields(self.train, TRAIN_SET, f"arm '{self.name}': train", "every arm's run sets it (the start, "
                      "its rows, the seeds list, task and device)")
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
        refuse_fields(self.fields, TRAIN_SET, "fields", "every arm's run sets it (the start, its rows, the seeds "
                      "list, task and device)")


@dataclass
class EvalSpec:
    name: str = ""  # how the report calls it (default: the task); needed with several evaluations
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
    backend: str = "auto"
    batch_size: int = 32

    def __post_init__(self) -> None:
        self.name = self.name or self.task


@dataclass
class PipelineSpec:
    name: str = ""
    model: str = ""
    data: DataSpec | None = None
    start: StartSpec | None = None
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    arms: tuple[ArmSpec, ...] = ()
    train: TrainSpec = field(default_factory=TrainSpec)
    eval: tuple[EvalSpec, ...] = ()  # the file may give one mapping or a list; the first is primary
    gate: GateSpec | None = None
    seeds: tuple[int, ...] = (0,)
    device: str = "auto"
    workers: int = 1
    accelerate: str | None = None
    # The arm whose final held-out curve accuracy (TRL's eval_reward, with train.fields eval_dataset)
    # is the target of every arm's steps- and generations-to-accuracy in the report.
    reference: str | None = None

    def __post_init__(self) -> None:
        if self.start is not None and self.start.tiny is not None:
            if self.model:
                raise BadInputError("start.tiny builds the start model from scratch; drop model, or drop start.tiny "
                                    "to fine-tune model")
        elif not self.model:
            raise BadInputError("model is required (the start every arm trains from, or what start fine-tunes)")
        if self.workers < 1:
            raise BadInputError(f"workers must be at least 1, got {self.workers}")
        if self.workers > 1 and self.accelerate:
            raise BadInputError("workers: a launched stage takes every process the accelerate config names; "
                                "give workers or accelerate, not both")
        if self.gate is not None and not any(arm.selector == "learnalign" for arm in self.arms):
            raise BadInputError("gate: the learnability gate reads LearnAlign's success rates; no arm has "
                                "selector learnalign")
        if not self.arms:
            raise BadInputError("arms: give at least one arm")
        names = [arm.name for arm in self.arms]
        if len(set(names)) < len(names):
            raise BadInputError(f"arms: names must differ, got {', '.join(names)}")
        if "start" in names:
            raise BadInputError("arms: 'start' names the untrained model; choose another arm name")
        if self.reference is not None and self.reference not in names:
            raise BadInputError(f"reference: no arm is named '{self.reference}'; arms: {', '.join(names)}")
        if not self.seeds:
            raise BadInputError("seeds: give at least one seed")
        if len(set(self.seeds)) < len(self.seeds):
            raise BadInputError(f"seeds: seeds must differ, got {list(self.seeds)}")
        self.eval = self.eval or (EvalSpec(),)
        names = [e.name for e in self.eval]
        if len(set(names)) < len(names):
            raise BadInputError(f"eval: give every evaluation its own name, got {', '.join(names)}")

    @property
    def primary(self) -> EvalSpec:
        return self.eval[0]


def load_pipeline(path: str | os.PathLike) -> PipelineSpec:
    """The pipeline of a YAML file, checked: fields and their types, selectors and their methods,
    tasks, generators and their splits, training kind, recipe files and the start model folder; one
    line naming what is wrong."""
    from curate.core.io import read_yaml

    where = f"{path}"
    spec = from_dict(read_yaml(path, "pipeline"), where)
    check_references(spec, where)
    return spec


def from_dict(raw: Any, where: str = "pipeline") -> PipelineSpec:
    """The spec of a mapping (a file's, or ``asdict`` of a spec): ``eval`` may be one mapping; top-level
    keys starting ``x-`` hold YAML anchors for the rest of the file (``x-scoring: &scoring {...}``)."""
    if isinstance(raw, dict):
        raw = {k: v for k, v in raw.items() if not str(k).startswith("x-")}
    if isinstance(raw, dict) and isinstance(raw.get("eval"), dict):
        raw = {**raw, "eval": [raw["eval"]]}
        try:
            return from_mapping(PipelineSpec, raw, where)
        except BadInputError as err:  # one evaluation: name its fields eval.X, as the file does
            raise BadInputError(str(err).replace("eval[0].", "eval.").replace("eval[0]", "eval")) from None
    return from_mapping(PipelineSpec, raw, where)


def resolve(spec: PipelineSpec, source: str | None, out: Path) -> str | None:
    """A dataset source, with ``data:NAME`` as the data section's file in ``out``."""
    if source is None or not source.startswith(DATA_PREFIX):
        return source
    return str(Path(out) / "data" / f"{source.removeprefix(DATA_PREFIX)}.jsonl")


def check_references(spec: PipelineSpec, where: str) -> None:
    """What the file names must exist: tasks, generator configs and splits, recipes, the accelerate
    config, the start model (a folder, or a hub id)."""
    from curate.llm.models import check_model_path
    from eval.tasks import get_task

    evals = [(f"eval.{e.name}" if len(spec.eval) > 1 else "eval", e) for e in spec.eval]
    for section, task in [("train", spec.train.task)] + [(name, e.task) for name, e in evals]:
        try:
            get_task(task)
        except BadInputError as err:
            raise BadInputError(f"{where}: {section}.task: {err}") from err
    for name, e in evals:
        get_task(e.task).check_answer_mode(e.answer_mode, f"{where}: {name}.answer_mode")
    check_data(spec, where)
    recipes = [("train.recipe", spec.train.recipe), ("start.recipe", spec.start.recipe if spec.start else None),
               ("accelerate", spec.accelerate)]
    recipes += [(f"arm '{arm.name}': warmup.recipe", arm.warmup.recipe) for arm in spec.arms if arm.warmup]
    for name, recipe in recipes:
        if recipe is not None and not Path(recipe).is_file():
            raise BadInputError(f"{where}: {name}: no such file: {recipe}")
    if spec.model:
        check_model_path(spec.model, f"{where}: model")
    check_training_fields(spec, where)
    for arm in spec.arms:
        if arm.push_to_hub:
            from curate.selection import check_hub_repo

            check_hub_repo(arm.push_to_hub, f"{where}: arm '{arm.name}': push_to_hub")


def check_data(spec: PipelineSpec, where: str) -> None:
    """The generator's config, and every ``data:NAME`` naming one of its splits."""
    from curate.pipeline.generators import config_class

    if spec.data is not None:
        spec.data.config = from_mapping(config_class(spec.data.generator), spec.data.config, where, "data.config.")
        try:
            spec.data.config.check_splits(spec.data.splits)
        except BadInputError as err:
            raise BadInputError(f"{where}: data.config: {err}") from err
    splits = spec.data.splits if spec.data else {}
    named = [("dataset.source", spec.dataset.source), ("start.data", spec.start.data if spec.start else None)]
    named += [(f"eval.{e.name}.data" if len(spec.eval) > 1 else "eval.data", e.data) for e in spec.eval]
    named += [(f"{name}.eval_dataset", fields.get("eval_dataset")) for name, fields in training_runs(spec)]
    for field_name, source in named:
        if source and source.startswith(DATA_PREFIX) and source.removeprefix(DATA_PREFIX) not in splits:
            have = f"the data section makes {', '.join(splits)}" if splits else "the file has no data section"
            raise BadInputError(f"{where}: {field_name} {source}: no such split ({have})")


def training_runs(spec: PipelineSpec) -> list[tuple[str, dict[str, Any]]]:
    """``(where, fields)`` of the train section and of every arm with its own training fields."""
    runs = [("train.fields", {})] + [(f"arm '{arm.name}': train", arm.train) for arm in spec.arms if arm.train]
    return [(name, {**spec.train.fields, **extra}) for name, extra in runs]


def check_training_fields(spec: PipelineSpec, where: str) -> None:
    """Every training run's fields, built into TRL's config objects as the stage will build them (a
    misspelt or refused field is one line here, not a failure after hours of scoring)."""
    from sft.train import sft_configs

    t = spec.train
    for name, fields in training_runs(spec):
        try:
            if t.kind == "grpo":
                from rl.runs import grpo_configs

                grpo_configs(t.recipe, model_name_or_path="start", task=t.task, output_dir="unused", use_cpu=True,
                             **fields)
            else:
                sft_configs(t.recipe, model_name_or_path="start", dataset="unused", output_dir="unused", use_cpu=True,
                            **fields)
        except BadInputError as err:
            raise BadInputError(f"{where}: {name}: {err}") from err
    if spec.start is not None:
        try:
            sft_configs(spec.start.recipe, model_name_or_path="start", dataset="unused", output_dir="unused",
                        use_cpu=True, **spec.start.fields)
        except BadInputError as err:
            raise BadInputError(f"{where}: start.fields: {err}") from err

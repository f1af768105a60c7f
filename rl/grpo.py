"""GRPO on TRL's ``GRPOTrainer`` with rewards from the eval tasks' verifiers and sandbox.

    accelerate launch -m rl.grpo --config recipes/grpo_gsm8k.yaml [--any_field value]

The YAML holds the fields of :class:`GRPOScriptArguments`, TRL's ``GRPOConfig`` (``beta``,
``epsilon``, ``num_generations``, ``temperature``, ``use_vllm``, ...) and ``ModelConfig``
(``use_peft: true`` for LoRA). Prompts are built by the task's own prompt builder (the same ones
evaluation and LearnAlign's rollouts use); ``dataset`` may be any source with the task's columns
(or others, named by ``prompt_column`` / ``answer_column``), including a selection written by
``curate select``. Rewards (``rewards``, comma-separated):

- ``correct``: 1.0 when the task's verifier accepts the completion (GSM8K's final number,
  HumanEval's tests);
- ``format``: 1.0 when a GSM8K-style answer can be read strictly ("#### N" / "The answer is N");
- ``code_pass``: the fraction of a code problem's tests passed, run in the sandbox.
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

import datasets

from curate.core.errors import BadInputError

REWARDS = ("correct", "format", "code_pass")


@dataclass
class GRPOScriptArguments:
    """What to train on and which rewards to use (TRL's GRPOConfig and ModelConfig hold the rest)."""

    task: str = field(default="gsm8k", metadata={"help": "eval task whose prompts and verifier to use"})
    dataset: str | None = field(default=None, metadata={
        "help": "hub id, data file or save_to_disk folder (default: the task's own data)"})
    dataset_split: str = field(default="train", metadata={"help": "split to train on"})
    prompt_column: str | None = field(default=None, metadata={
        "help": "the dataset's prompt column (default: the task's own, e.g. gsm8k's question)"})
    answer_column: str | None = field(default=None, metadata={
        "help": "the dataset's answer column (default: the task's own, e.g. gsm8k's answer)"})
    limit: int | None = field(default=None, metadata={"help": "the first N rows only"})
    subset: int | None = field(default=None, metadata={"help": "a seeded random subset of N rows (warmup)"})
    subset_seed: int = field(default=0, metadata={"help": "seed of the random subset"})
    rewards: str = field(default="correct", metadata={"help": "comma-separated: correct, format, code_pass"})
    chat: bool | None = field(default=None, metadata={
        "help": "prompts through the chat template (default: when the tokenizer has one)"})
    num_fewshot: int = field(default=0, metadata={"help": "worked examples before each question"})
    answer_mode: str = field(default="flexible", metadata={
        "help": "the verifier's mode for the correct reward (gsm8k/arith: strict, flexible, ...; arith: lines)"})
    freeze: str | None = field(default=None, metadata={
        "help": "regular expression: parameters whose names match are not trained (full fine-tuning)"})
    ref_model: str | None = field(default=None, metadata={
        "help": "π_ref of the KL term (beta > 0), e.g. a staged run's original model (default: the starting policy)"})
    merge_lora: bool = field(default=False, metadata={
        "help": "save the LoRA-merged full model instead of the adapter (staged runs)"})
    learnability_sampling: bool = field(default=False, metadata={
        "help": "draw prompts in proportion to p(1-p) of online success-rate estimates (rl.online)"})
    learnability_floor: float = field(default=0.05, metadata={
        "help": "learnability sampling: every prompt's weight is at least this x 0.25"})
    learnability_decay: float = field(default=1.0, metadata={
        "help": "learnability sampling: weight of a prompt's past groups at each new one (1: keep all)"})
    learnability_prior: str = field(default="1,1", metadata={
        "help": "learnability sampling: Beta prior 'a,b' of an unseen prompt's success rate"})
    learnability_offline_weight: float = field(default=4.0, metadata={
        "help": "learnability sampling: rollouts an offline success rate counts for"})
    learnability_offline_column: str | None = field(default=None, metadata={
        "help": "learnability sampling: a column of offline success rates to start from (e.g. LearnAlign's "
                "success_rate)"})
    dynamic_sampling: bool = field(default=False, metadata={
        "help": "drop groups whose rewards are all equal and refill the batch with new prompts (DAPO; rl.dynamic)"})
    dynamic_sampling_max_rounds: int = field(default=4, metadata={
        "help": "dynamic sampling: generation rounds per batch at most (the first included); then the batch is "
                "completed with zero-variance groups and the step counted as a cap hit"})
    generation_budget: int | None = field(default=None, metadata={
        "help": "dynamic sampling: stop training before the completions generated (all ranks) would exceed this"})
    eval_dataset: str | None = field(default=None, metadata={
        "help": "held-out rows (the task's columns) that TRL's evaluation scores every eval_steps (eval_reward)"})
    eval_limit: int | None = field(default=None, metadata={"help": "the first N rows of eval_dataset only"})

    def __post_init__(self) -> None:
        from eval.tasks import get_task

        get_task(self.task).check_answer_mode(self.answer_mode)  # names the available tasks / modes
        unknown = [r for r in self.reward_names() if r not in REWARDS]
        if unknown or not self.reward_names():
            raise BadInputError(f"rewards must be a comma-separated subset of {', '.join(REWARDS)}, "
                                f"got '{self.rewards}'")
        if self.freeze:
            import re

            try:
                re.compile(self.freeze)
            except re.error as err:
                raise BadInputError(f"freeze: '{self.freeze}' is not a regular expression ({err})") from err
        if self.ref_model:
            from curate.llm.models import check_model_path

            check_model_path(self.ref_model, "ref_model")  # before any work, not after the policy loads
        for name in ("limit", "subset", "eval_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise BadInputError(f"{name} must be a positive integer, got {value}")
        if self.learnability_sampling:
            self.learnability_config()  # checked before any work
        if self.generation_budget is not None and not self.dynamic_sampling:
            raise BadInputError("generation_budget needs dynamic_sampling: true (plain GRPO generates one generation "
                                "batch per step; set max_steps)")
        if self.dynamic_sampling:
            self.dynamic_config()

    def dynamic_config(self, seed: int = 0):
        from rl.dynamic import DynamicSamplingConfig

        return DynamicSamplingConfig(max_rounds=self.dynamic_sampling_max_rounds,
                                     generation_budget=self.generation_budget, seed=seed)

    def learnability_config(self):
        from rl.sampling import LearnabilityConfig

        try:
            a, b = (float(x) for x in self.learnability_prior.split(","))
        except ValueError:
            raise BadInputError(f"learnability_prior: expected 'a,b', two positive numbers, got "
                                f"'{self.learnability_prior}'") from None
        return LearnabilityConfig(prior_successes=a, prior_failures=b, floor=self.learnability_floor,
                                  decay=self.learnability_decay, offline_weight=self.learnability_offline_weight)

    def reward_names(self) -> list[str]:
        return [r.strip() for r in self.rewards.split(",") if r.strip()]


def task_prompts(task_name: str, rows: datasets.Dataset, tokenizer: Any, options: Any) -> list[str]:
    """The task's prompt for every row (one prompt builder for evaluation, rollouts and training)."""
    from eval.tasks import get_task

    task = get_task(task_name)
    return [task.build_prompt(row, tokenizer, options) for row in rows]


def build_dataset(args: GRPOScriptArguments, tokenizer: Any, ds: datasets.Dataset | None = None) -> datasets.Dataset:
    """The task's rows (from ``ds``, else from ``args.dataset`` or the task's own data; the columns
    ``prompt_column`` / ``answer_column`` name, else the task's own) with a ``prompt`` column (TRL's
    input); the task's own code prompt, if any, moves to ``code_prompt``."""
    from eval.tasks import TaskOptions, get_task
    from eval.tasks.base import map_columns

    options = TaskOptions(source=args.dataset, split=args.dataset_split, limit=args.limit, chat=args.chat,
                          num_fewshot=args.num_fewshot, prompt_column=args.prompt_column,
                          answer_column=args.answer_column)
    task = get_task(args.task)
    if ds is None:
        rows = task.load(options)
    else:
        ds = ds.select(range(min(len(ds), args.limit or len(ds))))
        rows = task.rows_from(map_columns(ds, args.prompt_column, args.answer_column))
    if args.learnability_sampling and args.learnability_offline_column:
        rows = with_source_column(rows, args, ds)
    if args.subset is not None:
        if args.subset > len(rows):
            raise BadInputError(f"subset={args.subset} is larger than the {len(rows)} rows available")
        rows = rows.shuffle(seed=args.subset_seed).select(range(args.subset))
    prompts = task_prompts(args.task, rows, tokenizer, options)
    if "prompt" in rows.column_names:
        rows = rows.rename_column("prompt", "code_prompt")
    return rows.add_column("prompt", prompts)


def with_source_column(rows: datasets.Dataset, args: GRPOScriptArguments,
                       ds: datasets.Dataset | None) -> datasets.Dataset:
    """``rows`` with the source's ``learnability_offline_column`` (a task keeps only its own columns)."""
    from curate.llm.data import load_data

    column = args.learnability_offline_column
    source = ds if ds is not None else load_data(args.dataset, split=args.dataset_split, limit=args.limit) \
        if args.dataset else None
    if source is None or column not in source.column_names or len(source) != len(rows):
        have = ", ".join(source.column_names) if source is not None else "none (the task's own data)"
        raise BadInputError(f"learnability_offline_column '{column}': no such column in the dataset; available: {have}")
    rows = rows.remove_columns([column]) if column in rows.column_names else rows
    return rows.add_column(column, list(source[column]))


def format_reward(prompts: Sequence[Any], completions: Sequence[Any], **_: Any) -> list[float]:
    """1.0 when the answer can be read strictly ("#### N" or "The answer is N")."""
    from eval.gsm8k_answers import extract_answer
    from eval.rewards import completion_text

    return [float(extract_answer(completion_text(c), "strict") is not None) for c in completions]


def reward_functions(args: GRPOScriptArguments) -> list[Callable[..., list[float]]]:
    from eval.rewards import CodePassReward, TaskReward

    from eval.tasks import TaskOptions

    options = TaskOptions(answer_mode=args.answer_mode)
    makers = {"correct": lambda: TaskReward(args.task, options), "format": lambda: format_reward,
              "code_pass": lambda: CodePassReward()}
    return [makers[name]() for name in args.reward_names()]


def freeze_parameters(model: Any, pattern: str) -> int:
    """Stop training the parameters whose names match ``pattern``; returns how many; none is an error."""
    import re

    try:
        regex = re.compile(pattern)
    except re.error as err:
        raise BadInputError(f"freeze: '{pattern}' is not a regular expression ({err})") from err
    frozen = [p for name, p in model.named_parameters() if regex.search(name)]
    if not frozen or len(frozen) == len(list(model.parameters())):
        raise BadInputError(f"freeze: '{pattern}' matches {'no' if not frozen else 'every'} parameter of the model")
    for p in frozen:
        p.requires_grad_(False)
    return len(frozen)


def train(script_args: GRPOScriptArguments, training_args, model_args, dataset: datasets.Dataset | None = None):
    """Build the trainer, train, save to ``training_args.output_dir``; returns the trainer.
    ``dataset`` (rows with the task's columns) replaces ``script_args.dataset``."""
    from trl import get_peft_config

    from curate.llm.models import load_tokenizer, training_model
    from rl.online import grpo_trainer_class

    if not model_args.model_name_or_path:
        raise BadInputError("model_name_or_path is required")
    tokenizer = load_tokenizer(model_args.model_name_or_path, padding_side="left")
    ds = build_dataset(script_args, tokenizer, dataset)
    eval_rows = build_eval_dataset(script_args, training_args, tokenizer) if script_args.eval_dataset else None
    model = training_model(model_args)
    if script_args.freeze:
        frozen = freeze_parameters(model, script_args.freeze)
        print(f"rl.grpo: froze {frozen} parameter tensors matching '{script_args.freeze}'")
    kwargs = dict(model=model, reward_funcs=reward_functions(script_args), args=training_args, train_dataset=ds,
                  processing_class=tokenizer, peft_config=get_peft_config(model_args))
    if eval_rows is not None:
        kwargs["eval_dataset"] = eval_rows
    estimator = None
    if script_args.learnability_sampling:
        estimator, ds = learnability_setup(script_args, training_args, kwargs, ds)
    trainer = grpo_trainer_class(script_args.learnability_sampling, script_args.dynamic_sampling)(**kwargs)
    if estimator is not None:
        trainer.estimator, trainer.histograms = estimator, []
    if script_args.dynamic_sampling:
        from rl.dynamic import prepare

        prepare(trainer, script_args.dynamic_config(training_args.seed))
    if script_args.ref_model and training_args.beta:
        # TRL takes π_ref from the starting policy; a staged run keeps its original model instead.
        ref = training_model(model_args, script_args.ref_model)
        from trl.trainer.utils import add_fused_lm_head  # TRL's own patch of its reference models

        add_fused_lm_head(ref, temperature=trainer.temperature, cast_lm_head_to_fp32=training_args.cast_lm_head_to_fp32)
        trainer.ref_model = trainer.accelerator.prepare_model(ref.eval(), evaluation_mode=True)
    trainer.train()
    if script_args.merge_lora and model_args.use_peft:
        trainer.accelerator.wait_for_everyone()
        if trainer.accelerator.is_main_process:
            merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
            merged.save_pretrained(training_args.output_dir)
    else:
        trainer.save_model(training_args.output_dir)
    if trainer.accelerator.is_main_process:
        from curate.core.io import atomic_write_json

        from curate.llm.data import write_provenance

        tokenizer.save_pretrained(training_args.output_dir)
        write_provenance(training_args.output_dir, script_args.dataset)  # the selection it came from
        # The per-step logs (reward, frac_reward_zero_std, loss, ..., completions generated) beside the model.
        atomic_write_json(Path(training_args.output_dir) / "training_log.json", with_generations(trainer))
    if estimator is not None:
        write_learnability(trainer, estimator, Path(training_args.output_dir))
    if script_args.dynamic_sampling:
        write_rank_json(trainer, Path(training_args.output_dir), "dynamic_sampling",
                        {"config": vars(trainer.dynamic), "generated": trainer.dynamic_generated,
                         "generations": trainer.dynamic_records})
    return trainer


def with_generations(trainer: Any) -> list[dict[str, Any]]:
    """The trainer's log lines, each with ``generations``: the completions (all ranks) generated for
    the steps up to its own (dynamic sampling's own count; else TRL's schedule, one generation batch
    every ``steps_per_generation x num_iterations`` micro-steps)."""
    import math

    args = trainer.args
    records = getattr(trainer, "dynamic_records", None)

    def generations(step: int) -> int:
        if records is not None:
            done = [r["generated_total"] for r in records if r["step"] < step]
            return done[-1] if done else 0
        every = args.steps_per_generation * trainer.num_iterations
        return math.ceil(step * args.gradient_accumulation_steps / every) * args.generation_batch_size

    return [{**entry, "generations": generations(int(entry["step"]))} if "step" in entry else entry
            for entry in trainer.state.log_history]


def build_eval_dataset(args: GRPOScriptArguments, training_args: Any, tokenizer: Any) -> datasets.Dataset:
    """``eval_dataset``'s rows with the task's prompts (as the training rows), for TRL's evaluation."""
    from dataclasses import replace

    rows = build_dataset(replace(args, dataset=args.eval_dataset, dataset_split="train", limit=args.eval_limit,
                                 subset=None, learnability_sampling=False), tokenizer)
    if args.learnability_sampling:  # marked, so that the observed reward leaves them out of the estimates
        from rl.online import EVAL_INDEX, INDEX_COLUMN

        rows = rows.add_column(INDEX_COLUMN, [EVAL_INDEX] * len(rows))
    return rows


def learnability_setup(args: GRPOScriptArguments, training_args: Any, kwargs: dict[str, Any],
                       ds: datasets.Dataset) -> tuple[Any, datasets.Dataset]:
    """Learnability sampling: rows numbered (``row_index``), the correctness reward observed by the
    returned estimator (:mod:`rl.online`)."""
    from rl.online import INDEX_COLUMN, attach

    if args.reward_names()[0] != "correct":
        raise BadInputError("learnability sampling estimates success rates: put 'correct' first in rewards")
    offline = None
    if args.learnability_offline_column:
        if args.learnability_offline_column not in ds.column_names:
            raise BadInputError(f"learnability_offline_column '{args.learnability_offline_column}': no such column; "
                                f"available: {', '.join(ds.column_names)}")
        offline = [float(x) for x in ds[args.learnability_offline_column]]
    ds = ds.remove_columns([INDEX_COLUMN]) if INDEX_COLUMN in ds.column_names else ds
    ds = ds.add_column(INDEX_COLUMN, list(range(len(ds))))
    kwargs["train_dataset"] = ds
    estimator = attach(kwargs, len(ds), args.learnability_config(), training_args.num_generations, offline)
    return estimator, ds


def write_learnability(trainer: Any, estimator: Any, out: Path) -> None:
    """``learnability.json`` (first rank; every rank's own copy under ``learnability-rank{r}.json``
    when several run, so their agreement can be checked): final estimates, groups seen per prompt,
    the histogram at every log step."""
    record = {"estimates": estimator.estimates().tolist(), "groups": estimator.groups.tolist(),
              "histograms": trainer.histograms, "config": vars(estimator.config)}
    write_rank_json(trainer, out, "learnability", record)


def write_rank_json(trainer: Any, out: Path, name: str, record: dict[str, Any]) -> None:
    """``NAME.json`` by the first rank; when several run, every rank's own ``NAME-rank{r}.json``
    too, so that their agreement can be checked."""
    from curate.core.io import atomic_write_json

    if trainer.accelerator.num_processes > 1:
        atomic_write_json(out / f"{name}-rank{trainer.accelerator.process_index}.json", record)
    if trainer.accelerator.is_main_process:
        atomic_write_json(out / f"{name}.json", record)


def make_parser():
    """TRL's parser of (GRPOScriptArguments, GRPOConfig, ModelConfig), the fields of a run."""
    from trl import GRPOConfig, ModelConfig, TrlParser

    return TrlParser((GRPOScriptArguments, GRPOConfig, ModelConfig))


def parse(argv: list[str] | None = None):
    from curate.llm.recipes import parse_recipe

    return check_run(*parse_recipe(make_parser(), sys.argv[1:] if argv is None else argv))


def check_run(script_args: GRPOScriptArguments, training_args: Any, model_args: Any) -> tuple:
    """The checks that need more than one config object (before any work); returns them."""
    if script_args.eval_dataset and getattr(training_args.eval_strategy, "value", training_args.eval_strategy) == "no":
        raise BadInputError("eval_dataset needs eval_strategy 'steps' (with eval_steps) or 'epoch'")
    if script_args.dynamic_sampling:
        if training_args.multi_objective_aggregation != "sum_then_normalize":
            raise BadInputError("dynamic_sampling needs multi_objective_aggregation 'sum_then_normalize' (with "
                                "'normalize_then_sum' equal rewards do not give zero advantages)")
        budget, batch = script_args.generation_budget, training_args.generation_batch_size
        if budget is not None and budget < batch:
            raise BadInputError(f"generation_budget {budget} is smaller than one generation batch ({batch} completions)")
    return script_args, training_args, model_args


def main(argv: list[str] | None = None) -> int:
    from curate.llm.recipes import script_main

    return script_main("rl.grpo", parse, train, argv)


if __name__ == "__main__":
    sys.exit(main())

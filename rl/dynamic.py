"""Dynamic sampling inside TRL's GRPO (``dynamic_sampling: true`` in an ``rl.grpo`` recipe; DAPO, Yu et
al. 2025, section 3.2).

A group whose rewards are all equal has advantages 0 and gives GRPO's policy-gradient term no
gradient. :class:`DynamicSamplingMixin` (a ``GRPOTrainer`` subclass's first base) replaces each
training generation by rounds:

1. TRL generates and scores a generation batch as usual (its own ``_generate_and_score_completions``,
   so HF and vLLM generation, rewards, reference log-probabilities are TRL's);
2. every rank's output is gathered, so every rank sees the whole batch and takes the same decision;
   a group is *informative* when one of its advantages is not 0 (rewards with variance);
3. informative groups are kept; while fewer than the batch's groups are kept and rounds remain
   (``dynamic_sampling_max_rounds``, and the ``generation_budget`` if one is set), a new generation
   batch of prompts is drawn (seeded by the run's seed, the step and the round, the same on every
   rank; from the online learnability estimates when ``learnability_sampling`` is on, else
   uniformly) and generated;
4. the batch is the first kept groups; when the rounds ran out first, it is completed with
   zero-variance groups (their rows carry no policy gradient) and the step counts as a *cap hit*.

The merged batch is padded again (prompts on the left, completions on the right) and each rank
keeps its own slice, so TRL's loss runs on it unchanged; ``num_items_in_batch`` is recounted.
Metrics (``dynamic_sampling/...``): the share of zero-variance groups among those generated (before
the filter) and in the training batch (after), rounds per generation, cap hits, completions
generated so far; every generation's record goes to ``dynamic_sampling.json``.

Not supported: ``multi_objective_aggregation: normalize_then_sum`` (its advantages are not centred
per group, so equal rewards do not mean zero advantages; refused with the recipe) and image inputs
(refused at the first generation). The one TRL method overridden is the private
``_generate_and_score_completions`` (TRL has no public hook between scoring and the loss); its
inputs and output fields are used as they are, and no private attribute is read.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from curate.core.errors import BadInputError

ROW_FIELDS = ("advantages",)
LEFT_PADDED = {"prompt_ids": None, "prompt_mask": 0}  # None: the tokenizer's pad token
RIGHT_PADDED = {"completion_ids": None, "completion_mask": 0, "old_per_token_logps": 0.0,
                "ref_per_token_logps": 0.0, "sampling_per_token_logps": 0.0, "tool_mask": 1}
RECOUNTED = ("num_items_in_batch",)
KNOWN = {*ROW_FIELDS, *LEFT_PADDED, *RIGHT_PADDED, *RECOUNTED, "importance_sampling_ratio"}


def check_fields(out: dict[str, Any]) -> None:
    """Refuse a TRL output this module cannot merge (images, another TRL version's fields)."""
    unknown = sorted(set(out) - KNOWN)
    if unknown:
        raise BadInputError(f"dynamic_sampling: TRL's batch has fields it cannot merge: {', '.join(unknown)} "
                            f"(text-only GRPO is supported)")


@dataclass(frozen=True)
class DynamicSamplingConfig:
    max_rounds: int = 4  # generation rounds per training generation, the first included
    atol: float = 1e-6  # a group is informative when some |advantage| exceeds this
    generation_budget: int | None = None  # completions (all ranks) after which training stops
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_rounds < 1:
            raise BadInputError(f"dynamic_sampling_max_rounds must be at least 1, got {self.max_rounds}")
        if self.generation_budget is not None and self.generation_budget < 1:
            raise BadInputError(f"generation_budget must be a positive number of completions, got "
                                f"{self.generation_budget}")


def informative(advantages: Any, group_size: int, atol: float) -> Any:
    """For the flat advantages of consecutive groups of ``group_size``: True per group with a
    non-zero advantage."""
    return advantages.view(-1, group_size).abs().amax(dim=1) > atol


def refill_prompts(size: int, prompts: int, rng: np.random.Generator, probabilities: np.ndarray | None = None
                   ) -> np.ndarray:
    """``prompts`` dataset indices for one more generation batch: in proportion to ``probabilities``
    (with replacement), else uniformly without replacement (with it when the set is smaller)."""
    if probabilities is not None:
        return rng.choice(size, size=prompts, replace=True, p=probabilities)
    return rng.choice(size, size=prompts, replace=prompts > size)


def pad_to(tensor: Any, length: int, value: float, left: bool) -> Any:
    import torch.nn.functional as F

    extra = length - tensor.size(1)
    return tensor if extra == 0 else F.pad(tensor, (extra, 0) if left else (0, extra), value=value)


def padded_length(length: int, multiple: int | None) -> int:
    return length if not multiple else -(-length // multiple) * multiple


def merge_rows(pieces: Sequence[tuple[dict[str, Any], Any]], pad_token_id: int, multiple: int | None,
               sequence_ratio: bool) -> dict[str, Any]:
    """The rows ``index`` (a LongTensor) of each gathered output, concatenated; 2-D fields padded
    to their longest piece again, prompts on the left, completions on the right."""
    import torch

    merged: dict[str, Any] = {}
    for key in pieces[0][0]:
        if key in RECOUNTED:
            continue
        parts = [out[key][index] for out, index in pieces]
        if key in ROW_FIELDS or (key == "importance_sampling_ratio" and sequence_ratio):
            merged[key] = torch.cat(parts)
            continue
        left = key in LEFT_PADDED
        value = (LEFT_PADDED if left else RIGHT_PADDED).get(key, 0.0 if key == "importance_sampling_ratio" else None)
        value = pad_token_id if value is None else value
        length = padded_length(max(p.size(1) for p in parts), multiple)
        merged[key] = torch.cat([pad_to(p, length, value, left) for p in parts])
    return merged


class DynamicSamplingMixin:
    """The first base of a ``GRPOTrainer`` subclass (:func:`rl.online.grpo_trainer_class`); set
    ``dynamic`` (a :class:`DynamicSamplingConfig`) on the trainer before training."""

    dynamic: DynamicSamplingConfig

    # -- TRL's generation step, in rounds ------------------------------------------------------
    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        g, rank = self.num_generations, self.accelerator.process_index
        local = len(inputs)
        rows = local * self.accelerator.num_processes
        needed = rows // g
        kept: list[tuple[dict[str, Any], Any]] = []
        fill: list[tuple[dict[str, Any], Any]] = []
        n_kept = n_fill = rounds = generated_groups = zero_groups = 0
        batch = inputs
        while True:
            rounds += 1
            out = super()._generate_and_score_completions(batch)
            check_fields(out)
            out = self.gathered(out)
            good = informative(out["advantages"], g, self.dynamic.atol).cpu()
            generated_groups += len(good)
            zero_groups += int((~good).sum())
            n_kept = self.take(out, good, needed - n_kept, kept, n_kept, g)
            n_fill = self.take(out, ~good, needed - n_fill, fill, n_fill, g)
            if n_kept >= needed or rounds >= self.rounds_allowed(rows):
                break
            batch = self.refill_rows(needed, g, rounds, rank, local)
        self.dynamic_generated += rounds * rows
        cap_hit = n_kept < needed
        pieces = kept + self.first_groups(fill, needed - n_kept, g) if cap_hit else kept
        merged = merge_rows(pieces, self.pad_token_id(), getattr(self.args, "pad_to_multiple_of", None),
                            str(getattr(self.args, "vllm_importance_sampling_mode", "")).startswith("sequence"))
        mask = merged["completion_mask"] * merged["tool_mask"] if "tool_mask" in merged else merged["completion_mask"]
        record = {"step": self.state.global_step, "rounds": rounds, "groups": generated_groups,
                  "zero_std_groups": zero_groups, "batch_groups": needed, "zero_std_in_batch": needed - min(n_kept, needed),
                  "cap_hit": cap_hit, "generations": rounds * rows, "generated_total": self.dynamic_generated}
        self.dynamic_records.append(record)
        self.dynamic_pending.append(record)
        mine = slice(rank * local, (rank + 1) * local)
        output = {key: value[mine] for key, value in merged.items()}
        output["num_items_in_batch"] = mask.sum()
        return output

    @staticmethod
    def take(out: dict[str, Any], chosen: Any, room: int, into: list, count: int, g: int) -> int:
        """Append the first ``room`` ``chosen`` groups of ``out`` (their rows) to ``into``."""
        import torch

        groups = torch.nonzero(chosen).flatten()[:max(room, 0)]
        if len(groups):
            rows = (groups.unsqueeze(1) * g + torch.arange(g)).flatten()
            into.append((out, rows.to(out["advantages"].device)))
        return count + len(groups)

    @staticmethod
    def first_groups(pieces: list[tuple[dict[str, Any], Any]], groups: int, g: int) -> list:
        """The first ``groups`` groups' rows of ``pieces``."""
        chosen, left = [], groups * g
        for out, rows in pieces:
            if left <= 0:
                break
            chosen.append((out, rows[:left]))
            left -= len(rows[:left])
        return chosen

    def rounds_allowed(self, rows: int) -> int:
        """The cap on rounds: ``max_rounds``, and no round past the generation budget."""
        if self.dynamic.generation_budget is None:
            return self.dynamic.max_rounds
        left = (self.dynamic.generation_budget - self.dynamic_generated) // rows
        return max(1, min(self.dynamic.max_rounds, left))

    def refill_rows(self, prompts: int, g: int, round_: int, rank: int, local: int) -> list[dict[str, Any]]:
        """This rank's rows of a fresh generation batch, drawn alike on every rank."""
        step = self.state.global_step
        self.dynamic_calls[step] = self.dynamic_calls.get(step, 0) + (round_ == 1)
        rng = np.random.default_rng([self.dynamic.seed, step, self.dynamic_calls[step], round_])
        estimator = getattr(self, "estimator", None)
        drawn = refill_prompts(len(self.train_dataset), prompts, rng,
                               None if estimator is None else estimator.probabilities())
        layout = np.repeat(drawn, g)[rank * local:(rank + 1) * local]
        return [self.train_dataset[int(i)] for i in layout]

    def gathered(self, out: dict[str, Any]) -> dict[str, Any]:
        """Every rank's rows of ``out`` (in rank order, the generation batch's order) on every rank."""
        acc = self.accelerator
        if acc.num_processes == 1:
            return out
        full = {}
        for key, value in out.items():
            if key in RECOUNTED:
                continue
            if value.dim() == 2 and (key in LEFT_PADDED or key in RIGHT_PADDED):
                pad = (LEFT_PADDED | RIGHT_PADDED)[key]
                value = acc.pad_across_processes(value, dim=1, pad_index=self.pad_token_id() if pad is None else pad,
                                                 pad_first=key in LEFT_PADDED)
            elif value.dim() == 2 and value.size(1) > 1:  # token-level importance ratios
                value = acc.pad_across_processes(value, dim=1, pad_index=0)
            full[key] = acc.gather(value)
        return full

    def pad_token_id(self) -> int:
        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
        return tokenizer.pad_token_id

    # -- the logs ----------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if ("loss" in logs or "reward" in logs) and self.dynamic_pending:
            pending, self.dynamic_pending = self.dynamic_pending, []
            logs["dynamic_sampling/zero_std_before"] = sum(r["zero_std_groups"] for r in pending) / max(
                1, sum(r["groups"] for r in pending))
            logs["dynamic_sampling/zero_std_after"] = sum(r["zero_std_in_batch"] for r in pending) / max(
                1, sum(r["batch_groups"] for r in pending))
            logs["dynamic_sampling/rounds"] = float(np.mean([r["rounds"] for r in pending]))
            logs["dynamic_sampling/cap_hits"] = float(sum(r["cap_hit"] for r in pending))
            logs["dynamic_sampling/generations"] = float(self.dynamic_generated)
        super().log(logs, start_time)


def budget_callback(trainer: Any) -> Any:
    """A ``TrainerCallback`` that ends training at the first step after which less than one
    generation batch of ``trainer.dynamic.generation_budget`` is left."""
    from transformers import TrainerCallback

    class GenerationBudget(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> Any:
            left = trainer.dynamic.generation_budget - trainer.dynamic_generated
            if left < args.generation_batch_size:
                control.should_training_stop = True
            return control

    return GenerationBudget()


def prepare(trainer: Any, config: DynamicSamplingConfig) -> None:
    """Set a built dynamic-sampling trainer's config and counters (and the budget's callback)."""
    trainer.dynamic = config
    trainer.dynamic_records, trainer.dynamic_pending, trainer.dynamic_calls = [], [], {}
    trainer.dynamic_generated = 0
    if config.generation_budget is not None:  # at least one generation batch (rl.grpo.check_run)
        trainer.add_callback(budget_callback(trainer))

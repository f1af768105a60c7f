"""Learnability sampling inside TRL's GRPO (``learnability_sampling: true`` in an ``rl.grpo`` recipe).

- :class:`ObservedReward` wraps the run's correctness reward: after each scoring it gathers every
  rank's rewards with their ``row_index`` (in rank order, which is the generation batch's order, so
  each run of ``num_generations`` is one group) and updates one :class:`~rl.sampling.OnlineLearnability`,
  the same on every rank.
- :class:`LearnabilitySamplingMixin`, in front of TRL's ``GRPOTrainer``, replaces its train sampler
  (the trainer method HF documents for overriding) by :class:`~rl.sampling.LearnabilitySampler` in
  TRL's own index layout, so every rank, seeded alike and fed the same groups, draws the same
  prompts; its ``log`` adds the estimates' mean, the share of prompts with 0.1 < p < 0.9 and their
  histogram (``learnability/...``), and ``learnability.json`` beside the model keeps the histogram at
  every log step.

The estimates steer the draws one generation batch late: the dataloader fetches the next batch
before the current one is scored. Dynamic sampling (dropping zero-variance groups and refilling) is
:mod:`rl.dynamic`; :func:`grpo_trainer_class` puts either or both in front of TRL's trainer.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from curate.core.errors import BadInputError
from rl.sampling import LearnabilityConfig, LearnabilitySampler, OnlineLearnability

INDEX_COLUMN = "row_index"
EVAL_INDEX = -1  # the row_index of an eval_dataset row


def gather_in_rank_order(items: list[Any]) -> list[Any]:
    """Every rank's ``items`` concatenated in rank order (``items`` itself in one process)."""
    from curate.llm.shards import gather, process_shard

    return [item for part in gather(list(items), process_shard()[1]) for item in part]


class ObservedReward:
    """``reward`` (a TRL reward function with values in [0, 1]) that also feeds ``estimator`` with
    each group's rewards."""

    def __init__(self, reward: Callable[..., list[float]], estimator: OnlineLearnability, num_generations: int) -> None:
        self.reward, self.estimator, self.num_generations = reward, estimator, num_generations
        self.__name__ = getattr(reward, "__name__", "reward")  # TRL logs rewards by function name
        self.groups_seen = 0

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float]:
        scores = self.reward(prompts, completions, **columns)
        if INDEX_COLUMN not in columns:
            raise BadInputError(f"learnability sampling needs the dataset's '{INDEX_COLUMN}' column")
        if all(int(i) == EVAL_INDEX for i in columns[INDEX_COLUMN]):
            return scores  # the held-out rows of TRL's evaluation (every rank's alike): not training groups
        pairs = gather_in_rank_order(list(zip(columns[INDEX_COLUMN], scores)))
        g = self.num_generations
        for start in range(0, len(pairs) - g + 1, g):
            group = pairs[start:start + g]
            index = group[0][0]
            if any(i != index for i, _ in group):
                raise RuntimeError(f"rollouts {start}..{start + g - 1} are not one prompt's group: {[i for i, _ in group]}")
            self.estimator.update(int(index), [min(1.0, max(0.0, float(s))) for _, s in group])
            self.groups_seen += 1
        return scores


class LearnabilitySamplingMixin:
    """The learnability sampler and its log lines, as a base of a ``GRPOTrainer`` subclass
    (:func:`grpo_trainer_class`); set ``estimator`` and ``histograms`` on the trainer."""

    estimator: OnlineLearnability

    def _get_train_sampler(self, dataset: Any = None) -> LearnabilitySampler:
        dataset = self.train_dataset if dataset is None else dataset
        batch = self.args.generation_batch_size // self.num_generations
        if batch > len(dataset):
            raise BadInputError(f"a generation batch of {batch} prompts is larger than the {len(dataset)} rows")
        return LearnabilitySampler(self.estimator, mini_repeat_count=self.num_generations, batch_size=batch,
                                   repeat_count=self.num_iterations * self.args.steps_per_generation,
                                   num_batches=max(1, len(dataset) // batch), seed=self.args.seed)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs or "reward" in logs:  # a training log line
            p = self.estimator.estimates()
            logs["learnability/mean_p"] = float(p.mean())
            logs["learnability/learnable_share"] = float(((p > 0.1) & (p < 0.9)).mean())
            self.histograms.append({"step": self.state.global_step, "counts": self.estimator.histogram()})
        super().log(logs, start_time)


def grpo_trainer_class(learnability: bool = False, dynamic: bool = False):
    """TRL's ``GRPOTrainer``, with learnability sampling and/or dynamic sampling (:mod:`rl.dynamic`)
    as bases in front (built on first use: TRL loads only then)."""
    from trl import GRPOTrainer

    from rl.dynamic import DynamicSamplingMixin

    bases = (DynamicSamplingMixin,) * dynamic + (LearnabilitySamplingMixin,) * learnability
    return type("CurateGRPOTrainer", (*bases, GRPOTrainer), {}) if bases else GRPOTrainer


def attach(trainer_kwargs: dict[str, Any], size: int, config: LearnabilityConfig, num_generations: int,
           offline_success_rate: Sequence[float] | None = None) -> OnlineLearnability:
    """The estimator for a run over ``size`` rows: the first reward function (the correctness
    reward) is wrapped to feed it."""
    estimator = OnlineLearnability(size, config, offline_success_rate)
    rewards = list(trainer_kwargs["reward_funcs"])
    rewards[0] = ObservedReward(rewards[0], estimator, num_generations)
    trainer_kwargs["reward_funcs"] = rewards
    return estimator

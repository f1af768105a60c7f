"""Online learnability for GRPO: the estimator and the prompt sampler.

GRPO learns nothing from a group whose rewards are all equal (its advantages are 0), and which
prompts give mixed groups moves as the policy trains. :class:`OnlineLearnability` keeps, for every
prompt of the training set, a Beta posterior of its success rate from the groups seen so far
(prior ``Beta(a, b)`` for unseen prompts; optionally seeded with LearnAlign's offline success rate
as ``offline_weight`` pseudo-rollouts; past groups discounted by ``decay`` per new group of that
prompt, since the policy that produced them has moved). :class:`LearnabilitySampler` draws prompts
in proportion to the learnability ``p(1 - p)`` of the current estimates, with a floor so that no
prompt is starved, in the index layout of TRL's ``RepeatSampler`` (each drawn prompt repeated
``mini_repeat_count`` times in a row, a batch of ``batch_size`` draws, the batch repeated
``repeat_count`` times), reading the estimates again for every batch, so groups scored between
batches steer the next draws.

The wiring into TRL's ``GRPOTrainer`` is :mod:`rl.online`; dynamic sampling's refill is
:mod:`rl.dynamic`.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from curate.core.errors import BadInputError

MAX_LEARNABILITY = 0.25  # p(1 - p) at p = 1/2


@dataclass(frozen=True)
class LearnabilityConfig:
    prior_successes: float = 1.0  # a: Beta(a, b) for a prompt not seen yet (1, 1: uniform, p = 1/2)
    prior_failures: float = 1.0  # b
    floor: float = 0.05  # every prompt's weight is at least floor x 0.25 (the largest p(1 - p))
    decay: float = 1.0  # past observations of a prompt are multiplied by this at each new group (1: keep all)
    offline_weight: float = 4.0  # pseudo-rollouts an offline success rate counts for
    seed: int = 0

    def __post_init__(self) -> None:
        if self.prior_successes <= 0 or self.prior_failures <= 0:
            raise BadInputError(f"prior_successes and prior_failures must be positive, got "
                                f"{self.prior_successes}, {self.prior_failures}")
        if not 0 < self.floor <= 1:
            raise BadInputError(f"floor must be in (0, 1], got {self.floor}")
        if not 0 < self.decay <= 1:
            raise BadInputError(f"decay must be in (0, 1], got {self.decay}")
        if self.offline_weight < 0:
            raise BadInputError(f"offline_weight must be >= 0, got {self.offline_weight}")


class OnlineLearnability:
    """Success-rate posteriors of ``size`` prompts, updated group by group."""

    def __init__(self, size: int, config: LearnabilityConfig | None = None,
                 offline_success_rate: Sequence[float] | None = None) -> None:
        if size < 1:
            raise BadInputError(f"the training set is empty (size {size})")
        self.config = config or LearnabilityConfig()
        self.successes = np.zeros(size)  # discounted sums of rewards
        self.trials = np.zeros(size)  # discounted counts of rollouts
        self.groups = np.zeros(size, dtype=np.int64)  # groups seen per prompt (undiscounted)
        if offline_success_rate is not None:
            rates = np.asarray(offline_success_rate, dtype=np.float64)
            if rates.shape != (size,) or np.any((rates < 0) | (rates > 1)) or np.any(np.isnan(rates)):
                raise BadInputError(f"offline success rates: expected {size} values in [0, 1]")
            self.successes += self.config.offline_weight * rates
            self.trials += self.config.offline_weight

    def __len__(self) -> int:
        return len(self.trials)

    def update(self, index: int, rewards: Sequence[float]) -> None:
        """One group of prompt ``index``: its rollouts' rewards in [0, 1] (a verifier's 0/1, or a share)."""
        r = np.asarray(rewards, dtype=np.float64)
        if r.size == 0 or np.any((r < 0) | (r > 1)):
            raise BadInputError(f"prompt {index}: a group's rewards must be values in [0, 1], got {list(r)}")
        self.successes[index] = self.config.decay * self.successes[index] + r.sum()
        self.trials[index] = self.config.decay * self.trials[index] + r.size
        self.groups[index] += 1

    def estimates(self) -> np.ndarray:
        """The posterior mean of every prompt's success rate."""
        a, b = self.config.prior_successes, self.config.prior_failures
        return (a + self.successes) / (a + b + self.trials)

    def weights(self) -> np.ndarray:
        """``max(p(1 - p), floor x 0.25)`` of the current estimates."""
        p = self.estimates()
        return np.maximum(p * (1 - p), self.config.floor * MAX_LEARNABILITY)

    def probabilities(self) -> np.ndarray:
        w = self.weights()
        return w / w.sum()

    def histogram(self, bins: int = 10) -> list[int]:
        """Prompts per bin of the estimated success rate, [0, 0.1), ..., [0.9, 1]: for the logs."""
        counts, _ = np.histogram(self.estimates(), bins=bins, range=(0.0, 1.0))
        return counts.tolist()


class LearnabilitySampler:
    """Prompt indices drawn (with replacement) in proportion to :meth:`OnlineLearnability.probabilities`,
    in TRL's ``RepeatSampler`` layout; ``num_batches`` batches, each drawn from the estimates of the
    moment it starts. Seeded: every rank built with the same seed and fed the same groups draws the
    same indices."""

    def __init__(self, estimator: OnlineLearnability, mini_repeat_count: int, batch_size: int, repeat_count: int = 1,
                 num_batches: int = 1, seed: int | None = None) -> None:
        for name, value in (("mini_repeat_count", mini_repeat_count), ("batch_size", batch_size),
                            ("repeat_count", repeat_count), ("num_batches", num_batches)):
            if value < 1:
                raise BadInputError(f"{name} must be at least 1, got {value}")
        self.estimator = estimator
        self.mini_repeat_count, self.batch_size, self.repeat_count = mini_repeat_count, batch_size, repeat_count
        self.num_batches = num_batches
        self.seed = estimator.config.seed if seed is None else seed

    def __len__(self) -> int:
        return self.num_batches * self.batch_size * self.mini_repeat_count * self.repeat_count

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """One batch of prompt indices from the current estimates."""
        return rng.choice(len(self.estimator), size=self.batch_size, replace=True, p=self.estimator.probabilities())

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng(self.seed)
        for _ in range(self.num_batches):
            batch = self.draw(rng)  # read when the batch starts: groups scored since then steer it
            for _ in range(self.repeat_count):
                for index in batch:
                    for _ in range(self.mini_repeat_count):
                        yield int(index)

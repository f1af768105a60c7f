"""The active-learning family's base: what a query strategy sees each round, and how it trains.

A strategy (:class:`Strategy`, the registered class) does two things per round: train the target
model on the labelled known-class images (:meth:`Strategy.train`; K-way cross-entropy by default)
and pick ``budget`` distinct unlabelled images to send to the oracle (:meth:`Strategy.query`).
It sees a :class:`RoundState`: the pool's images, which of them are labelled (with their labels),
which were queried and turned out unknown, and the query precision of earlier rounds; never the
pool's hidden classes nor the test set (a strategy cannot select on what it is scored on).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from vision.data import ImageData
from vision.train import Method, TrainConfig, Trained, train


@dataclass
class RoundState:
    round: int  # 0-based query round
    images: torch.Tensor  # (N, C, H, W): the whole pool
    num_known: int  # K: labels are 0..K-1
    labeled: np.ndarray  # pool indices of labelled known-class images
    labels: np.ndarray  # their labels
    unknown: np.ndarray  # pool indices queried and found to be of an unknown class
    unlabeled: np.ndarray  # pool indices never queried: the candidates
    precision: list[float]  # the query precision of each earlier round (share of known-class queries)
    train: TrainConfig  # the experiment's training settings, with this round's seed
    seed: int  # this round's seed: every random draw of the strategy derives from it

    def generator(self, offset: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1000 + offset)


def train_classifier(method: Method, state: RoundState, indices: np.ndarray, labels: np.ndarray,
                     num_classes: int, config: TrainConfig | None = None) -> Trained:
    """Train ``method``'s network on the pool images ``indices`` with ``labels`` (``num_classes``
    outputs), with the round's settings and seed; no per-epoch checkpoints (rounds are the unit
    of resumption) and the training images stand in for the per-epoch test set."""
    config = replace(config or state.train, checkpoint_dir=None, progress=False)
    x = state.images[torch.as_tensor(indices, dtype=torch.long)]
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    data = ImageData(x, y, x, y, num_classes, "labelled-pool")
    return train(method, data, y, config)


@torch.no_grad()
def probabilities(trained: Trained, images: torch.Tensor) -> torch.Tensor:
    """Softmax of the trained method's test-time logits, on the CPU."""
    return torch.softmax(trained.predict(images).float().cpu(), dim=1)


def top(scores: np.ndarray | torch.Tensor, candidates: np.ndarray, budget: int, seed: int) -> np.ndarray:
    """The ``budget`` candidates with the highest scores (``scores[i]`` belongs to ``candidates[i]``);
    ties are broken by a seeded random order, not by index."""
    scores = np.asarray(scores, dtype=np.float64)
    tie = np.random.default_rng([seed, 5]).random(len(scores))
    order = np.lexsort((tie, -scores))
    return np.asarray(candidates)[order[:budget]]


class Strategy:
    """Random queries from the unlabelled pool; the target model is K-way cross-entropy."""

    name = "random_query"
    config_class: type | None = None

    def identity(self) -> str:
        return repr(getattr(self, "config", None))

    def train(self, state: RoundState) -> Trained:
        """The target model of this round, on the labelled known-class images."""
        return train_classifier(Method(), state, state.labeled, state.labels, state.num_known)

    def query(self, state: RoundState, target: Trained, budget: int) -> np.ndarray:
        """``budget`` distinct pool indices out of ``state.unlabeled``."""
        order = torch.randperm(len(state.unlabeled), generator=state.generator(1)).numpy()
        return state.unlabeled[order[:budget]]

    def round_metrics(self) -> dict[str, Any]:
        """What the strategy reports about its last query (candidate-set sizes, ...); JSON-ready."""
        return {}

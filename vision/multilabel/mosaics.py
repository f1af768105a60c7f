"""Digit mosaics: 2x2 tiles of scikit-learn digits (8x8 each) make a 16x16 image whose target is
the multi-hot set of its digits (q = 10). Labels are correlated through topics: a mosaic draws a
topic t (one of 5), and each tile comes with probability ``topic_prob`` from the topic's digits
{2t, 2t+1, 2t+2 mod 10}, else from all ten (the paper's identifiability needs
P(Y_i|Y_j=0) != P(Y_i|Y_j=1)). Train mosaics use the train digits, test mosaics the test digits.

Noise: class-conditional flips per class, independent across classes: a clean 0 becomes 1 with
rho_minus, a clean 1 becomes 0 with rho_plus; the true T^j is recorded.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from curate.core.errors import BadInputError
from vision.multilabel.transition import transition

TOPICS = 5


@dataclass(frozen=True)
class MosaicConfig:
    train_size: int = 3000
    test_size: int = 1000
    topic_prob: float = 0.75
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("train_size", "test_size"):
            if getattr(self, name) < 10:
                raise BadInputError(f"{name} must be at least 10, got {getattr(self, name)}")
        if not 0 <= self.topic_prob <= 1:
            raise BadInputError(f"topic_prob must be in [0, 1], got {self.topic_prob}")


@dataclass(frozen=True)
class FlipConfig:
    rho_minus: float = 0.2  # P(noisy 1 | clean 0)
    rho_plus: float = 0.2  # P(noisy 0 | clean 1)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("rho_minus", "rho_plus"):
            if not 0 <= getattr(self, name) < 1:
                raise BadInputError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.rho_minus + self.rho_plus >= 1:  # Assumption 1: T^j must stay invertible
            raise BadInputError(f"rho_minus + rho_plus must be below 1, got {self.rho_minus} + {self.rho_plus}")


def mosaics(images: np.ndarray, labels: np.ndarray, size: int, topic_prob: float,
            rng: np.random.Generator) -> tuple[torch.Tensor, np.ndarray]:
    """``size`` mosaics (size, 1, 16, 16) of 8x8 ``images`` (N, 8, 8) and their targets (size, 10)."""
    by_digit = [np.flatnonzero(labels == d) for d in range(10)]
    topic = rng.integers(0, TOPICS, size)
    from_topic = rng.random((size, 4)) < topic_prob
    digits = np.where(from_topic, (2 * topic[:, None] + rng.integers(0, 3, (size, 4))) % 10,
                      rng.integers(0, 10, (size, 4)))
    picks = np.array([[rng.choice(by_digit[d]) for d in row] for row in digits])
    tiles = images[picks]  # (size, 4, 8, 8)
    grid = np.concatenate([np.concatenate([tiles[:, 0], tiles[:, 1]], 2),
                           np.concatenate([tiles[:, 2], tiles[:, 3]], 2)], 1)
    target = np.zeros((size, 10), dtype=np.int64)
    np.put_along_axis(target, digits, 1, axis=1)
    return torch.as_tensor(grid[:, None], dtype=torch.float32), target


def flip(clean: np.ndarray, config: FlipConfig) -> tuple[np.ndarray, np.ndarray]:
    """Noisy targets and the true T^j of every class (q, 2, 2)."""
    u = np.random.default_rng(config.seed).random(clean.shape)
    noisy = np.where(clean == 1, (u >= config.rho_plus), (u < config.rho_minus)).astype(np.int64)
    return noisy, np.stack([transition(config.rho_minus, config.rho_plus)] * clean.shape[1])


def digit_mosaics(config: MosaicConfig, split_seed: int = 0):
    """(train images, train targets, test images, test targets) from scikit-learn digits."""
    from vision.data import load_images

    data = load_images("digits", seed=split_seed)
    rng = np.random.default_rng(config.seed)
    train = mosaics(data.train_images[:, 0].numpy(), data.train_labels.numpy(), config.train_size,
                    config.topic_prob, rng)
    test = mosaics(data.test_images[:, 0].numpy(), data.test_labels.numpy(), config.test_size,
                   config.topic_prob, rng)
    return (*train, *test)

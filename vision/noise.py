"""Label-noise injection that records the noise it made.

- ``symmetric``: with probability r a label moves to one of the other C - 1 classes, uniformly:
  T = (1 - r) I + r / (C - 1) (J - I).
- ``asymmetric`` (pair-flip): with probability r class c moves to ``mapping[c]`` (default c + 1 mod C):
  T = (1 - r) I + r P.
- ``instance``: instance-dependent noise (Xia et al., NeurIPS 2020): each sample's flip rate
  q_i ~ N(r, 0.1²) clipped to [0, 1); a random projection W of its features scores the other classes,
  and its label moves with probability q_i to a class drawn from softmax(x_i W) over those classes.
  Its T is the mean of the per-sample transition rows by true class.

T[i, j] = P(noisy = j | true = i). ``empirical`` counts what was actually drawn.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from curate.core.errors import BadInputError

KINDS = ("symmetric", "asymmetric", "instance")


@dataclass(frozen=True)
class NoiseConfig:
    kind: str = "symmetric"
    rate: float = 0.4
    seed: int = 0
    mapping: tuple[int, ...] | None = None  # asymmetric: class c flips to mapping[c]

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise BadInputError(f"noise kind must be one of {', '.join(KINDS)}, got '{self.kind}'")
        if not 0 <= self.rate < 1:
            raise BadInputError(f"noise rate must be in [0, 1), got {self.rate}")


@dataclass
class NoisyLabels:
    labels: np.ndarray  # the noisy labels
    true_labels: np.ndarray
    transition: np.ndarray  # the designed T (C x C)
    empirical: np.ndarray  # row-normalised counts of (true, noisy)

    @property
    def is_clean(self) -> np.ndarray:
        return self.labels == self.true_labels

    @property
    def actual_rate(self) -> float:
        return float(1 - self.is_clean.mean())


def inject(labels: Sequence[int] | np.ndarray, num_classes: int, config: NoiseConfig,
           features: np.ndarray | None = None) -> NoisyLabels:
    """Noisy copies of ``labels`` (integers in [0, num_classes)); ``features`` (n x d) are needed
    for instance-dependent noise."""
    y = np.asarray(labels, dtype=np.int64)
    if num_classes < 2:
        raise BadInputError(f"num_classes must be at least 2, got {num_classes}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise BadInputError(f"labels must lie in [0, {num_classes}), got values {y.min()}..{y.max()}")
    rng = np.random.default_rng(config.seed)
    c, r = num_classes, config.rate
    if config.kind == "symmetric":
        transition = (1 - r) * np.eye(c) + r / (c - 1) * (1 - np.eye(c))
        noisy = _draw(y, transition, rng)
    elif config.kind == "asymmetric":
        mapping = np.asarray(config.mapping if config.mapping is not None else (np.arange(c) + 1) % c)
        if mapping.shape != (c,) or np.any(mapping == np.arange(c)) or mapping.min() < 0 or mapping.max() >= c:
            raise BadInputError(f"mapping must send each of the {c} classes to another class, got {mapping.tolist()}")
        transition = (1 - r) * np.eye(c)
        transition[np.arange(c), mapping] += r
        noisy = _draw(y, transition, rng)
    else:
        noisy, transition = _instance_noise(y, c, r, features, rng)
    empirical = np.zeros((c, c))
    np.add.at(empirical, (y, noisy), 1)
    empirical /= np.maximum(empirical.sum(1, keepdims=True), 1)
    return NoisyLabels(noisy, y, transition, empirical)


def _draw(y: np.ndarray, transition: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A noisy label per sample drawn from its true class's row of T."""
    cumulative = np.cumsum(transition[y], axis=1)
    u = rng.random(len(y))[:, None]
    return np.minimum((u > cumulative).sum(1), transition.shape[1] - 1)


def _instance_noise(y: np.ndarray, c: int, r: float, features: np.ndarray | None,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if features is None or len(features) != len(y):
        raise BadInputError("instance-dependent noise needs features with one row per label")
    x = np.asarray(features, dtype=np.float64).reshape(len(y), -1)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    q = np.clip(rng.normal(r, 0.1, size=len(y)), 0, 1 - 1e-6)
    w = rng.normal(size=(x.shape[1], c))
    scores = x @ w
    scores[np.arange(len(y)), y] = -np.inf  # only other classes
    p = np.exp(scores - scores.max(1, keepdims=True))
    p = q[:, None] * p / p.sum(1, keepdims=True)
    p[np.arange(len(y)), y] = 1 - q
    cumulative = np.cumsum(p, axis=1)
    noisy = np.minimum((rng.random(len(y))[:, None] > cumulative).sum(1), c - 1)
    transition = np.zeros((c, c))
    for k in range(c):
        members = y == k
        transition[k] = p[members].mean(0) if members.any() else np.eye(c)[k]
    return noisy, transition

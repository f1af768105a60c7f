"""The open-set pool and its oracle.

The training split of a dataset becomes the unlabelled pool: ``known`` classes (the ones the
annotation is for, relabelled 0..K-1) and unknown classes (the rest; a query spent on one of
them is wasted). A seeded ``initial`` share of the known-class images starts labelled. The test
set keeps the known classes only: the target model is a K-way classifier.

The oracle (built from :meth:`OpenSetPool.answers`) is the only reader of the pool's true
classes: a query returns the known label or :data:`UNKNOWN`, is counted against the round's
budget, and an index can be asked only once. One-shot selection (:mod:`vision.active.lewis`)
uses the same oracle over its pool's labels.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from curate.core.errors import BadInputError
from vision.data import ImageData

UNKNOWN = -1  # the oracle's answer for an image of a class outside the known ones


@dataclass
class OpenSetConfig:
    known: int = 6  # the first `known` classes are known (unless known_classes names them)
    known_classes: list[int] | None = None
    initial: float = 0.03  # share of the known-class pool labelled before the first round
    budget: int = 50  # queries per round
    rounds: int = 5  # query rounds; the target model is trained rounds + 1 times
    seed: int = 0  # the initial labelled set (and every round's training seed derives from it)

    def __post_init__(self) -> None:
        if self.known < 1:
            raise BadInputError(f"openset.known must be at least 1, got {self.known}")
        if self.known_classes is not None and (len(set(self.known_classes)) != len(self.known_classes)
                                               or not self.known_classes):
            raise BadInputError(f"openset.known_classes must be distinct class ids, got {self.known_classes}")
        if not 0 < self.initial < 1:
            raise BadInputError(f"openset.initial must be in (0, 1), got {self.initial}")
        for name in ("budget", "rounds"):
            if getattr(self, name) < 1:
                raise BadInputError(f"openset.{name} must be at least 1, got {getattr(self, name)}")


@dataclass
class OpenSetPool:
    images: torch.Tensor  # (N, C, H, W): the whole pool, known and unknown
    classes: np.ndarray  # (N,) the original class ids: read by the oracle only
    known_classes: list[int]
    test_images: torch.Tensor  # known classes only
    test_labels: torch.Tensor  # relabelled 0..K-1
    name: str
    initial: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def num_known(self) -> int:
        return len(self.known_classes)

    @property
    def openness(self) -> float:
        """Unknown classes / all classes in the pool (the papers' mismatch measure)."""
        return 1 - self.num_known / len(np.unique(self.classes))

    def is_known(self, indices: np.ndarray) -> np.ndarray:
        return np.isin(self.classes[indices], self.known_classes)

    def answers(self) -> np.ndarray:
        """What the oracle answers for each pool image: its label 0..K-1, or UNKNOWN."""
        remap = {c: i for i, c in enumerate(self.known_classes)}
        return np.array([remap.get(int(c), UNKNOWN) for c in self.classes], dtype=np.int64)


def open_set_pool(data: ImageData, config: OpenSetConfig) -> OpenSetPool:
    """The open-set pool of ``data``'s training split, with a seeded initial labelled set."""
    known = list(config.known_classes) if config.known_classes is not None else list(range(config.known))
    if max(known) >= data.num_classes or min(known) < 0 or len(known) >= data.num_classes:
        raise BadInputError(f"openset: known classes {known} must be a strict subset of the "
                            f"{data.num_classes} classes of {data.name}")
    classes = data.train_labels.numpy()
    remap = {c: i for i, c in enumerate(known)}
    in_test = np.isin(data.test_labels.numpy(), known)
    test_labels = torch.as_tensor([remap[int(c)] for c in data.test_labels.numpy()[in_test]], dtype=torch.long)
    pool = OpenSetPool(data.train_images, classes, known, data.test_images[torch.as_tensor(in_test)],
                       test_labels, f"{data.name}-open{len(known)}")
    known_rows = np.flatnonzero(pool.is_known(np.arange(len(classes))))
    count = max(len(known), int(round(config.initial * len(known_rows))))
    rng = np.random.default_rng([config.seed, 21])
    # at least one image of every known class, then the rest at random
    first = [rng.choice(known_rows[classes[known_rows] == c]) for c in known]
    rest = rng.permutation(np.setdiff1d(known_rows, first))[:count - len(first)]
    pool.initial = np.sort(np.concatenate([first, rest]).astype(np.int64))
    return pool


class Oracle:
    """Answers queries from a fixed answer per pool index (a label, or :data:`UNKNOWN` for an
    open-set pool's unknown classes); counts every call, and an index can be asked only once
    (``asked``: those already labelled, e.g. the initial set). ``oracle(i)`` asks for one index."""

    def __init__(self, answers: np.ndarray, asked: np.ndarray | None = None):
        self._answers = np.asarray(answers)
        self.asked: set[int] = set(int(i) for i in (() if asked is None else asked))
        self.calls = 0

    def label(self, indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        if len(np.unique(indices)) != len(indices) or any(int(i) in self.asked for i in indices):
            raise ValueError("the oracle was asked for an image twice")
        self.asked.update(int(i) for i in indices)
        self.calls += len(indices)
        return self._answers[indices]

    def __call__(self, index: int):
        return self.label(np.array([index]))[0]

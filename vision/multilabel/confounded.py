"""Confounded digit mosaics: multi-label images whose training labels co-occur strongly, with test
splits that separate a target from its usual companion (spec ``specs/cf_multilabel.md``, "Running
offline"; a procedural stand-in for MS-COCO's "car next to a parking meter").

A mosaic is a 3x3 array of slots of ``8 * max(scales) + 2 * jitter`` pixels on a canvas of three
slots plus 2 px (32 px for jitter 1 and scales (1,)); each present digit (a scikit-learn 8x8 digit,
train digits for train mosaics, test digits for test ones, upsampled by a random one of ``scales``)
sits in its own random slot at a random offset within it (up to ``jitter`` pixels each way at the
largest scale). Several scales put the zoomed digits of the 2x2 patch views in distribution for a
model trained on whole images (PAT-I's premise; ImageNet backbones are roughly scale-robust).
A 2x2 patch grid then cuts the middle row and column of slots (misaligned: pivot patches do not
always hold a whole object). The target is the multi-hot set of digits present (q = 10).

Co-occurrence: each pair (target t, context c) is *active* with ``pair_rate``; an active pair has
both digits with probability r = p / (2 - p), else one of the two (even odds), so that
P(c | t) = P(t | c) = p (``pair_probs``). Every other digit appears independently with
``other_rate``; an empty draw gets one random other digit.

Splits (:func:`confounded_mosaics`): ``train``, ``iid`` (the training distribution, test digits),
and per pair ``context_only_t`` (c present, t absent: the conditional FPR of t) and
``target_only_t`` (t present, c absent: the conditional TPR of t); the other digits are drawn as
in training. Every draw comes from ``seed``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from curate.core.errors import BadInputError

SLOTS = 3  # per side


@dataclass(frozen=True)
class ConfoundedConfig:
    train_size: int = 2000
    test_size: int = 1000  # the i.i.d. test split
    shift_size: int = 300  # images in each context-only and target-only split
    targets: tuple[int, ...] = (3, 1)
    contexts: tuple[int, ...] = (8, 7)  # contexts[i] is the usual companion of targets[i]
    pair_probs: tuple[float, ...] = (0.9, 0.8)  # P(context | target) = P(target | context) in training
    pair_rate: float = 0.4
    other_rate: float = 0.15
    jitter: int = 1  # pixels of position jitter per digit
    scales: tuple[int, ...] = (1,)  # each digit upsampled by one of these (nearest); slots fit the largest
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("train_size", "test_size", "shift_size"):
            if getattr(self, name) < 10:
                raise BadInputError(f"{name} must be at least 10, got {getattr(self, name)}")
        if not len(self.targets) == len(self.contexts) == len(self.pair_probs) >= 1:
            raise BadInputError(f"targets, contexts and pair_probs must have the same length (at least 1), got "
                                f"{len(self.targets)}, {len(self.contexts)}, {len(self.pair_probs)}")
        digits = [*self.targets, *self.contexts]
        if any(not 0 <= d <= 9 for d in digits) or len(set(digits)) != len(digits):
            raise BadInputError(f"targets and contexts must be distinct digits 0-9, got {self.targets} and {self.contexts}")
        if any(not 0 < p <= 1 for p in self.pair_probs):
            raise BadInputError(f"pair_probs must lie in (0, 1], got {self.pair_probs}")
        for name in ("pair_rate", "other_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise BadInputError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.jitter <= 4:
            raise BadInputError(f"jitter must be in [0, 4], got {self.jitter}")
        if not self.scales or any(not 1 <= s <= 4 for s in self.scales):
            raise BadInputError(f"scales must be integers in [1, 4], got {self.scales}")

    @property
    def pitch(self) -> int:
        return 8 * max(self.scales) + 2 * self.jitter

    @property
    def image_size(self) -> int:
        return SLOTS * self.pitch + 2

    @property
    def others(self) -> list[int]:
        return [d for d in range(10) if d not in (*self.targets, *self.contexts)]


def draw_sets(config: ConfoundedConfig, size: int, rng: np.random.Generator,
              force: tuple[int, str] | None = None) -> np.ndarray:
    """(size, 10) multi-hot targets; ``force`` = (pair index, "context" | "target") makes that pair
    always show only its context (or only its target)."""
    sets = np.zeros((size, 10), dtype=np.int64)
    for k, (t, c, p) in enumerate(zip(config.targets, config.contexts, config.pair_probs)):
        active = rng.random(size) < config.pair_rate
        both = rng.random(size) < p / (2 - p)
        first = rng.random(size) < 0.5
        sets[:, t] = active & (both | first)
        sets[:, c] = active & (both | ~first)
        if force is not None and force[0] == k:
            sets[:, t], sets[:, c] = (0, 1) if force[1] == "context" else (1, 0)
    others = config.others
    if others:
        sets[:, others] = rng.random((size, len(others))) < config.other_rate
        empty = np.flatnonzero(sets.sum(1) == 0)
        sets[empty, rng.choice(others, len(empty))] = 1
    return sets


def render(sets: np.ndarray, images: np.ndarray, labels: np.ndarray, config: ConfoundedConfig,
           rng: np.random.Generator) -> torch.Tensor:
    """(size, 1, S, S) canvases: each digit of a set drawn from ``images`` (N, 8, 8) of its class,
    in its own random slot, jittered."""
    by_digit = [np.flatnonzero(labels == d) for d in range(10)]
    pitch, size = config.pitch, config.image_size
    canvas = np.zeros((len(sets), 1, size, size), dtype=np.float32)
    for n, row in enumerate(sets):
        digits = np.flatnonzero(row)
        slots = rng.permutation(SLOTS * SLOTS)[:len(digits)]
        for digit, slot in zip(digits, slots):
            scale = config.scales[int(rng.integers(len(config.scales)))] if len(config.scales) > 1 else config.scales[0]
            side = 8 * scale
            top = 1 + (slot // SLOTS) * pitch + int(rng.integers(0, pitch - side + 1))
            left = 1 + (slot % SLOTS) * pitch + int(rng.integers(0, pitch - side + 1))
            glyph = images[rng.choice(by_digit[digit])]
            canvas[n, 0, top:top + side, left:left + side] = np.kron(glyph, np.ones((scale, scale), np.float32))
    return torch.from_numpy(canvas)


def confounded_mosaics(config: ConfoundedConfig, split_seed: int = 0) -> dict[str, tuple[torch.Tensor, np.ndarray]]:
    """Split name -> (images, targets): ``train``, ``iid``, ``context_only_t``, ``target_only_t``."""
    from vision.data import load_images

    data = load_images("digits", seed=split_seed)
    train_x, train_y = data.train_images[:, 0].numpy(), data.train_labels.numpy()
    test_x, test_y = data.test_images[:, 0].numpy(), data.test_labels.numpy()
    rng = np.random.default_rng([config.seed, 17])

    def split(size: int, pool: tuple[np.ndarray, np.ndarray], force=None) -> tuple[torch.Tensor, np.ndarray]:
        sets = draw_sets(config, size, rng, force)
        return render(sets, *pool, config, rng), sets

    splits = {"train": split(config.train_size, (train_x, train_y)),
              "iid": split(config.test_size, (test_x, test_y))}
    for k, t in enumerate(config.targets):
        splits[f"context_only_{t}"] = split(config.shift_size, (test_x, test_y), (k, "context"))
        splits[f"target_only_{t}"] = split(config.shift_size, (test_x, test_y), (k, "target"))
    return splits


def confounding_metrics(splits: dict[str, np.ndarray], scores: dict[str, np.ndarray], config: ConfoundedConfig,
                        threshold: float) -> dict[str, dict[str, float]]:
    """Per target t (keys ``str(t)``): the conditional FPR on ``context_only_t`` (its context
    without it), the conditional TPR on ``target_only_t`` (it without its context) and, on ``iid``,
    the TPR when both appear. ``splits``: targets per split; ``scores``: probabilities per split."""
    out = {}
    for t, c in zip(config.targets, config.contexts):
        iid = splits["iid"]
        both = (iid[:, t] == 1) & (iid[:, c] == 1)
        out[str(t)] = {
            "context": c,
            "fpr_context_only": float(np.mean(scores[f"context_only_{t}"][:, t] >= threshold)),
            "tpr_target_only": float(np.mean(scores[f"target_only_{t}"][:, t] >= threshold)),
            "tpr_with_context": float(np.mean(scores["iid"][both, t] >= threshold)) if both.any() else float("nan"),
        }
    return out

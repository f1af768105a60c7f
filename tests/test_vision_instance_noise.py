"""Instance-dependent noise (vision/noise.py, Xia et al. 2020): where a label flips to depends on the
sample's features, not only on its class, and the realised noise rate is the requested one."""
from __future__ import annotations

import numpy as np

from vision.noise import NoiseConfig, inject


def _flip_targets(noisy: np.ndarray, true_class: int, c: int = 10) -> np.ndarray:
    """The share of each class among the flipped labels (the flip distribution, true class left out)."""
    flipped = noisy[noisy != true_class]
    return np.bincount(flipped, minlength=c) / len(flipped)


def test_same_class_different_features_get_different_flip_distributions():
    # Kills a class-conditional matrix that ignores the features (e.g. drawing every label from its
    # class's mean row): then both groups below flip alike. 4000 copies of each of two class-0
    # samples with different features; the copies estimate each sample's flip distribution.
    n = 4000
    x = np.zeros((2 * n, 8))
    x[:n, 0], x[n:, 1] = 1.0, 1.0
    noisy = inject(np.zeros(2 * n, dtype=np.int64), 10, NoiseConfig("instance", 0.4, seed=0), features=x).labels
    first, second = _flip_targets(noisy[:n], 0), _flip_targets(noisy[n:], 0)
    halves = _flip_targets(noisy[:n // 2], 0), _flip_targets(noisy[n // 2:n], 0)
    total_variation = 0.5 * np.abs(first - second).sum()
    assert total_variation > 0.25, total_variation  # 0.43 here
    assert 0.5 * np.abs(halves[0] - halves[1]).sum() < 0.1  # same features: the same distribution (0.05)


def test_realised_rate_and_transition_match_the_request():
    # Kills a flip that may land back on the true class (the realised rate drops to about r (C - 1) / C)
    # and a per-sample rate that is not centred on r.
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 20_000)
    x = rng.normal(size=(20_000, 16)) + y[:, None]
    for rate in (0.2, 0.4):
        noisy = inject(y, 10, NoiseConfig("instance", rate, seed=1), features=x)
        assert abs(noisy.actual_rate - rate) < 0.015, (rate, noisy.actual_rate)
        assert np.abs(noisy.empirical - noisy.transition).max() < 0.04
        assert np.allclose(np.diag(noisy.transition).mean(), 1 - rate, atol=0.01)

"""Label-noise injection: the drawn noise follows the recorded transition matrix, rates hold,
and bad settings are refused."""
from __future__ import annotations

import numpy as np
import pytest

from curate.core.errors import BadInputError
from vision.noise import NoiseConfig, inject


def _labels(n=20_000, c=10, seed=0):
    return np.random.default_rng(seed).integers(0, c, n)


def test_symmetric_noise_matches_its_transition_matrix():
    y = _labels()
    noisy = inject(y, 10, NoiseConfig("symmetric", 0.4, seed=1))
    assert np.allclose(noisy.transition.sum(1), 1) and np.allclose(np.diag(noisy.transition), 0.6)
    assert np.abs(noisy.empirical - noisy.transition).max() < 0.03
    assert abs(noisy.actual_rate - 0.4) < 0.02
    assert np.array_equal(noisy.is_clean, noisy.labels == y)


def test_pair_flip_moves_each_class_to_its_partner_only():
    y = _labels()
    noisy = inject(y, 10, NoiseConfig("asymmetric", 0.4, seed=2))
    flipped = ~noisy.is_clean
    assert np.all(noisy.labels[flipped] == (y[flipped] + 1) % 10)
    assert abs(noisy.actual_rate - 0.4) < 0.02
    custom = inject(y, 10, NoiseConfig("asymmetric", 0.3, seed=2, mapping=tuple([1, 0, 3, 2, 5, 4, 7, 6, 9, 8])))
    assert np.all(custom.labels[~custom.is_clean] == (y[~custom.is_clean] ^ 1))


def test_instance_noise_depends_on_the_features_and_keeps_the_rate():
    rng = np.random.default_rng(3)
    y = _labels(5000)
    x = rng.normal(size=(5000, 16)) + y[:, None]
    noisy = inject(y, 10, NoiseConfig("instance", 0.4, seed=4), features=x)
    assert abs(noisy.actual_rate - 0.4) < 0.03
    assert np.allclose(noisy.transition.sum(1), 1)
    # Same features, same seed: same labels; the flip targets follow the features, not a fixed map.
    again = inject(y, 10, NoiseConfig("instance", 0.4, seed=4), features=x)
    assert np.array_equal(noisy.labels, again.labels)
    assert len({(t, n) for t, n in zip(y[~noisy.is_clean], noisy.labels[~noisy.is_clean])}) > 20


@pytest.mark.parametrize("kwargs, match", [({"rate": 1.0}, "noise rate"), ({"rate": -0.1}, "noise rate"),
                                           ({"kind": "pairwise"}, "noise kind")])
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(BadInputError, match=match):
        NoiseConfig(**kwargs)


def test_bad_labels_and_missing_features_are_refused():
    with pytest.raises(BadInputError, match="labels must lie"):
        inject([0, 1, 12], 10, NoiseConfig())
    with pytest.raises(BadInputError, match="needs features"):
        inject([0, 1, 2], 10, NoiseConfig("instance"))

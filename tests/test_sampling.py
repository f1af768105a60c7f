"""Online learnability (rl.sampling): Beta posteriors updated from groups, prompts drawn in
proportion to p(1 - p) with a floor, in TRL's RepeatSampler layout, reading the estimates again
for every batch (dynamic sampling's filter is tested in test_dynamic_sampling.py)."""
from __future__ import annotations

import numpy as np
import pytest

from curate.core.errors import BadInputError
from rl.sampling import MAX_LEARNABILITY, LearnabilityConfig, LearnabilitySampler, OnlineLearnability


def test_estimates_are_the_beta_posterior_mean_with_prior_decay_and_offline_seed():
    # Kills: a prior ignored (an unseen prompt at p = 0, never drawn), rewards summed without the
    # group size, decay applied to the new group, offline rates ignored.
    est = OnlineLearnability(3, LearnabilityConfig(prior_successes=1, prior_failures=3, decay=0.5))
    np.testing.assert_allclose(est.estimates(), [0.25, 0.25, 0.25])
    est.update(0, [1, 1, 0, 1])
    est.update(0, [0, 0, 0, 0])
    est.update(1, [0.5, 1.0])
    # prompt 0: successes 0.5 * 3 + 0 = 1.5, trials 0.5 * 4 + 4 = 6; prompt 1: 1.5 of 2
    np.testing.assert_allclose(est.estimates(), [(1 + 1.5) / (4 + 6), (1 + 1.5) / (4 + 2), 0.25])
    assert est.groups.tolist() == [2, 1, 0]
    seeded = OnlineLearnability(2, LearnabilityConfig(offline_weight=6), offline_success_rate=[0.0, 1.0])
    np.testing.assert_allclose(seeded.estimates(), [1 / 8, 7 / 8])
    assert seeded.histogram() == [0, 1, 0, 0, 0, 0, 0, 0, 1, 0]


def test_weights_are_learnability_with_a_floor():
    # Kills: weights proportional to p (or 1 - p) instead of p(1 - p); no floor (a prompt at p = 0
    # is never drawn again, so its estimate can never recover).
    est = OnlineLearnability(4, LearnabilityConfig(floor=0.2))
    for index, rewards in ((0, [0] * 40), (1, [1] * 40), (2, [0, 1] * 20), (3, [1, 1, 1, 0] * 10)):
        est.update(index, rewards)
    p = est.estimates()
    expected = np.maximum(p * (1 - p), 0.2 * MAX_LEARNABILITY)
    np.testing.assert_allclose(est.weights(), expected)
    assert est.weights()[0] == est.weights()[1] == pytest.approx(0.05)  # both ends held at the floor
    assert est.probabilities()[2] > est.probabilities()[3] > est.probabilities()[0]
    assert est.probabilities().sum() == pytest.approx(1.0)


def test_sampling_frequencies_follow_learnability_of_the_current_estimates():
    # The done-when line: on a synthetic reward (prompt i succeeds with probability q_i), after the
    # estimator has seen groups, the sampler's draw frequencies match p(1 - p) of its estimates
    # (floored) within a few standard errors. Kills: uniform sampling, sampling by p, a sampler that
    # reads the estimates once at construction (the second half of the draws is made after updates).
    rng = np.random.default_rng(0)
    q = np.linspace(0.0, 1.0, 21)
    est = OnlineLearnability(len(q), LearnabilityConfig(floor=0.1, seed=5))
    sampler = LearnabilitySampler(est, mini_repeat_count=1, batch_size=200, num_batches=100)
    draws = iter(sampler)
    first = np.array([next(draws) for _ in range(200)])  # all at the prior: uniform
    assert np.abs(np.bincount(first, minlength=len(q)) / 200 - 1 / len(q)).max() < 0.06
    for _ in range(30):
        for i, qi in enumerate(q):
            est.update(i, (rng.random(8) < qi).astype(float))
    p = est.estimates()  # the definition, not the code under test: max(p(1 - p), floor x 1/4), normalised
    want = np.maximum(p * (1 - p), 0.1 * 0.25) / np.maximum(p * (1 - p), 0.1 * 0.25).sum()
    counts = np.bincount([next(draws) for _ in range(200 * 99)], minlength=len(q))
    freq = counts / counts.sum()
    stderr = np.sqrt(want * (1 - want) / counts.sum())
    assert np.all(np.abs(freq - want) < 5 * stderr + 1e-9), (freq, want)
    assert freq[10] > 5 * freq[0]  # p near 1/2 drawn far more often than p = 0 ...
    assert freq[0] > 0 and freq[-1] > 0  # ... but the floor keeps the ends in play


def test_the_sampler_has_trls_repeat_layout_and_is_seeded():
    # Kills: groups split across positions (GRPO groups are consecutive repeats of one prompt), a
    # batch not repeated for steps_per_generation x num_iterations, unseeded draws (ranks disagree).
    est = OnlineLearnability(50)
    sampler = LearnabilitySampler(est, mini_repeat_count=3, batch_size=4, repeat_count=2, num_batches=5, seed=7)
    out = list(sampler)
    assert len(out) == len(sampler) == 5 * 4 * 3 * 2
    for b in range(5):
        block = out[b * 24:(b + 1) * 24]
        assert block[:12] == block[12:]  # the batch repeated
        groups = [block[i:i + 3] for i in range(0, 12, 3)]
        assert all(len(set(g)) == 1 for g in groups)
    assert out == list(LearnabilitySampler(est, 3, 4, 2, 5, seed=7))
    assert out != list(LearnabilitySampler(est, 3, 4, 2, 5, seed=8))


@pytest.mark.parametrize("make, message", [
    (lambda: LearnabilityConfig(floor=0), "floor must be in"),
    (lambda: LearnabilityConfig(decay=1.5), "decay must be in"),
    (lambda: LearnabilityConfig(prior_successes=0), "must be positive"),
    (lambda: OnlineLearnability(2, offline_success_rate=[0.5]), "expected 2 values"),
    (lambda: OnlineLearnability(2).update(0, [2.0]), "values in [0, 1]"),
    (lambda: LearnabilitySampler(OnlineLearnability(2), 0, 1), "mini_repeat_count must be at least 1"),
])
def test_bad_settings_are_one_line(make, message):
    with pytest.raises(BadInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        make()

"""One-shot multi-model active learning by (max) Lewis weights (:mod:`vision.active.lewis`): the
spec's three property tests (correct Lewis weights; max aggregation and the budget; unbiased
reweighting and the subspace embedding), the experiment end to end, and bad input refused in one
line. Each test names the wrong implementation it kills (the mutants in tests/mutants.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from curate.cli import main as curate_main
from curate.core.errors import BadInputError
from vision.active.pool import Oracle
from vision.active.lewis import (Lewis, LewisConfig, Query, leverage_scores, lewis_weights,
                                 max_lewis_scores, sample_distinct)
from vision.active.lewis_experiment import LewisExperimentConfig
from vision.run import run_experiment


def heavy(n: int = 500, d: int = 8, seed: int = 0) -> np.ndarray:
    """Gaussian rows scaled by |t_1.5|: heavy-tailed row norms, so leverage is concentrated."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) * np.abs(rng.standard_t(1.5, size=(n, 1)))


def fixed_point(a: np.ndarray, w: np.ndarray, p: float) -> np.ndarray:
    """(a_i^T (A^T W^(1-2/p) A)^-1 a_i)^(p/2) by the definition (an explicit inverse)."""
    m = a.T @ (w[:, None] ** (1 - 2 / p) * a)
    return np.einsum("ij,jk,ik->i", a, np.linalg.inv(m), a) ** (p / 2)


@pytest.mark.parametrize("p", [1, 1.5, 2, 3, 6])
def test_lewis_weights_are_the_fixed_point_of_the_definition(p):
    # Kills W^(2/p-1) in place of W^(1-2/p) (lewis-inverted-exponent), rows normalised before the
    # iteration (lewis-row-normalisation), the plain update at p >= 4 (lewis-plain-update-at-p6,
    # which overflows), and leverage scores for every p (lewis-leverage-for-every-p).
    a = heavy()
    w = lewis_weights(a, p)
    assert abs(w.sum() - 8) < 1e-8
    assert w.min() >= 0 and w.max() <= 1 + 1e-12
    assert np.max(np.abs(w - fixed_point(a, w, p))) < 1e-8
    r = np.random.default_rng(1).standard_normal((8, 8))
    assert np.max(np.abs(lewis_weights(a @ r, p) - w)) < 1e-8  # invariant to A -> AR
    if p == 2:
        hat = np.diag(a @ np.linalg.inv(a.T @ a) @ a.T)
        assert np.max(np.abs(w - hat)) < 1e-10
    if p == 1:
        assert np.max(np.abs(w - hat_of(a))) > 0.05  # Lewis weights are not leverage scores


def hat_of(a: np.ndarray) -> np.ndarray:
    return np.diag(a @ np.linalg.inv(a.T @ a) @ a.T)


def test_rank_deficient_input_sums_to_its_rank_and_an_unconverged_solve_is_refused():
    # Kills a solver that returns without checking the fixed-point residual
    # (lewis-no-residual-check): 3 iterations at p = 6 are far from the fixed point.
    a = heavy()
    collinear = np.hstack([a, a[:, :3] @ np.ones((3, 2)), np.zeros((500, 1))])  # rank 8 of 11 columns
    zero_row = np.vstack([collinear, np.zeros((1, 11))])
    for p in (1, 2, 3):
        w = lewis_weights(zero_row, p)
        assert abs(w.sum() - 8) < 1e-8 and w[-1] == 0
        assert np.max(np.abs(w[:-1] - lewis_weights(a, p))) < 1e-8
    with pytest.raises(RuntimeError, match="did not converge"):
        lewis_weights(a, 6, max_iter=3)


def test_max_aggregation_bounds_and_the_budget():
    # Kills mean aggregation (lewis-mean-aggregation: T below max_j rank), sum aggregation
    # (lewis-sum-aggregation: T = k d for identical representations), a guard that counts the pool
    # instead of the rows with q > 0 (lewis-guard-counts-pool: it cannot stop), drawing without
    # replacement (lewis-without-replacement: m = budget, no repeats), an oracle asked on every draw
    # (lewis-oracle-per-draw) and a classification flag that is ignored (lewis-flag-ignored).
    u = heavy()
    single = lewis_weights(u, 2)
    for p in (1.0, 2.0):
        same = max_lewis_scores([u, u, u], p)
        assert np.allclose(same / same.sum(), lewis_weights(u, p) / 8, atol=1e-12) and abs(same.sum() - 8) < 1e-8
    other = np.random.default_rng(2).standard_normal((500, 3)) ** 3
    reps = [u, other, u @ np.random.default_rng(3).standard_normal((8, 8))]
    t = max_lewis_scores(reps).sum()
    assert 8 <= t <= min(8 + 3 + 8, 500) and t < 8 + 3  # the span of U and U R is counted once
    small = [heavy(20, 15, 4), heavy(20, 15, 5)]
    assert 15 <= max_lewis_scores(small).sum() <= 20 + 1e-9  # min(sum of ranks, n) = n
    sampler = Lewis(LewisConfig())
    assert LewisExperimentConfig().initial_labels == 500  # the regression scenario's start
    with_zeros = np.vstack([u, np.zeros((5, 8))])
    q = max_lewis_scores([with_zeros]) / 8
    with pytest.raises(BadInputError, match="budget must be in"):
        sample_distinct(q, 501, np.random.default_rng(0))  # only 500 rows can ever be drawn
    oracle = Oracle(np.arange(505) * 10)
    query = sampler.query([with_zeros, with_zeros[:, :4]], 120, np.random.default_rng(0), oracle)
    assert len(query.indices) == len(set(query.indices.tolist())) == 120 and query.m > 120  # repeats happen
    assert oracle.calls == 120 and query.labels == [10 * int(i) for i in query.indices]
    assert set(query.draws.tolist()) == set(query.indices.tolist())
    for regression, flag, expect_ones in ((True, False, False), (False, False, True), (False, True, False)):
        weights = Lewis(LewisConfig(classification_weights=flag)).train_weights(query, 7, regression)
        assert np.all(weights[:7] == 1) and len(weights) == 7 + 120
        assert np.allclose(weights[7:], 1) == expect_ones
        if not expect_ones:
            assert np.allclose(weights[7:], query.loss_weights(2.0))
    assert np.all(Lewis(LewisConfig(sampler="uniform")).train_weights(query, 7, True) == 1)  # the Random baseline
    assert np.allclose(single, leverage_scores(u))


@pytest.mark.parametrize("p", [1.0, 2.0])
def test_reweighting_is_unbiased(p):
    # Kills q^-1 in place of (m q)^(-1/p) (lewis-weights-q-inverse) and duplicates collapsed
    # without adding their weights (lewis-duplicates-collapsed: high-q rows are drawn many times).
    u = heavy()
    theta = np.random.default_rng(6).standard_normal(8)
    losses = np.abs(u @ theta) ** p
    q = lewis_weights(u, p) / 8
    rng = np.random.default_rng(7)
    m = 50
    estimates = []
    for _ in range(2000):
        query = Query.from_draws(rng.choice(500, size=m, p=q), q)
        estimates.append(np.sum(query.loss_weights(p) * losses[query.indices]))
    estimates = np.asarray(estimates)
    se = estimates.std(ddof=1) / np.sqrt(len(estimates))
    assert abs(estimates.mean() - losses.sum()) < 3 * se


def test_leverage_sampling_is_a_subspace_embedding():
    # Kills q^-1 in place of (m q)^(-1/2) on the rows of S (lewis-weights-q-inverse).
    u = heavy()
    basis = np.linalg.qr(u)[0]
    q = leverage_scores(u) / 8
    rng = np.random.default_rng(8)
    m = 166  # about 10 d log d
    worst = []
    for _ in range(1000):
        query = Query.from_draws(rng.choice(500, size=m, p=q), q)
        sv = np.linalg.svd(query.row_scales(2.0)[:, None] * basis[query.draws], compute_uv=False)
        worst.append((sv.min(), sv.max()))
    worst = np.asarray(worst)
    assert worst[:, 0].min() >= 0.5 and worst[:, 1].max() <= 1.5


SMALL = {"dataset": "synthetic", "backbones": ["raw", "pca:4", "relu:32:0", "poly:3"], "initial_labels": 100,
         "budget": 60, "synthetic": {"n_train": 600, "n_test": 300}}


@pytest.mark.parametrize("sampler", ["max_lewis", "uniform", "leverage_single"])
def test_the_experiment_queries_the_budget_once_and_is_seeded(sampler):
    result = run_experiment("lewis", {**SMALL, "method": {"sampler": sampler}})
    query = result["query"]
    assert query["oracle_calls"] == query["distinct"] == 60 and query["draws"] >= 60
    assert len(result["heads"]) == 4 and np.isfinite(result["final"]["mean_test_error"])
    assert 11 <= query["T"] <= 11 + 5 + 33 + 10
    again = run_experiment("lewis", {**SMALL, "method": {"sampler": sampler}})
    assert again["final"] == result["final"]  # every draw is seeded from the config
    other = run_experiment("lewis", {**SMALL, "seed": 1, "method": {"sampler": sampler}})
    assert other["final"] != result["final"]


def test_digits_classification_reports_accuracy_and_class_balance():
    config = {"dataset": "digits", "task": "classification", "backbones": ["pca:8", "relu:64:0", "mlp:32:0"],
              "initial_labels": 100, "budget": 100}
    result = run_experiment("lewis", config)
    assert all(0.5 < h["test_accuracy"] <= 1 for h in result["heads"])
    assert result["query"]["imbalance_ratio"] >= 1 and "accuracy" in result["summary"]


def test_l1_heads_follow_p_1():
    result = run_experiment("lewis", {**SMALL, "method": {"p": 1.0}})
    assert result["final"]["metric"] == "test MAE" and result["query"]["oracle_calls"] == 60
    assert np.isfinite(result["final"]["mean_test_error"])


@pytest.mark.parametrize("bad, message", [
    ({"method": {"sampler": "random"}}, "sampler must be one of max_lewis, uniform, leverage_single, got 'random'"),
    ({"budgett": 10}, "unknown field 'budgett' (did you mean 'budget'?)"),
    ({"backbones": ["pca:x"]}, "backbones: 'pca:x' is not one of"),
    ({"method": {"p": -1}}, "p must be positive, got -1"),
    ({"method": {"p": 3}}, "method.p: the experiment's regression heads are l1 or l2 (p 1 or 2), got 3"),
    ({"synthetic": {"tails": "rows"}}, "tails must be row or entry, got 'rows'"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, bad, message):
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "recipes" / "vision" / "lewis.yaml").read_text())
    config.update(bad)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    assert curate_main(["vision", "lewis", "--config", str(path), "--out", str(out / "r.json")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err and str(path) in err, err
    assert not out.exists()

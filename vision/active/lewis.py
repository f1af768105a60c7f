"""One-shot active learning for several target models by (max) Lewis-weight sampling (Huang, Li,
Sun, Tang, "One-shot Active Learning Based on Lewis Weight Sampling for Multiple Deep Models",
ICLR 2024, arXiv 2405.14121; spec ``specs/lewis_al.md``).

k target models = k frozen representations U^j (n_u x d_j, the unlabelled pool) + k linear heads.
Alg. 1: s_i = max_j w_i(U^j) (the l_p Lewis weights of each U^j, Def. 3.1), q = s / T with
T = sum_i s_i; draw i.i.d. from q with replacement until ``budget`` distinct indices are drawn
(m >= budget draws), query each index's label once (the first time it appears); every head is
then trained on the labelled rows (weight 1) and the drawn rows, draw t scaled by
(m q_t)^(-1/p) inside |.|^p, i.e. per-example loss weight count_i / (m q_i).

- :func:`lewis_weights`: Cohen-Peng fixed-point iteration w <- tau(w)^(p/2) for p < 4; for p >= 4
  the damped step w <- w^(1-2/p) tau(w) (the plain one diverges). The fixed-point residual is
  checked after every solve (a RuntimeError if above ``check``). A rank-deficient A is replaced by
  an orthonormal basis of its column space (QR with column pivoting; w is invariant to A -> AR),
  so sum w = rank(A); zero rows get weight 0.
- :func:`max_lewis_scores`, :func:`sample_distinct` (the guard budget <= #{q_i > 0}, the oracle
  queried once per distinct index), :class:`Query` (draws, counts, m; :meth:`Query.loss_weights`).
- :class:`Lewis` with :class:`LewisConfig`: ``sampler`` max_lewis (the method), uniform (q = 1/n_u,
  the Random baseline with the same estimator and budget) or leverage_single (p = 2 scores of one
  representation, ``reference``): the baselines are options of the one registered method.

[assumed] The paper does not say whether the (m q)^-1 weights are used for classification heads
(``classification_weights``, default false: the "vanilla" training on the union); regression heads
always use them. Left out: the optional constraint ||S A theta||_p^p <= ||S y||_p^p / (eps L^p)
(the paper's experiments drop it too), the Bernoulli variant (App. B), p >= 4 via the convex
formulation (the damped iteration with its residual check is used instead); the experiment
(:mod:`vision.active.lewis_experiment`) omits the OFA subnets and the fine-tuning scenario.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import linalg

from curate.core.errors import BadInputError

SAMPLERS = ("max_lewis", "uniform", "leverage_single")


@dataclass
class LewisConfig:
    p: float = 2.0  # the l_p of the heads' loss (the paper's experiments: 2, leverage scores)
    sampler: str = "max_lewis"  # max_lewis | uniform | leverage_single (baselines at equal budget)
    reference: int = 0  # leverage_single: the representation whose leverage scores are used
    classification_weights: bool = False  # [assumed] (m q)^-1 weights for classification heads too
    tol: float = 1e-10  # stop when max |log w_new - log w| < tol
    check: float = 1e-8  # refuse weights whose fixed-point residual exceeds this
    max_iter: int = 2000

    def __post_init__(self) -> None:
        if not self.p > 0:
            raise BadInputError(f"p must be positive, got {self.p}")
        if self.sampler not in SAMPLERS:
            raise BadInputError(f"sampler must be one of {', '.join(SAMPLERS)}, got '{self.sampler}'")
        if self.reference < 0:
            raise BadInputError(f"reference must be >= 0, got {self.reference}")
        for name in ("tol", "check"):
            if not getattr(self, name) > 0:
                raise BadInputError(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_iter < 1:
            raise BadInputError(f"max_iter must be at least 1, got {self.max_iter}")


def column_basis(a: np.ndarray) -> np.ndarray:
    """An orthonormal basis (n x rank) of the column space of ``a`` (QR with column pivoting)."""
    a = np.asarray(a, dtype=float)
    if a.ndim != 2:
        raise BadInputError(f"a feature matrix must be 2-D, got shape {a.shape}")
    if a.size == 0:
        return np.zeros((a.shape[0], 0))
    q, r, _ = linalg.qr(a, mode="economic", pivoting=True)
    diag = np.abs(np.diag(r))
    rank = int(np.sum(diag > max(a.shape) * np.finfo(float).eps * (diag[0] if diag.size else 0.0)))
    return q[:, :rank]


def leverage_scores(a: np.ndarray) -> np.ndarray:
    """tau_i = a_i^T (A^T A)^+ a_i, the squared row norms of an orthonormal basis; sum = rank(A)."""
    return np.einsum("ij,ij->i", basis := column_basis(a), basis)


def _scores(q: np.ndarray, w: np.ndarray, p: float) -> np.ndarray:
    """tau_i(w) = a_i^T (A^T W^(1-2/p) A)^-1 a_i via B = W^(1/2-1/p) A = Q R: ||(A R^-1)_i||^2."""
    r = linalg.qr(w[:, None] ** (0.5 - 1.0 / p) * q, mode="r")[0][: q.shape[1]]
    x = linalg.solve_triangular(r, q.T, trans="T", lower=False)  # R^-T A^T: the rows of A R^-1, transposed
    return np.einsum("ij,ij->j", x, x)


def lewis_residual(a: np.ndarray, w: np.ndarray, p: float) -> float:
    """max_i |w_i - (a_i^T (A^T W^(1-2/p) A)^-1 a_i)^(p/2)| over rows with w_i > 0."""
    live = w > 0
    basis = column_basis(np.asarray(a, dtype=float)[live])
    return float(np.max(np.abs(w[live] - _scores(basis, w[live], p) ** (p / 2)), initial=0.0))


def lewis_weights(a: np.ndarray, p: float = 2.0, tol: float = 1e-10, max_iter: int = 2000,
                  check: float = 1e-8) -> np.ndarray:
    """The l_p Lewis weights of the rows of ``a`` (Def. 3.1): sum = rank(a), 0 <= w <= 1."""
    if not p > 0:
        raise BadInputError(f"p must be positive, got {p}")
    basis = column_basis(a)
    n, rank = basis.shape
    w = np.zeros(n)
    live = np.einsum("ij,ij->i", basis, basis) > 1e-300  # zero rows: weight 0
    if rank == 0 or not live.any():
        return w
    basis = basis[live]  # still orthonormal: the dropped rows are zero
    if p == 2:
        w[live] = np.einsum("ij,ij->i", basis, basis)
        return w
    current = np.full(len(basis), rank / len(basis))
    for _ in range(max_iter):
        tau = _scores(basis, current, p)
        new = tau ** (p / 2) if p < 4 else current ** (1 - 2 / p) * tau
        done = np.max(np.abs(np.log(new) - np.log(current))) < tol
        current = new
        if done:
            break
    w[live] = current
    residual = lewis_residual(basis, current, p)
    if not residual < check:
        raise RuntimeError(f"Lewis weights (p={p}) did not converge: fixed-point residual {residual:.3g} "
                           f"after {max_iter} iterations")
    return w


def max_lewis_scores(features: Sequence[np.ndarray], p: float = 2.0, **solver) -> np.ndarray:
    """s_i = max_j w_i(U^j) over the representations of the same pool; T = s.sum()."""
    if not features:
        raise BadInputError("max_lewis_scores needs at least one representation")
    sizes = {len(u) for u in features}
    if len(sizes) != 1:
        raise BadInputError(f"the representations hold different numbers of rows: {sorted(sizes)}")
    return np.max(np.stack([lewis_weights(u, p, **solver) for u in features]), axis=0)


@dataclass
class Query:
    """The one-shot query: ``indices`` (distinct, in order of first draw) with their labels,
    ``draws`` (all m draws, repeats kept) and the sampling distribution ``q`` over the pool."""

    indices: np.ndarray
    labels: list
    draws: np.ndarray
    q: np.ndarray

    @classmethod
    def from_draws(cls, draws: np.ndarray, q: np.ndarray, labels: list | None = None) -> "Query":
        """The query of fixed draws (the distinct indices in order of first appearance)."""
        draws = np.asarray(draws)
        _, first = np.unique(draws, return_index=True)
        return cls(draws[np.sort(first)], labels or [], draws, np.asarray(q, dtype=float))

    @property
    def m(self) -> int:
        return len(self.draws)

    def row_scales(self, p: float) -> np.ndarray:
        """The nonzero of each row of S_U: (m q_{Q_t})^(-1/p), one per draw (duplicates stay rows)."""
        return (self.m * self.q[self.draws]) ** (-1.0 / p)

    def loss_weights(self, p: float) -> np.ndarray:
        """Per-example loss weights of ``indices`` for a sum of |.|^p: the sum over an index's
        draws of scale^p = count_i / (m q_i)."""
        position = {int(i): k for k, i in enumerate(self.indices)}
        weights = np.zeros(len(self.indices))
        np.add.at(weights, [position[int(i)] for i in self.draws], self.row_scales(p) ** p)
        return weights


def sample_distinct(q: np.ndarray, budget: int, rng: np.random.Generator, oracle: Callable[[int], object] | None = None,
                    chunk: int = 1024, max_draws: int | None = None) -> Query:
    """Draw i.i.d. from ``q`` (with replacement) until ``budget`` distinct indices are drawn; each
    is labelled by ``oracle`` the first time it appears."""
    q = np.asarray(q, dtype=float)
    if q.ndim != 1 or np.any(q < 0) or not np.isclose(q.sum(), 1.0):
        raise BadInputError("q must be a probability vector")
    positive = int(np.count_nonzero(q))
    if not 1 <= budget <= positive:
        raise BadInputError(f"budget must be in [1, {positive}] (the pool's rows with q > 0), got {budget}")
    max_draws = max_draws or max(10**6, 1000 * len(q))
    seen = np.zeros(len(q), dtype=bool)
    order: list[int] = []
    draws: list[np.ndarray] = []
    total = 0
    while len(order) < budget:
        if total >= max_draws:
            raise RuntimeError(f"{budget} distinct indices not reached in {max_draws} draws")
        batch = rng.choice(len(q), size=chunk, p=q)
        values, first = np.unique(batch, return_index=True)
        fresh = np.sort(first[~seen[values]])  # positions of this batch's first new indices
        need = budget - len(order)
        if len(fresh) >= need:
            batch, fresh = batch[: fresh[need - 1] + 1], fresh[:need]
        new = batch[fresh]
        seen[new] = True
        order += new.tolist()
        draws.append(batch)
        total += len(batch)
    query = Query.from_draws(np.concatenate(draws), q)
    query.labels = [oracle(int(i)) for i in query.indices] if oracle is not None else []
    return query


class Lewis:
    """The sampler of Alg. 1 (and its baselines by ``sampler``) over k representations of one pool."""

    name = "lewis"
    config_class = LewisConfig

    def __init__(self, config: LewisConfig | None = None):
        self.config = config or LewisConfig()

    def scores(self, features: Sequence[np.ndarray]) -> np.ndarray:
        """s over the pool (unnormalised): max_j Lewis weights, ones (uniform) or one leverage."""
        c = self.config
        if c.sampler == "uniform":
            return np.ones(len(features[0]))
        if c.sampler == "leverage_single":
            if c.reference >= len(features):
                raise BadInputError(f"reference {c.reference}: only {len(features)} representations")
            return leverage_scores(features[c.reference])
        return max_lewis_scores(features, c.p, tol=c.tol, max_iter=c.max_iter, check=c.check)

    def query(self, features: Sequence[np.ndarray], budget: int, rng: np.random.Generator,
              oracle: Callable[[int], object] | None = None) -> Query:
        s = self.scores(features)
        return sample_distinct(s / s.sum(), budget, rng, oracle)

    def train_weights(self, query: Query, labelled: int, regression: bool) -> np.ndarray:
        """The per-example weights of [labelled; queried] (Alg. 1 line 10: the labelled rows 1).
        The uniform sampler is the Random baseline: weight 1 everywhere (its (m q)^-1 = n_u / m is
        a constant that corrects nothing and would only shift weight from the initial rows)."""
        use = (regression or self.config.classification_weights) and self.config.sampler != "uniform"
        queried = query.loss_weights(self.config.p) if use else np.ones(len(query.indices))
        return np.concatenate([np.ones(labelled), queried])

"""Simulated crowds, majority vote, and the family's baselines (majority vote + CE, CrowdLayer).

Simulator (the CCC spec's Beta-sparse recipe; the paper's exact one was not retrieved, so this is
the toolkit's choice): annotator r has an activity a_r ~ Beta(alpha, beta) (Beta(0.5, 2): a long
tail of annotators who label very little); instance i gets m_i = 1 + Binomial(R - 1, (m - 1)/(R - 1))
annotators, drawn without replacement with probability proportional to a_r, and each labels it
with its own confusion matrix T_r (rows: true class, columns: given label). ``assignment:
uniform`` ignores the activity (every annotator equally likely, about N m / R labels each, no
sparse annotators: AIDTM's code's setting); ``beta`` (default) is the sparse one. Regimes:

- ``ind``: each T_r drawn independently, diagonal ~ U[diag_low, diag_high], the rest of each row
  spread by a Dirichlet(1);
- ``corr``: ``groups`` latent matrices T_g drawn as above, T_r = (1 - jitter) T_g + jitter D_r with
  D_r's rows Dirichlet(1): annotators of a group err alike.
- ``idn`` (AIDTM's code, instance-dependent, Xia et al. 2020): ``groups`` annotator types; per type,
  W_t ~ N(0, 1)^(K x d x K) and flip rates rho_i ~ TruncNormal(flip_rate, 0.1, [0, 0.6]); instance i
  is labelled from rho_i softmax(x_i W_t[y_i], y_i masked) + (1 - rho_i) e_(y_i), with x_i / |x_i|
  (the code uses raw pixels, which makes the softmax one-hot). ``transitions`` then holds each
  type's mean matrix per true class.

Labels are an N x R int64 matrix, -1 where r did not label i.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from curate.core.errors import BadInputError
from vision.train import Batch, Method

REGIMES = ("ind", "corr", "idn")
ASSIGNMENTS = ("beta", "uniform")
MISSING = -1


@dataclass
class AnnotatorConfig:
    regime: str = "corr"
    annotators: int = 100
    mean_labels: float = 2.5  # m: the mean number of labels per instance
    alpha: float = 0.5  # Beta(alpha, beta) activity
    beta: float = 2.0
    diag_low: float = 0.4
    diag_high: float = 0.9
    groups: int = 5  # corr: latent annotator groups
    jitter: float = 0.1  # corr: weight of an annotator's own Dirichlet rows
    flip_rate: float = 0.4  # idn: mean flip rate
    assignment: str = "beta"  # beta: activity-weighted (sparse annotators); uniform: activity ignored
    seed: int = 0

    def __post_init__(self) -> None:
        if self.regime not in REGIMES:
            raise BadInputError(f"regime must be one of {', '.join(REGIMES)}, got '{self.regime}'")
        if self.assignment not in ASSIGNMENTS:
            raise BadInputError(f"assignment must be one of {', '.join(ASSIGNMENTS)}, got '{self.assignment}'")
        if self.annotators < 1:
            raise BadInputError(f"annotators must be at least 1, got {self.annotators}")
        if not 1 <= self.mean_labels <= self.annotators:
            raise BadInputError(f"mean_labels must be in [1, annotators], got {self.mean_labels}")
        if self.alpha <= 0 or self.beta <= 0:
            raise BadInputError(f"alpha and beta must be positive, got {self.alpha}, {self.beta}")
        if not 0 <= self.diag_low <= self.diag_high <= 1:
            raise BadInputError(f"diag_low/diag_high must satisfy 0 <= low <= high <= 1, "
                                f"got {self.diag_low}, {self.diag_high}")
        if not 0 <= self.flip_rate <= 0.6:
            raise BadInputError(f"flip_rate must be in [0, 0.6], got {self.flip_rate}")
        if self.groups < 1 or not 0 <= self.jitter <= 1:
            raise BadInputError(f"groups must be >= 1 and jitter in [0, 1], got {self.groups}, {self.jitter}")


@dataclass
class Crowd:
    labels: np.ndarray  # N x R, MISSING where not labelled
    transitions: np.ndarray  # R x K x K, the true confusion matrices
    activity: np.ndarray  # R, the Beta draws

    def accuracy(self, truth: np.ndarray) -> float:
        """The share of given labels that are right (the raw annotation accuracy)."""
        seen = self.labels != MISSING
        return float((self.labels == truth[:, None])[seen].mean())

    def counts(self) -> np.ndarray:
        return (self.labels != MISSING).sum(0)


def _confusion(k: int, low: float, high: float, rng: np.random.Generator) -> np.ndarray:
    diagonal = rng.uniform(low, high, k)
    t = rng.dirichlet(np.ones(k - 1), size=k) * (1 - diagonal)[:, None]
    return np.stack([np.insert(t[j], j, diagonal[j]) for j in range(k)])


def _instance_noise(truth: np.ndarray, k: int, features: np.ndarray, rate: float,
                    rng: np.random.Generator) -> np.ndarray:
    """N x K label distributions of one annotator type (see ``idn`` in the module docstring)."""
    from scipy.stats import truncnorm

    x = features / np.linalg.norm(features, axis=1, keepdims=True).clip(1e-12)
    flip = truncnorm.rvs((0 - rate) / 0.1, (0.6 - rate) / 0.1, loc=rate, scale=0.1, size=len(x), random_state=rng)
    w = rng.normal(size=(k, x.shape[1], k))
    scores = np.einsum("nd,ndk->nk", x, w[truth])
    scores[np.arange(len(x)), truth] = -np.inf
    others = np.exp(scores - scores.max(1, keepdims=True))
    others /= others.sum(1, keepdims=True)
    return flip[:, None] * others + (1 - flip)[:, None] * np.eye(k)[truth]


def simulate(truth: np.ndarray, num_classes: int, config: AnnotatorConfig, features: np.ndarray | None = None) -> Crowd:
    """A seeded sparse crowd for the true labels ``truth`` (see the module docstring); ``features``
    (N x d) are needed by the ``idn`` regime."""
    rng = np.random.default_rng(config.seed)
    n, r, k = len(truth), config.annotators, num_classes
    kind = None
    if config.regime == "idn":
        if features is None or len(features) != n:
            raise BadInputError("annotators.regime 'idn' needs one feature row per instance")
        kind = rng.integers(config.groups, size=r)
        noise = np.stack([_instance_noise(truth, k, features, config.flip_rate, rng) for _ in range(config.groups)])
        mean = np.stack([[noise[t][truth == c].mean(0) if (truth == c).any() else np.eye(k)[c] for c in range(k)]
                         for t in range(config.groups)])
        transitions = mean[kind]
    elif config.regime == "ind":
        transitions = np.stack([_confusion(k, config.diag_low, config.diag_high, rng) for _ in range(r)])
    else:
        shared = np.stack([_confusion(k, config.diag_low, config.diag_high, rng) for _ in range(config.groups)])
        own = rng.dirichlet(np.ones(k), size=(r, k))
        transitions = (1 - config.jitter) * shared[rng.integers(config.groups, size=r)] + config.jitter * own
    activity = rng.beta(config.alpha, config.beta, r)
    p = (activity + 1e-12) / (activity + 1e-12).sum() if config.assignment == "beta" else np.full(r, 1.0 / r)
    extra = rng.binomial(r - 1, (config.mean_labels - 1) / max(r - 1, 1), n) if r > 1 else np.zeros(n, int)
    labels = np.full((n, r), MISSING, dtype=np.int64)
    for i in range(n):
        for who in rng.choice(r, 1 + extra[i], replace=False, p=p):
            given = transitions[who, truth[i]] if kind is None else noise[kind[who], i]
            labels[i, who] = rng.choice(k, p=given)
    return Crowd(labels, transitions, activity)


def majority_vote(labels: np.ndarray, num_classes: int, seed: int = 0) -> np.ndarray:
    """The most frequent label of each row (ties broken at random, seeded); -1 where none."""
    votes = np.stack([(labels == c).sum(1) for c in range(num_classes)], 1).astype(float)
    votes += np.random.default_rng(seed).uniform(0, 0.5, votes.shape) * (votes > 0)
    return np.where(votes.max(1) > 0, votes.argmax(1), MISSING)


class CrowdMethod(Method):
    """A method trained on the N x R annotation matrix; the runner sets ``num_annotators`` first."""

    num_annotators = 0

    def train_labels(self, labels: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
        """The per-sample labels handed to :func:`vision.train.fit` (default: the matrix itself)."""
        return labels

    def crowd_metrics(self, truth: np.ndarray, crowd: Crowd) -> dict:
        """Method-specific diagnostics for the result (e.g. the distilled set's label accuracy)."""
        return {}

    def finish(self, data, labels: np.ndarray, train) -> dict | None:
        """A stage after the shared loop (e.g. CCC's fine-tune); its record, or None for none."""
        return None


class MajorityVote(CrowdMethod):
    """Cross-entropy on each instance's majority vote (the ``ce`` loss of the noisy family)."""

    name = "mv"

    def train_labels(self, labels: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
        return majority_vote(labels, num_classes, seed)


def crowd_loss(logits: torch.Tensor, weights: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CrowdLayer-MW loss: q_r(x) = softmax(p(x)^T W_r) with p = softmax(logits) and ``weights``
    R x K x K (or, per observed pair, already indexed); the mean of -log(q_r(x)[label] + 1e-5) over
    the observed (i, r) pairs only (labels == -1 contribute nothing)."""
    rows, who = (labels != MISSING).nonzero(as_tuple=True)
    p = logits.float().softmax(-1)[rows]
    q = torch.einsum("nj,njk->nk", p, weights[who]).softmax(-1)
    picked = q.gather(1, labels[rows, who][:, None]).squeeze(1)
    return -torch.log(picked + 1e-5).sum() / max(len(rows), 1)


def implied_confusion(weights: torch.Tensor) -> torch.Tensor:
    """T̂_r[j, :] = softmax(W_r[j, :]), for reading the learnt confusions."""
    return weights.detach().softmax(-1)


class Confusions(nn.Module):
    """Per-annotator confusion parameters W (R x K x K), initialised at the identity."""

    def __init__(self, annotators: int, num_classes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.eye(num_classes).repeat(annotators, 1, 1))


class CrowdLayer(CrowdMethod):
    """CrowdLayer (Rodrigues & Pereira 2018), MW form: one network and a confusion per annotator."""

    name = "crowdlayer"

    def modules(self, model: nn.Module, data) -> dict[str, nn.Module]:
        self.confusions = Confusions(self.num_annotators, data.num_classes)
        return {"confusions": self.confusions}

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return crowd_loss(model(batch.weak), self.confusions.weight, batch.labels)

"""The baselines of the open-set papers: uncertainty sampling on the target model (closed-set
active learning, which open-set pools defeat: unknown-class images look uncertain) and LfOSA
(Ning et al., CVPR 2022), the known-class detector the open-set papers compare with.

LfOSA as implemented: a (K+1)-way detector trained with temperature-scaled cross-entropy
(logits / T, T = 0.5) on the labelled known images and the queried unknowns (class K); each
unlabelled image gets its maximum activation value (MAV) and predicted class; images predicted
unknown are dropped; per predicted known class, a 2-component Gaussian mixture (scikit-learn) on
the MAVs gives each image's probability of the higher-mean component; the ``budget`` highest
probabilities are queried. Left out of LfOSA: its separate data-augmented detector schedule
(the detector here trains with the family's settings).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from curate.core.errors import BadInputError
from vision.active.base import RoundState, Strategy, probabilities, top, train_classifier
from vision.train import Batch, Method, Trained

MEASURES = ("entropy", "margin", "least_confidence")


def uncertainty(p: torch.Tensor, measure: str) -> torch.Tensor:
    """Per-row uncertainty of probabilities ``p`` (higher = more uncertain)."""
    if measure == "entropy":
        return -(p * p.clamp_min(1e-12).log()).sum(1)
    if measure == "margin":
        best = p.topk(2, dim=1).values
        return -(best[:, 0] - best[:, 1])
    if measure == "least_confidence":
        return 1 - p.max(1).values
    raise ValueError(f"unknown uncertainty measure {measure!r}")


@dataclass
class UncertaintyConfig:
    measure: str = "entropy"  # entropy | margin | least_confidence

    def __post_init__(self) -> None:
        if self.measure not in MEASURES:
            raise BadInputError(f"method.measure must be one of {', '.join(MEASURES)}, got {self.measure!r}")


class Uncertainty(Strategy):
    """Query the unlabelled images on which the target model is most uncertain."""

    name = "uncertainty"
    config_class = UncertaintyConfig

    def __init__(self, config: UncertaintyConfig | None = None):
        self.config = config or UncertaintyConfig()

    def query(self, state: RoundState, target: Trained, budget: int) -> np.ndarray:
        scores = uncertainty(probabilities(target, state.images[state.unlabeled]), self.config.measure)
        return top(scores.numpy(), state.unlabeled, budget, state.seed)


class TemperatureCE(Method):
    """Cross-entropy on logits / T (LfOSA's detector)."""

    name = "temperature_ce"

    def __init__(self, temperature: float):
        self.temperature = temperature

    def loss(self, model, batch: Batch) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(model(batch.weak) / self.temperature, batch.labels)


@dataclass
class LfOSAConfig:
    temperature: float = 0.5

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise BadInputError(f"method.temperature must be positive, got {self.temperature}")


def known_probability(mav: np.ndarray, predicted: np.ndarray, num_known: int, seed: int) -> np.ndarray:
    """Per image, the probability (2-component GMM on its predicted class's MAVs) of the component
    with the larger mean; 0 for images predicted unknown (class ``num_known``)."""
    from sklearn.mixture import GaussianMixture

    score = np.zeros(len(mav))
    for c in range(num_known):
        rows = np.flatnonzero(predicted == c)
        if len(rows) < 2 or np.ptp(mav[rows]) == 0:
            score[rows] = 0.5
            continue
        gmm = GaussianMixture(2, max_iter=100, tol=1e-3, reg_covar=5e-4, random_state=seed)
        gmm.fit(mav[rows, None])
        score[rows] = gmm.predict_proba(mav[rows, None])[:, int(np.argmax(gmm.means_[:, 0]))]
    return score


class LfOSA(Strategy):
    """LfOSA: query the images a (K+1)-way detector most confidently assigns to a known class."""

    name = "lfosa"
    config_class = LfOSAConfig

    def __init__(self, config: LfOSAConfig | None = None):
        self.config = config or LfOSAConfig()
        self._predicted_unknown = 0

    def query(self, state: RoundState, target: Trained, budget: int) -> np.ndarray:
        k = state.num_known
        rows = np.concatenate([state.labeled, state.unknown])
        labels = np.concatenate([state.labels, np.full(len(state.unknown), k)])
        detector = train_classifier(TemperatureCE(self.config.temperature), state, rows, labels, k + 1)
        logits = detector.predict(state.images[state.unlabeled]).float().cpu()
        mav, predicted = (t.numpy() for t in logits.max(1))
        score = known_probability(mav.astype(np.float64), predicted, k, state.seed)
        candidates = predicted < k
        self._predicted_unknown = int((~candidates).sum())
        chosen = top(score[candidates], state.unlabeled[candidates], budget, state.seed)
        if len(chosen) < budget:  # fewer predicted known than the budget: fill by the same score
            rest = top(score[~candidates], state.unlabeled[~candidates], budget - len(chosen), state.seed)
            chosen = np.concatenate([chosen, rest])
        return chosen

    def round_metrics(self) -> dict[str, int]:
        return {"predicted_unknown": self._predicted_unknown}

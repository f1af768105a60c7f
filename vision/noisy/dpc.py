"""DPC: Dirichlet-based Prediction Calibration (Zong et al., AAAI 2024, arXiv 2401.07062).

- Calibrated softmax: with evidence e_c = exp(z_c) and a constant K (default 10 / C),
  p_c = (e_c + K) / Σ_k (e_k + K). Adding one constant to every logit changes p (plain softmax
  does not: it is translation invariant), so logits must carry their scale.
- The same p is the mean of a Dirichlet with α = e + K. The evidential (EDL) loss is the negative
  log of p at the given label plus a KL term that pulls the Dirichlet of the *other* classes,
  α̃ = y + (1 - y) α / K, towards the uniform Dir(1): it drives the labelled logit positive and
  large and the others negative and small.
- Large-margin selection: margin_i = z_{ỹ_i} - max_{c ≠ ỹ_i} z_c, scaled to [0, 1]; a two-component
  Gaussian mixture over the margins; samples whose posterior for the high-mean component exceeds
  ``threshold`` are trusted and trained on.

The paper then trains two networks with MixMatch on the split; here the selected samples train
the network with the EDL loss (no semi-supervised part).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from vision.train import Batch, Method, predict


@dataclass
class DPCConfig:
    constant: float | None = None  # K; default 10 / num_classes as in the paper's code
    kl_weight: float = 0.5  # times KL / C
    threshold: float = 0.5  # GMM posterior for "clean"
    seed: int = 0


def evidence_constant(num_classes: int, constant: float | None = None) -> float:
    return constant if constant is not None else 10.0 / num_classes


def calibrated_softmax(logits: torch.Tensor, constant: float) -> torch.Tensor:
    alpha = torch.exp(logits) + constant
    return alpha / alpha.sum(-1, keepdim=True)


def edl_loss(logits: torch.Tensor, labels: torch.Tensor, constant: float, kl_weight: float = 0.5) -> torch.Tensor:
    """Per-sample EDL loss: -log p_ỹ under the calibrated softmax + kl_weight / C x
    KL(Dir(α̃) || Dir(1)) with α̃ = y + (1 - y) α / K."""
    logits = logits.float()
    num_classes = logits.shape[-1]
    alpha = torch.exp(logits) + constant
    onehot = nn.functional.one_hot(labels, num_classes).float()
    nll = torch.log(alpha.sum(-1)) - torch.log((alpha * onehot).sum(-1))
    rest = onehot + (1 - onehot) * alpha / constant
    total = rest.sum(-1)
    kl = (torch.lgamma(total) - torch.lgamma(torch.tensor(float(num_classes), device=logits.device))
          - torch.lgamma(rest).sum(-1)
          + ((rest - 1) * (torch.digamma(rest) - torch.digamma(total)[:, None])).sum(-1))
    return nll + kl_weight * kl / num_classes


def logit_margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """z_ỹ - max over the other classes."""
    given = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return given - others.max(1).values


def select_by_margin(margins: np.ndarray | torch.Tensor, threshold: float = 0.5, seed: int = 0) -> np.ndarray:
    """Two-component GMM over min-max scaled margins; True where P(high-mean component) > threshold."""
    from sklearn.mixture import GaussianMixture

    m = np.asarray(margins, dtype=np.float64).reshape(-1, 1)
    span = m.max() - m.min()
    scaled = (m - m.min()) / span if span > 0 else np.zeros_like(m)
    gmm = GaussianMixture(n_components=2, max_iter=20, tol=1e-3, reg_covar=5e-4, random_state=seed).fit(scaled)
    posterior = gmm.predict_proba(scaled)[:, int(np.argmax(gmm.means_.ravel()))]
    return posterior > threshold


class DPC(Method):
    name = "dpc"
    config_class = DPCConfig

    def __init__(self, config: DPCConfig | None = None) -> None:
        self.config = config or DPCConfig()
        self.constant = 1.0

    def modules(self, model, data):
        self.constant = evidence_constant(data.num_classes, self.config.constant)
        return {}

    def select(self, model, images, labels, epoch):
        logits = predict(model, images).cpu()
        return torch.as_tensor(select_by_margin(logit_margins(logits, labels), self.config.threshold, self.config.seed))

    def loss(self, model, batch: Batch) -> torch.Tensor:
        losses = edl_loss(model(batch.weak), batch.labels, self.constant, self.config.kl_weight)
        weights = batch.selected.float()
        return (losses * weights).sum() / weights.sum().clamp_min(1.0)

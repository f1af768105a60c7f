"""DPC: Dirichlet-based Prediction Calibration (Zong et al., AAAI 2024, arXiv 2401.07062).

- Calibrated softmax: with evidence e_c = exp(z_c) and a constant K (default 10 / C),
  p_c = (e_c + K) / Σ_k (e_k + K). Adding one constant to every logit changes p (plain softmax
  does not: it is translation invariant), so logits must carry their scale.
- The same p is the mean of a Dirichlet with α = e + K. The evidential (EDL) loss is the negative
  log of p at the given label plus a KL term that pulls the Dirichlet of the *other* classes,
  α̃ = y + (1 - y) α / K, towards the uniform Dir(1): it drives the labelled logit positive and
  large and the others negative and small.
- Large-margin selection: margin_i = z_{ỹ_i} - max_{c ≠ ỹ_i} z_c, scaled to [0, 1]; a two-component
  Gaussian mixture over the margins; w_i = the posterior of the high-mean component; samples with
  w_i > ``threshold`` are selected. Then, per class (not in the paper's code, which can leave a
  class empty): a class with fewer than ``class_floor`` x (selected / C) selected samples is topped
  up with its largest-margin samples, whose w is raised to ``threshold`` (at w >= 1/2 the refined
  label below keeps the given label as its arg-max; a lower w would hand it back to the network's
  prediction, and a class the network does not predict would stay empty).
- Two networks (the second is a module of the method: optimised and checkpointed with the model,
  a copy of the model re-initialised from a seed drawn from the run's global generator, so that
  it never starts equal to the model). Each network's selection is the
  labelled set of the OTHER network (co-divide).
- Warmup: EDL loss on every sample for both networks (+ the negative-entropy confidence penalty
  when ``confidence_penalty``: the paper's code turns it on for asymmetric noise).
- After warmup, per network and batch, MixMatch: the unselected samples get the co-guessed label
  sharpen(mean of both networks' calibrated p over the two views, T); the selected ones the refined
  label sharpen(w y + (1 - w) mean of this network's p over the two views, T). Both views of both
  parts are mixed with a random permutation, λ ~ Beta(α, α), λ' = max(λ, 1 - λ). Labelled loss:
  λ' EDL(argmax target_a) + (1 - λ') EDL(argmax target_b) on the mixed labelled rows (the paper's
  code uses the arg-max of the mixed targets); unlabelled loss: mean squared error between the
  second head's calibrated p and the mixed targets, weight ``lambda_u`` ramped up linearly over
  ``rampup_epochs`` from ``rampup_start``; plus the uniform-prior penalty
  Σ_c π_c log(π_c / p̄_c), π uniform, p̄ the batch mean of the calibrated p of all mixed rows.
- Second head (as in the paper's code, ``linear2``): Linear(d, 1024), ReLU, Dropout(0.5),
  Linear(1024, C) on the penultimate features; it only serves the unlabelled loss (not computed
  when ``lambda_u`` is 0, the paper's setting for 10 classes).
- Test: the sum of both networks' logits (first head).

Pitfall of the exponential evidence (measured on digits): the gradient of a class's loss through
its logit is about exp(z) / K once exp(z) << K, so a class pushed that low by a few large SGD steps
(or by the KL term on its noisily labelled samples) never comes back: at the code's lr 0.02 a
third of the digits runs ended warmup with a class predicted for under 3% of the training images,
and it stayed at 0 test accuracy. The digits recipe therefore uses lr 0.01, Beta(0.5, 0.5) mixup
and the KL anneal, chosen on a noisy validation split (``validation`` in the experiment config;
no clean label or test image), see ``recipes/vision/dpc.yaml``.

Not reproduced: the paper's loaders (separate labelled and unlabelled batches of 64, an epoch of
|labelled| / 64 steps, two weak views); here each shared-loop batch is split by the masks, the two
views are the loop's weak and strong ones, both networks step together on the summed loss (their
gradients are separate), and the other network's guesses are taken in train mode under no_grad.
A pretrained backbone would lose its weights in the second network's re-initialisation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from vision.backbones import reinitialised_copy
from vision.train import Batch, Method, predict


@dataclass
class DPCConfig:
    constant: float | None = None  # K; default 10 / num_classes as in the paper's code
    kl_weight: float = 0.5  # times KL / C
    threshold: float = 0.5  # GMM posterior for "clean" (p_threshold)
    class_floor: float = 0.5  # per class at least this x (selected / C); 0: plain GMM selection
    temperature: float = 0.5  # sharpening T
    mix_alpha: float = 4.0  # λ ~ Beta(α, α)
    lambda_u: float = 0.0  # unlabelled-loss weight: 0 for 10 classes, 25 for 100 in the paper's runs
    rampup_epochs: int = 16
    rampup_start: int = 5  # the epoch the ramp starts (the run's warmup_epochs)
    prior_weight: float = 1.0  # the uniform-prior penalty
    confidence_penalty: bool = False  # negative entropy in warmup (the paper's asymmetric-noise runs)
    head_hidden: int = 1024  # the second head's hidden width (2 x 512 in the paper's code)
    kl_anneal_epochs: int = 0  # KL weight x min(1, epoch / this), as in EDL (Sensoy et al.); 0: constant (DPC's code)
    seed: int = 0  # the GMM and the mixup draws


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


def clean_posterior(margins: np.ndarray | torch.Tensor, seed: int = 0) -> np.ndarray:
    """Two-component GMM over min-max scaled margins; per sample P(high-mean component)."""
    from sklearn.mixture import GaussianMixture

    m = np.asarray(margins, dtype=np.float64).reshape(-1, 1)
    span = m.max() - m.min()
    scaled = (m - m.min()) / span if span > 0 else np.zeros_like(m)
    gmm = GaussianMixture(n_components=2, max_iter=20, tol=1e-3, reg_covar=5e-4, random_state=seed).fit(scaled)
    posterior = gmm.predict_proba(scaled)[:, int(np.argmax(gmm.means_.ravel()))]
    return posterior


def select_by_margin(margins: np.ndarray | torch.Tensor, threshold: float = 0.5, seed: int = 0) -> np.ndarray:
    """True where the GMM's clean posterior exceeds ``threshold``."""
    return clean_posterior(margins, seed) > threshold


def balance_per_class(selected: np.ndarray, margins: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor,
                      num_classes: int, floor: float) -> np.ndarray:
    """Top up every class to ceil(floor x selected / C) selected samples (at most its size) with its
    largest-margin unselected samples."""
    chosen, margins, labels = selected.copy(), np.asarray(margins), np.asarray(labels)
    need = int(np.ceil(floor * chosen.sum() / num_classes))
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        missing = min(need, len(members)) - int(chosen[members].sum())
        if missing > 0:
            rest = members[~chosen[members]]
            chosen[rest[np.argsort(-margins[rest], kind="stable")[:missing]]] = True
    return chosen


def sharpen(p: torch.Tensor, temperature: float) -> torch.Tensor:
    q = p ** (1.0 / temperature)
    return q / q.sum(-1, keepdim=True)


def co_guess(views: list[torch.Tensor], temperature: float) -> torch.Tensor:
    """The guessed label: the sharpened mean of the given probabilities (both networks x both views)."""
    return sharpen(torch.stack(views).mean(0), temperature)


def refine(onehot: torch.Tensor, clean: torch.Tensor, own: torch.Tensor, temperature: float) -> torch.Tensor:
    """Label refinement: sharpen(w y + (1 - w) p) with w the clean posterior, p the network's mean."""
    w = clean[:, None]
    return sharpen(w * onehot + (1 - w) * own, temperature)


def mix_lambda(uniform: float, alpha: float) -> float:
    """λ' = max(λ, 1 - λ) with λ ~ Beta(α, α), λ the Beta quantile of ``uniform``."""
    from scipy.special import betaincinv

    lam = float(betaincinv(alpha, alpha, uniform))
    return max(lam, 1.0 - lam)


def mixup(inputs: torch.Tensor, targets: torch.Tensor, lam: float, perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return lam * inputs + (1 - lam) * inputs[perm], lam * targets + (1 - lam) * targets[perm]


def prior_penalty(probs: torch.Tensor) -> torch.Tensor:
    """Σ_c π_c log(π_c / p̄_c) with π uniform and p̄ the mean prediction: KL(π || p̄)."""
    mean = probs.mean(0)
    prior = torch.full_like(mean, 1.0 / len(mean))
    return (prior * torch.log(prior / mean)).sum()


class DPC(Method):
    name = "dpc"
    config_class = DPCConfig

    def __init__(self, config: DPCConfig | None = None) -> None:
        self.config = config or DPCConfig()
        self.constant = 1.0

    def modules(self, model, data):
        c = self.config
        self.constant = evidence_constant(data.num_classes, c.constant)
        self.num_classes = data.num_classes
        self.masks: list[torch.Tensor] | None = None  # per network: its own selection (None in warmup)
        self.clean: list[torch.Tensor] = []  # per network: its clean posteriors w
        self.mix = torch.Generator().manual_seed(c.seed)
        # A seed from the run's (seeded) global generator: never the model's own seed by chance.
        self.net2 = reinitialised_copy(model, int(torch.randint(0, 2**31 - 1, (1,))))
        dim = model.classifier.in_features
        self.heads = [self._head(dim, data.num_classes), self._head(dim, data.num_classes)]
        return {"net2": self.net2, "head1": self.heads[0], "head2": self.heads[1]}

    def _head(self, dim: int, classes: int) -> nn.Module:
        hidden = self.config.head_hidden
        return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(0.5), nn.Linear(hidden, classes))

    def generators(self):
        return {"mix": self.mix}

    def select(self, model, images, labels, epoch):
        """Both networks' selections; returns the model's (the samples net2 trains on as labelled)."""
        c = self.config
        self.masks, self.clean = [], []
        for net in (model, self.net2):
            margins = logit_margins(predict(net, images).cpu(), labels)
            w = clean_posterior(margins, c.seed)
            chosen = w > c.threshold
            if c.class_floor > 0:
                chosen = balance_per_class(chosen, margins.numpy(), labels.numpy(), self.num_classes, c.class_floor)
                w = np.where(chosen, np.maximum(w, c.threshold), w)  # topped-up samples keep their label
            self.masks.append(torch.as_tensor(chosen))
            self.clean.append(torch.as_tensor(w, dtype=torch.float32))
        return self.masks[0]

    def loss(self, model, batch: Batch) -> torch.Tensor:
        nets = (model, self.net2)
        if self.masks is None:
            return sum(self._warmup(net, batch) for net in nets)
        with torch.no_grad():
            probs = [[calibrated_softmax(net(view).float(), self.constant) for view in (batch.weak, batch.strong)]
                     for net in nets]
            guess = co_guess([p for pair in probs for p in pair], self.config.temperature)
        rows = batch.index.cpu()
        total = torch.zeros((), device=batch.weak.device)
        for i, net in enumerate(nets):
            other = 1 - i  # net i learns from the other network's selection (co-divide)
            chosen = self.masks[other][rows].to(batch.weak.device)
            clean = self.clean[other][rows].to(batch.weak.device)
            total = total + self._mixmatch(net, self.heads[i], batch, chosen, clean, probs[i], guess)
        return total

    def _kl(self, epoch: int) -> float:
        anneal = self.config.kl_anneal_epochs
        return self.config.kl_weight * (min(1.0, epoch / anneal) if anneal > 0 else 1.0)

    def _warmup(self, net: nn.Module, batch: Batch) -> torch.Tensor:
        logits = net(batch.weak).float()
        loss = edl_loss(logits, batch.labels, self.constant, self._kl(batch.epoch)).mean()
        if self.config.confidence_penalty:
            p = calibrated_softmax(logits, self.constant)
            loss = loss + (p * p.log()).sum(1).mean()
        return loss

    def _mixmatch(self, net: nn.Module, head: nn.Module, batch: Batch, chosen: torch.Tensor, clean: torch.Tensor,
                  own: list[torch.Tensor], guess: torch.Tensor) -> torch.Tensor:
        c, kl = self.config, self._kl(batch.epoch)
        onehot = nn.functional.one_hot(batch.labels, self.num_classes).float()
        refined = refine(onehot[chosen], clean[chosen], (own[0][chosen] + own[1][chosen]) / 2, c.temperature)
        unsure = ~chosen
        inputs = torch.cat([batch.weak[chosen], batch.strong[chosen], batch.weak[unsure], batch.strong[unsure]])
        targets = torch.cat([refined, refined, guess[unsure], guess[unsure]])
        lam = mix_lambda(float(torch.rand((), generator=self.mix)), c.mix_alpha)
        perm = torch.randperm(len(inputs), generator=self.mix).to(inputs.device)
        mixed, mixed_targets = mixup(inputs, targets, lam, perm)
        features = net.features(mixed)
        logits = net.classifier(features).float()
        n = 2 * int(chosen.sum())
        loss = c.prior_weight * prior_penalty(calibrated_softmax(logits, self.constant))
        if n:
            hard_a, hard_b = targets[:n].argmax(1), targets[perm][:n].argmax(1)
            loss = loss + (lam * edl_loss(logits[:n], hard_a, self.constant, kl)
                           + (1 - lam) * edl_loss(logits[:n], hard_b, self.constant, kl)).mean()
        ramp = min(max((batch.epoch - c.rampup_start) / max(c.rampup_epochs, 1), 0.0), 1.0)
        if c.lambda_u > 0 and n < len(inputs) and ramp > 0:
            p_u = calibrated_softmax(head(features[n:]).float(), self.constant)
            loss = loss + c.lambda_u * ramp * ((p_u - mixed_targets[n:]) ** 2).mean()
        return loss

    def predict(self, model, images):
        """The two-network ensemble: the sum of both networks' logits."""
        return predict(model, images) + predict(self.net2, images)

"""Sel-CL: selective-supervised contrastive learning (Li et al., CVPR 2022, arXiv 2203.04181).

At the start of each epoch after warmup, on the L2-normalised embeddings of every training image:

1. Confident examples. Each sample's k nearest neighbours (cosine, itself excluded) vote with
   their given labels; the vote's winner is a corrected label, and a second vote with the
   corrected labels scores each sample's given label: discrepancy d_i = -log q_i(ỹ_i) (q clipped
   to [0.01, 0.99]). Counting, per class, the samples whose second-vote winner equals their given
   label, the ``alpha`` quantile of those counts (the median by default) is every class's budget;
   each class keeps its budget of lowest-discrepancy samples.
2. Confident pairs. Pairs of confident examples with the same given label; their embedding
   similarities set a threshold γ (the ``beta`` quantile). Any other pair with the same given label
   and similarity >= γ is a confident pair too. Pairs are decided per batch from the stored
   embeddings (no n x n matrix is kept). With many confident examples γ comes from a sample of
   pairs drawn by the method's own generator (seeded by ``seed``, checkpointed with the run).
3. Loss. A supervised contrastive loss whose positives are the anchor's other view and the views
   of its confident pairs in the batch, plus ``lambda_ce`` x cross-entropy on the confident examples.
   Warmup (before any selection): the contrastive loss with only the other view as positive
   (instance discrimination) plus cross-entropy on every sample.

The paper adds MoCo queues, mixup and a similarity loss; this keeps the selection and the loss.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vision.train import Batch, Method, predict


@dataclass
class SelCLConfig:
    k: int = 20  # neighbours in the vote
    alpha: float = 0.5  # quantile of per-class agreeing counts used as each class's budget
    beta: float = 0.25  # quantile of confident-pair similarities used as the pair threshold
    temperature: float = 0.1
    lambda_ce: float = 1.0
    projection_dim: int = 128
    seed: int = 0  # the pair sample behind γ


def knn_votes(features: torch.Tensor, labels: torch.Tensor, num_classes: int, k: int, chunk: int = 2048) -> torch.Tensor:
    """Per sample, the share of its k nearest neighbours (cosine, self excluded) with each label."""
    feats = nn.functional.normalize(features.float(), dim=1)
    votes = torch.zeros(len(feats), num_classes)
    for s in range(0, len(feats), chunk):
        sims = feats[s:s + chunk] @ feats.T
        sims[torch.arange(len(sims)), torch.arange(s, s + len(sims))] = -2  # not its own neighbour
        neighbours = sims.topk(min(k, len(feats) - 1), dim=1).indices
        votes[s:s + chunk] = nn.functional.one_hot(labels[neighbours], num_classes).float().mean(1)
    return votes


def select_examples(features: torch.Tensor, labels: torch.Tensor, num_classes: int, k: int = 20,
                    alpha: float = 0.5) -> torch.Tensor:
    """Confident examples (bool per sample): step 1 of the module docstring."""
    corrected = knn_votes(features, labels, num_classes, k).argmax(1)
    second = knn_votes(features, corrected, num_classes, k)
    discrepancy = -torch.log(second.gather(1, labels[:, None]).squeeze(1).clamp(0.01, 0.99))
    agree = second.argmax(1) == labels
    counts = torch.tensor([float(agree[labels == c].sum()) for c in range(num_classes)])
    budget = int(torch.quantile(counts, alpha))
    chosen = torch.zeros(len(labels), dtype=torch.bool)
    for c in range(num_classes):
        members = torch.nonzero(labels == c).squeeze(1)
        keep = min(budget, len(members))
        if keep:
            chosen[members[discrepancy[members].topk(keep, largest=False).indices]] = True
    return chosen


def pair_threshold(features: torch.Tensor, labels: torch.Tensor, confident: torch.Tensor, beta: float = 0.25,
                   max_pairs: int = 2_000_000, generator: torch.Generator | None = None) -> float:
    """γ: the ``beta`` quantile of similarities of same-label pairs of confident examples (past
    ``max_pairs`` pairs, a sample of that many drawn from ``generator``, by default one seeded 0)."""
    feats = nn.functional.normalize(features[confident].float(), dim=1)
    y = labels[confident]
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    n = len(y)
    if n * n <= max_pairs:
        sims = feats @ feats.T
        same = (y[:, None] == y[None, :]) & ~torch.eye(n, dtype=torch.bool)
        values = sims[same]
    else:
        i = torch.randint(0, n, (max_pairs,), generator=generator)
        j = torch.randint(0, n, (max_pairs,), generator=generator)
        keep = (y[i] == y[j]) & (i != j)
        values = (feats[i[keep]] * feats[j[keep]]).sum(1)
    return float(torch.quantile(values, beta)) if len(values) else 1.0


def confident_pairs(features: torch.Tensor, labels: torch.Tensor, confident: torch.Tensor, threshold: float) -> torch.Tensor:
    """For the samples of a batch: pair (a, b) is confident when the labels agree and both are
    confident examples, or their similarity reaches the threshold (step 2)."""
    feats = nn.functional.normalize(features.float(), dim=1)
    same = labels[:, None] == labels[None, :]
    both = confident[:, None] & confident[None, :]
    return same & (both | (feats @ feats.T >= threshold))


def supervised_contrastive(z: torch.Tensor, positives: torch.Tensor, temperature: float) -> torch.Tensor:
    """SupCon over the 2B embeddings ``z`` (unit norm): for each anchor, the mean log-probability
    of its positives among all other embeddings. ``positives`` is (2B, 2B) bool without the diagonal."""
    logits = z @ z.T / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    pos = positives & ~self_mask
    return -(log_prob.masked_fill(~pos, 0).sum(1) / pos.sum(1).clamp_min(1)).mean()


class SelCL(Method):
    name = "selcl"
    config_class = SelCLConfig

    def __init__(self, config: SelCLConfig | None = None) -> None:
        self.config = config or SelCLConfig()
        self.confident: torch.Tensor | None = None
        self.embeddings: torch.Tensor | None = None
        self.threshold = 1.0
        self.head: nn.Module | None = None
        self.generator = torch.Generator().manual_seed(self.config.seed)

    def modules(self, model, data):
        self.generator = torch.Generator().manual_seed(self.config.seed)  # afresh for every run
        self.head = nn.Sequential(nn.Linear(model.feature_dim, model.feature_dim), nn.ReLU(),
                                  nn.Linear(model.feature_dim, self.config.projection_dim))
        return {"projection": self.head}

    def generators(self) -> dict[str, torch.Generator]:
        return {"pairs": self.generator}

    def embed(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.head(model.features(x)).float(), dim=1)

    @torch.no_grad()
    def select(self, model, images, labels, epoch):
        was_training = self.head.training
        self.head.eval()
        feats = predict(model, images, features=True)
        self.embeddings = torch.cat([nn.functional.normalize(self.head(feats[s:s + 1024]).float(), dim=1)
                                     for s in range(0, len(feats), 1024)]).cpu()
        self.head.train(was_training)
        num_classes = int(labels.max()) + 1
        self.confident = select_examples(self.embeddings, labels, num_classes, self.config.k, self.config.alpha)
        self.threshold = pair_threshold(self.embeddings, labels, self.confident, self.config.beta,
                                        generator=self.generator)
        return self.confident

    def loss(self, model, batch: Batch) -> torch.Tensor:
        x = torch.cat([batch.weak, batch.strong])
        features = model.features(x)
        z = nn.functional.normalize(self.head(features).float(), dim=1)
        logits = model.classifier(features[: len(batch.labels)])
        n = len(batch.labels)
        own = torch.eye(n, dtype=torch.bool, device=z.device).repeat(2, 2)  # the other view
        if self.confident is None:  # warmup
            positives = own
            ce = nn.functional.cross_entropy(logits, batch.labels)
        else:
            rows = batch.index.cpu()
            pairs = confident_pairs(self.embeddings[rows], batch.labels.cpu(), self.confident[rows],
                                    self.threshold).to(z.device)
            positives = own | pairs.repeat(2, 2)
            trusted = batch.selected.float()
            ce = (nn.functional.cross_entropy(logits, batch.labels, reduction="none") * trusted).sum() / \
                trusted.sum().clamp_min(1.0)
        return supervised_contrastive(z, positives, self.config.temperature) + self.config.lambda_ce * ce

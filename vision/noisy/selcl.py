"""Sel-CL: selective-supervised contrastive learning (Li et al., CVPR 2022, arXiv 2203.04181),
after the authors' code (ShikunLi/Sel-CL).

Networks: the online network (backbone, classifier, a linear projection head to unit-norm
embeddings) and a momentum encoder (a copy of backbone and head, no gradients, updated after every
step to m * itself + (1 - m) * online). Two buffers: a MoCo memory of momentum keys (the negatives
of instance discrimination) and a supervised queue of momentum embeddings of mixed images with
their softmax probabilities, sample indices and given labels (FIFO ring buffers; the oldest entries
are overwritten).

Warmup (label-free): MoCo instance discrimination only, query = online embedding of the weak view,
key = momentum embedding of the strong view, negatives = the memory; no label is used (the queue
is already filled, as in the code).

At the start of each epoch after warmup, on the online embeddings of every training image:
1. Confident examples: kNN votes (k neighbours, cosine, self excluded) with the given labels
   correct the labels; a second vote with the corrected labels scores each given label,
   discrepancy -log q(ỹ) (q clipped to [0.01, 0.99]); the ``alpha`` quantile of per-class counts of
   agreeing samples is each class's budget of lowest-discrepancy samples.
2. Confident pairs: same given label and both confident, or same given label and similarity >= γ,
   the ``beta`` quantile of similarities of same-label confident pairs (a seeded sample of pairs on
   large data). A sample is paired with itself.

Loss after warmup (one batch, both views mixed up: x' = λx + (1-λ)x[π], λ = max(l, 1-l), l ~ Beta):
- selective supervised contrastive loss with mixup: for an anchor (mixed image of i with π(i)),
  λ x mean log-probability of the positives of i plus (1-λ) x that of π(i); positives of j = every
  other embedding of a sample paired with j (its other view included); against the batch and, from
  epoch ``queue_begin``, against the supervised queue; only anchors with a confident partner count;
- MoCo loss on the samples without a confident partner;
- ``lambda_ce`` x mixup cross-entropy (λ-mix of the two labels' CE) on the batch's confident examples;
- ``lambda_s`` x similarity loss: binary cross-entropy between the dot product of two samples'
  softmax probabilities and their (λ-mixed) pair mask, over the batch and the queue.

Defaults are the code's CIFAR settings; sizes that depend on the data are scaled by its size:
k = 250 for 50 000 images (0.5 %, at least 10), supervised queue 2 x 1000 per class of 5000
(40 % of the data, at least 256), MoCo memory 10 000 of 50 000 (20 %, at least 256).

Left out (differences from the code): the cross-entropy batch is the batch's confident examples,
not a second batch drawn from them; the similarity loss's gradient is not clipped separately (the
code clips it to norm 0.25 in its own backward pass); the code's step/LR-warmup schedule, its
"complex" augmentations, kNN test accuracy and the Sel-CL+ fine-tuning stage (the shared loop's
cosine schedule, weak/strong views and classifier are used); the code's queue, when it wraps,
writes the last slots; here it is a plain ring buffer; the MoCo term's mask is "no confident
partner in batch or queue" (the code counts slightly differently).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from vision.train import Batch, Method, predict


@dataclass
class SelCLConfig:
    k: int | None = None  # kNN size; None: the code's 250 per 50 000 images, scaled (at least 10)
    alpha: float = 0.5  # quantile of per-class agreeing counts used as each class's budget
    beta: float = 0.25  # quantile of confident-pair similarities used as the pair threshold
    temperature: float = 0.1  # supervised contrastive (sup_t)
    moco_temperature: float = 0.1  # instance discrimination (uns_t)
    lambda_ce: float = 1.0  # lambda_c
    lambda_s: float = 0.01  # similarity loss
    mixup_alpha: float = 1.0  # Beta(a, a) of mixup; 0: no mixup
    momentum: float = 0.999  # momentum encoder (alpha_moving)
    queue: bool = True  # contrast with the supervised queue too (False: the batch only)
    queue_begin: int = 3  # first epoch (0-based) that uses the queue (the code: epoch > 3, 1-based)
    queue_size: int | None = None  # None: 40 % of the data (2 x 1000 per class of 5000), at least 256
    moco_size: int | None = None  # None: 20 % of the data (10 000 of 50 000), at least 256
    projection_dim: int = 128
    seed: int = 0  # mixup permutations, the pair sample behind γ, the memory's initial keys


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


def pairs_between(emb_a: torch.Tensor, lab_a: torch.Tensor, conf_a: torch.Tensor, emb_b: torch.Tensor,
                  lab_b: torch.Tensor, conf_b: torch.Tensor, threshold: float) -> torch.Tensor:
    """Pair (a, b) is confident when the given labels agree and both are confident examples, or
    their similarity reaches the threshold (step 2)."""
    sims = nn.functional.normalize(emb_a.float(), dim=1) @ nn.functional.normalize(emb_b.float(), dim=1).T
    return (lab_a[:, None] == lab_b[None, :]) & ((conf_a[:, None] & conf_b[None, :]) | (sims >= threshold - 1e-6))


def confident_pairs(features: torch.Tensor, labels: torch.Tensor, confident: torch.Tensor, threshold: float) -> torch.Tensor:
    """The confident pairs among the samples of one batch."""
    return pairs_between(features, labels, confident, features, labels, confident, threshold)


def supervised_contrastive(z: torch.Tensor, positives: torch.Tensor, temperature: float) -> torch.Tensor:
    """SupCon over the 2B embeddings ``z`` (unit norm): for each anchor, the mean log-probability
    of its positives among all other embeddings. ``positives`` is (2B, 2B) bool without the diagonal."""
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    return mixup_contrastive(z, z, positives, positives, ~eye, torch.ones(len(z), device=z.device), temperature).mean()


def mixup_contrastive(anchors: torch.Tensor, keys: torch.Tensor, pos_major: torch.Tensor, pos_minor: torch.Tensor,
                      contrast: torch.Tensor, lam: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per anchor: -(λ x mean log-prob of ``pos_major`` + (1-λ) x that of ``pos_minor``), the
    log-probabilities over the keys where ``contrast`` is True (the code's Supervised_ContrastiveLearning_loss)."""
    logits = (anchors @ keys.T / temperature).masked_fill(~contrast, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)

    def mean_over(pos: torch.Tensor) -> torch.Tensor:
        pos = pos & contrast
        return log_prob.masked_fill(~pos, 0).sum(1) / pos.sum(1).clamp_min(1)

    return -(lam * mean_over(pos_major) + (1 - lam) * mean_over(pos_minor))


def similarity_loss(probs: torch.Tensor, key_probs: torch.Tensor, pos_major: torch.Tensor, pos_minor: torch.Tensor,
                    contrast: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """The code's Simi_loss: s = p_a . p_b (softmax probabilities); per entry BCE(s, target),
    λ-mixed over the two pair masks, summed where ``contrast`` and divided by all entries."""
    s = probs @ key_probs.T
    log_s, log_not = torch.log(s + 1e-7), torch.log(1 - s + 1e-7)

    def bce(pos: torch.Tensor) -> torch.Tensor:
        return -torch.where(pos, log_s, log_not)

    mixed = lam[:, None] * bce(pos_major) + (1 - lam[:, None]) * bce(pos_minor)
    return (mixed * contrast).sum() / contrast.numel()


def moco_loss(query: torch.Tensor, key: torch.Tensor, memory: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per sample: InfoNCE of the query against its key (positive) and the memory (negatives)."""
    logits = torch.cat([(query * key.detach()).sum(1, keepdim=True), query @ memory.detach().clone().T], 1) / temperature
    return nn.functional.cross_entropy(logits, torch.zeros(len(query), dtype=torch.long, device=query.device),
                                       reduction="none")


class Queue(nn.Module):
    """FIFO ring buffer (buffers, so checkpointed): embeddings, probabilities, sample indices and
    labels; index -1 marks an empty slot; ``ptr`` is the next slot to write (the oldest entry)."""

    def __init__(self, size: int, dim: int, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("feats", torch.zeros(size, dim))
        self.register_buffer("probs", torch.zeros(size, num_classes))
        self.register_buffer("index", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def push(self, feats: torch.Tensor, probs: torch.Tensor | None = None, index: torch.Tensor | None = None,
             labels: torch.Tensor | None = None) -> torch.Tensor:
        """Write the rows over the oldest entries; returns the slots written."""
        slots = (self.ptr + torch.arange(len(feats), device=self.ptr.device)) % len(self.feats)
        self.feats.index_copy_(0, slots, feats.float())
        for buffer, values in ((self.probs, probs), (self.index, index), (self.labels, labels)):
            if values is not None:
                buffer.index_copy_(0, slots, values.to(buffer.dtype))
        self.ptr.copy_((self.ptr + len(feats)) % len(self.feats))
        return slots


def default_k(n: int) -> int:
    """The code's k = 250 on 50 000 images, scaled to ``n`` (0.5 %), at least 10."""
    return max(10, round(250 * n / 50_000))


class SelCL(Method):
    name = "selcl"
    config_class = SelCLConfig

    def __init__(self, config: SelCLConfig | None = None) -> None:
        self.config = config or SelCLConfig()
        self.confident: torch.Tensor | None = None
        self.embeddings: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None
        self.threshold = 1.0
        self.generator = torch.Generator().manual_seed(self.config.seed)

    def modules(self, model, data):
        c, n = self.config, len(data.train_images)
        self.generator = torch.Generator().manual_seed(c.seed)  # afresh for every run
        self.confident = self.embeddings = self.labels = None
        self.k = c.k or default_k(n)
        self.head = nn.Linear(model.feature_dim, c.projection_dim)  # the code's "Linear" head
        self.ema = copy.deepcopy(nn.ModuleDict({"backbone": model, "head": self.head})).requires_grad_(False)
        self.queue = Queue(c.queue_size or max(256, round(0.4 * n)), c.projection_dim, data.num_classes)
        self.memory = Queue(c.moco_size or max(256, round(0.2 * n)), c.projection_dim, 0)
        init = torch.Generator().manual_seed(c.seed)  # the code's uniform initial keys, here unit norm
        self.memory.feats.copy_(nn.functional.normalize(torch.rand(self.memory.feats.shape, generator=init) - 0.5, dim=1))
        return {"projection": self.head, "momentum_encoder": self.ema, "queue": self.queue, "moco_memory": self.memory}

    def generators(self) -> dict[str, torch.Generator]:
        return {"pairs": self.generator}

    def encode(self, backbone: nn.Module, head: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and unit-norm embeddings."""
        features = backbone.features(x)
        return backbone.classifier(features).float(), nn.functional.normalize(head(features).float(), dim=1)

    def mix(self, n: int, device: torch.device) -> tuple[float, torch.Tensor]:
        """λ = max(l, 1 - l), l ~ Beta(a, a) (numpy's global generator, as the code) and a permutation."""
        a = self.config.mixup_alpha
        lam = float(np.random.beta(a, a)) if a > 0 else 1.0
        return max(lam, 1 - lam), torch.randperm(n, generator=self.generator).to(device)

    @torch.no_grad()
    def select(self, model, images, labels, epoch):
        was_training = self.head.training
        self.head.eval()
        feats = predict(model, images, features=True)
        self.embeddings = torch.cat([nn.functional.normalize(self.head(feats[s:s + 1024]).float(), dim=1)
                                     for s in range(0, len(feats), 1024)]).cpu()
        self.head.train(was_training)
        self.labels = labels.cpu()
        num_classes = int(labels.max()) + 1
        self.confident = select_examples(self.embeddings, self.labels, num_classes, self.k, self.config.alpha)
        self.threshold = pair_threshold(self.embeddings, self.labels, self.confident, self.config.beta,
                                        generator=self.generator)
        return self.confident

    def pairs(self, a: torch.Tensor, b: torch.Tensor, labels_b: torch.Tensor | None = None) -> torch.Tensor:
        """Confident pairs between the samples ``a`` and ``b`` (indices into the training set, CPU)."""
        lab_b = self.labels[b] if labels_b is None else labels_b
        return pairs_between(self.embeddings[a], self.labels[a], self.confident[a], self.embeddings[b], lab_b,
                             self.confident[b], self.threshold)

    def loss(self, model, batch: Batch) -> torch.Tensor:
        c, n, device = self.config, len(batch.labels), batch.weak.device
        _, query = self.encode(model, self.head, batch.weak)
        with torch.no_grad():
            _, key = self.encode(self.ema["backbone"], self.ema["head"], batch.strong)
        uns = moco_loss(query, key, self.memory.feats, c.moco_temperature)
        self.memory.push(key)
        (lam1, perm1), (lam2, perm2) = self.mix(n, device), self.mix(n, device)
        mixed = [lam1 * batch.weak + (1 - lam1) * batch.weak[perm1],
                 lam2 * batch.strong + (1 - lam2) * batch.strong[perm2]]
        with torch.no_grad():  # momentum embeddings of the mixed views enter the queue
            ema = [self.encode(self.ema["backbone"], self.ema["head"], x) for x in mixed]
        slots = self.queue.push(torch.cat([e[1] for e in ema]), torch.cat([e[0].softmax(1) for e in ema]),
                                batch.index.repeat(2), batch.labels.repeat(2))
        if self.confident is None:  # label-free warmup
            return uns.mean()

        online = [self.encode(model, self.head, x) for x in mixed]
        z = torch.cat([o[1] for o in online])
        probs = torch.cat([o[0].softmax(1) for o in online])
        rows = batch.index.cpu()
        major = rows.repeat(2)  # the sample whose weight is λ ≥ 0.5 in each mixed image
        minor = torch.cat([rows[perm1.cpu()], rows[perm2.cpu()]])
        lam = torch.cat([torch.full((n,), lam1), torch.full((n,), lam2)]).to(device)
        eye = torch.eye(2 * n, dtype=torch.bool, device=device)
        pos_major, pos_minor = self.pairs(major, major).to(device), self.pairs(minor, major).to(device)
        partner = (pos_major & ~eye)[:n].reshape(n, 2, n).any(1) & ~torch.eye(n, dtype=torch.bool, device=device)
        has_pair = partner.any(1)
        sup = mixup_contrastive(z, z, pos_major, pos_minor, ~eye, lam, c.temperature).view(2, n).mean(0)
        loss_sup = (sup * has_pair).mean()
        loss_sim = similarity_loss(probs, probs, pos_major, pos_minor, ~eye, lam)

        if c.queue and batch.epoch >= c.queue_begin:
            filled = self.queue.index >= 0
            contrast = filled[None, :].repeat(2 * n, 1)
            contrast[torch.arange(2 * n, device=device), slots] = False  # its own momentum embedding
            q_index = self.queue.index.clamp_min(0).cpu()
            q_labels = self.queue.labels.clamp_min(0).cpu()
            qpos_major = self.pairs(major, q_index, q_labels).to(device)
            qpos_minor = self.pairs(minor, q_index, q_labels).to(device)
            own = torch.zeros_like(contrast)  # the batch's own entries of the same sample (either view)
            own[torch.arange(2 * n, device=device), slots] = True
            own[torch.arange(2 * n, device=device), slots.roll(n)] = True
            same = (major[:, None] == q_index[None, :]).to(device)  # entries of the anchor's own sample
            queue_pair = (qpos_major & contrast & ~own)[:n].any(1)  # older own entries count, as in the code
            queue_has = (qpos_major & contrast & ~same)[:n].any(1) | has_pair  # another sample as partner
            mem = mixup_contrastive(z, self.queue.feats, qpos_major, qpos_minor, contrast, lam, c.temperature)
            loss_sup = loss_sup + (mem.view(2, n).mean(0) * queue_pair).mean()
            loss_sim = loss_sim + similarity_loss(probs, self.queue.probs, qpos_major, qpos_minor, contrast, lam) \
                * contrast.numel() / (2 * n * filled.sum()).clamp_min(1)
            has_pair = queue_has
        loss_uns = (uns * ~has_pair).mean()
        return loss_uns + loss_sup + c.lambda_ce * self.mixup_ce(model, batch) + c.lambda_s * loss_sim

    def mixup_ce(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """λ-mixed cross-entropy on the confident examples of the batch, both views mixed up."""
        chosen = batch.selected
        m = int(chosen.sum())
        if m == 0:
            return batch.weak.new_zeros(())
        y = batch.labels[chosen]
        total = batch.weak.new_zeros(())
        for view in (batch.weak[chosen], batch.strong[chosen]):
            lam, perm = self.mix(m, view.device)
            logits = model(lam * view + (1 - lam) * view[perm]).float()
            ce = nn.functional.cross_entropy
            total = total + lam * ce(logits, y) + (1 - lam) * ce(logits, y[perm])
        return total / 2

    @torch.no_grad()
    def after_step(self, model):
        m = self.config.momentum
        for target, source in zip(self.ema.parameters(), [*model.parameters(), *self.head.parameters()]):
            target.mul_(m).add_(source.detach(), alpha=1 - m)

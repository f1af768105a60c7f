"""AIDTM, annotator- and instance-dependent transition matrices (Li et al., TPAMI 2024), from the
spec's reading of the authors' code, on the shared loop.

T_r(x)[i, j] = P(annotator r says j | true class i, x) = softmax over j of (U_r h(x) + b_r), with h
a transition network's features; the classifier is trained by forward correction,
L = mean over observed (i, r) of -log sum_k p_k(x_i) T_r(x_i)[k, y~_ir].

- Warm-up (``train.warmup_epochs``): masked CE on every annotation + KL(uniform || batch-mean p).
- At the first epoch after it (:meth:`AIDTM.select`): distil D~ = {(x, argmax p) : max p > (1 + th)/2};
  fit the transition net with ONE global head on D~ (all annotators pooled); transfer: every
  annotator's head starts at the global one, one full-batch step per epoch on its own distilled
  labels (annotators with fewer than ``min_labels`` are skipped, set S); individual heads then
  trained on all annotations with the corrected loss; v_r = global - individual head; directed
  cosine kNN graph on v_r, rank-s SVD denoising, clip to [0, 1], self loops, S x S = 1; a two-layer
  GCN (input I_R) outputs every head, fit on D~ with h frozen.
- Remaining epochs: classifier + transition features + GCN jointly on the corrected loss.

Held-out check (``holdout`` > 0, off by default): a seeded share of the observed (i, r) pairs is
kept out of stages 3-8; after the GCN stage each annotator's held-out labels are scored,
-log p(x)^T T_r(x)[:, y~] with p the classifier's posterior handed to :meth:`AIDTM.calibrate`,
under the global, individual and GCN heads (:func:`heldout_nll`); ``crowd_metrics.heldout_nll``
gives the means over sparse annotators (<= ``sparse_labels`` training labels) and the rest. The
final joint stage still sees every annotation. On a Beta-sparse digits crowd the GCN heads beat
the individual ones for sparse annotators only when the GCN stage is trained enough
(``gcn_epochs`` 40, ``gcn_lr`` 0.05; tests/test_vision_crowds_aidtm.py); at the code's 10 epochs
and lr 0.01 they stay close to one shared head, and an identity adjacency does as well.
``gcn_residual`` (off, as in the code, where the residual is commented out) adds the global head
to every GCN head, so calibration starts from the transferred global head.

Deviations (toolkit): the classifier is not re-initialised and the code's stage-5 (global
correction) and stage-6b classifier trainings are folded: the individual heads are trained
against the frozen warm-up classifier; no noisy-val model selection (the last epoch is reported);
the distillation restart loop is not run (a class with no distilled sample contributes nothing).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from curate.core.errors import BadInputError
from vision.crowds.annotators import MISSING, CrowdMethod
from vision.train import Batch, predict


@dataclass
class AIDTMConfig:
    threshold: float = 0.1  # th: distil when max p > (1 + th) / 2
    tm_epochs: int = 5  # global transition net on D~
    transfer_epochs: int = 2  # per-annotator full-batch steps
    individual_epochs: int = 5  # individual heads on all annotations (code: 60, with the classifier)
    gcn_epochs: int = 10
    min_labels: int = 30  # distilled labels an annotator needs to be transferred
    neighbours: int = 50
    rank: int = 5
    feature_dim: int = 64
    hidden: int = 64
    width: int = 256
    tm_lr: float = 0.01
    gcn_lr: float | None = None  # the GCN stage's learning rate (None: tm_lr, as in the code)
    gcn_residual: bool = False  # GCN heads = global head + GCN output (the code's commented-out residual)
    tm_batch: int = 128
    holdout: float = 0.0  # share of the observed pairs kept from stages 3-8 to score the heads on
    sparse_labels: int = 10  # annotators with at most this many training labels count as sparse

    def __post_init__(self) -> None:
        if not 0 <= self.threshold < 1:
            raise BadInputError(f"threshold must be in [0, 1), got {self.threshold}")
        for name in ("neighbours", "rank", "feature_dim", "hidden", "width", "tm_batch"):
            if getattr(self, name) < 1:
                raise BadInputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.holdout < 1:
            raise BadInputError(f"holdout must be in [0, 1), got {self.holdout}")
        if self.tm_lr <= 0 or (self.gcn_lr is not None and self.gcn_lr <= 0):
            raise BadInputError(f"tm_lr and gcn_lr must be positive, got {self.tm_lr}, {self.gcn_lr}")


def pairs(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row, annotator, label) of every observed annotation."""
    rows, who = (labels != MISSING).nonzero(as_tuple=True)
    return rows, who, labels[rows, who]


def transitions(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Row-stochastic T (n x K x K) from features h (n x d), heads (n x K^2 x d) and biases (n x K^2)."""
    k = int(round(bias.shape[-1] ** 0.5))
    return (torch.einsum("nd,ncd->nc", h, weight) + bias).view(-1, k, k).softmax(-1)


def pair_nll(probs: torch.Tensor, t: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
    """-log sum_k p_k T[k, y~] per pair (probs n x K, t n x K x K, noisy n)."""
    likelihood = torch.einsum("nk,nkj->nj", probs, t).gather(1, noisy[:, None]).squeeze(1)
    return -torch.log(likelihood.clamp_min(1e-12))


def corrected_nll(probs: torch.Tensor, t: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
    """mean over the given pairs of :func:`pair_nll`."""
    return pair_nll(probs, t, noisy).mean()


def hold_out(labels: torch.Tensor, share: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held): the annotation matrix with a seeded ``share`` of its observed pairs moved to
    ``held`` (MISSING elsewhere in each)."""
    rows, who, _ = pairs(labels)
    pick = torch.randperm(len(rows), generator=generator)[:int(round(share * len(rows)))].to(rows.device)
    r, w = rows[pick], who[pick]
    kept, held = labels.clone(), torch.full_like(labels, MISSING)
    held[r, w] = labels[r, w]
    kept[r, w] = MISSING
    return kept, held


def heldout_nll(probs: torch.Tensor, h: torch.Tensor, heads: tuple[torch.Tensor, torch.Tensor],
                held: torch.Tensor) -> np.ndarray:
    """Per annotator, the mean over its held-out pairs of -log p(x)^T T_r(x)[:, y~], with T_r from
    ``heads`` (R x K^2 x d, R x K^2) on features ``h``; NaN for an annotator with none held out."""
    rows, who, noisy = pairs(held)
    with torch.no_grad():
        nll = pair_nll(probs[rows], transitions(h[rows], heads[0][who], heads[1][who]), noisy)
    count = torch.bincount(who, minlength=held.shape[1]).double()
    total = torch.zeros(held.shape[1], dtype=torch.float64, device=nll.device).index_add_(0, who, nll.double())
    return (total / count).cpu().numpy()


def heldout_summary(nll: dict[str, np.ndarray], train_counts: np.ndarray, sparse: int) -> dict:
    """Mean held-out NLL per head kind over the sparse annotators (at most ``sparse`` training
    labels) and the rest, among those with held-out pairs."""
    scored = ~np.isnan(next(iter(nll.values())))
    groups = {"sparse": scored & (train_counts <= sparse), "rest": scored & (train_counts > sparse)}
    out: dict = {f"{g}_annotators": int(m.sum()) for g, m in groups.items()}
    for kind, values in nll.items():
        for g, m in groups.items():
            out[f"{g}_{kind}"] = float(values[m].mean()) if m.any() else None
    return out


class TransitionNet(nn.Module):
    """Features h(x) (an MLP, then ReLU(A phi)), a global head, and the calibrating GCN."""

    def __init__(self, in_dim: int, num_classes: int, annotators: int, config: AIDTMConfig):
        super().__init__()
        d, k2 = config.feature_dim, num_classes * num_classes
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_dim, config.width), nn.ReLU(),
                                  nn.Linear(config.width, config.width), nn.ReLU(), nn.Linear(config.width, d), nn.ReLU())
        self.head = nn.Linear(d, k2)  # the global head (U, b)
        self.theta1 = nn.Parameter(torch.randn(annotators, config.hidden) / annotators ** 0.5)
        self.theta2 = nn.Parameter(torch.randn(config.hidden, d * k2 + k2) * 0.01)
        self.register_buffer("adjacency", torch.eye(annotators))  # normalised A^
        self.register_buffer("calibrated", torch.tensor(False))
        self.d, self.k2, self.residual = d, k2, config.gcn_residual

    def global_heads(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head.weight.expand(n, -1, -1), self.head.bias.expand(n, -1)

    def gcn_heads(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Psi = A^ LeakyReLU(A^ Theta1) Theta2, split into every annotator's (U_r, b_r) (plus the
        global head's with ``gcn_residual``)."""
        a = self.adjacency
        psi = a @ nn.functional.leaky_relu(a @ self.theta1, 0.2) @ self.theta2
        u, b = psi[:, :self.d * self.k2].view(-1, self.k2, self.d), psi[:, self.d * self.k2:]
        return (u + self.head.weight, b + self.head.bias) if self.residual else (u, b)


def distill(probs: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    confidence, guess = probs.max(1)
    rows = (confidence > 0.5 * (1 + threshold)).nonzero(as_tuple=True)[0]
    return rows, guess[rows]


def _batches(n: int, size: int, generator: torch.Generator) -> list[torch.Tensor]:
    return list(torch.randperm(n, generator=generator).split(size))


def fit_global(net: TransitionNet, x: torch.Tensor, clean: torch.Tensor, labels: torch.Tensor, epochs: int,
               lr: float, batch: int, generator: torch.Generator) -> None:
    """The features and the global head on (x, clean) pairs: -log T(x)[clean, y~] over every observed
    annotation (all annotators share T)."""
    rows, _, noisy = pairs(labels)
    opt = torch.optim.SGD([*net.body.parameters(), *net.head.parameters()], lr=lr, momentum=0.9)
    for _ in range(epochs):
        for b in _batches(len(rows), batch, generator):
            r = rows[b]
            t = transitions(net.body(x[r]), *net.global_heads(len(r)))
            loss = -torch.log(t[torch.arange(len(r)), clean[r], noisy[b]].clamp_min(1e-12)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()


def annotator_graph(deltas: np.ndarray, k: int, rank: int, skipped: np.ndarray) -> np.ndarray:
    """A~: B[u, v] = 1 iff u is among v's k cosine neighbours (no self loops), rank-s SVD, clipped to
    [0, 1], A~_rr = 1, A~[S, S] = 1 for the skipped annotators S."""
    from sklearn.neighbors import NearestNeighbors

    r = len(deltas)
    k = min(k, r - 1)
    neighbours = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(deltas).kneighbors(deltas)[1]
    b = np.zeros((r, r))
    for v in range(r):
        b[[u for u in neighbours[v] if u != v][:k], v] = 1.0
    u_, s, vt = np.linalg.svd(b)
    rank = min(rank, r)
    a = np.clip((u_[:, :rank] * s[:rank]) @ vt[:rank], 0, 1)
    np.fill_diagonal(a, 1.0)
    a[np.ix_(skipped, skipped)] = 1.0
    return a


def normalise(a: np.ndarray) -> np.ndarray:
    """D^-1/2 A~^T D^-1/2 with D the row sums of A~."""
    d = 1 / np.sqrt(a.sum(1))
    return d[:, None] * a.T * d[None, :]


class AIDTM(CrowdMethod):
    name = "aidtm"
    config_class = AIDTMConfig

    def __init__(self, config: AIDTMConfig | None = None):
        self.config = config or AIDTMConfig()

    def modules(self, model: nn.Module, data) -> dict[str, nn.Module]:
        seed = torch.initial_seed()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            self.net = TransitionNet(data.channels * data.image_size ** 2, data.num_classes, self.num_annotators,
                                     self.config)
        self.generator = torch.Generator().manual_seed(seed)
        return {"transition": self.net}

    def generators(self) -> dict[str, torch.Generator]:
        return {"stages": self.generator}

    def select(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, epoch: int) -> None:
        if not bool(self.net.calibrated):
            self.calibrate(predict(model, images).softmax(1), images, labels)
        return None

    def calibrate(self, probs: torch.Tensor, images: torch.Tensor, labels: torch.Tensor) -> dict:
        """Stages 3-8 (see the module docstring); returns diagnostics (the heads' deltas)."""
        cfg, net = self.config, self.net
        device = net.head.weight.device
        x, labels, probs = images.to(device), labels.to(device), probs.to(device)
        held = None
        if cfg.holdout > 0:
            labels, held = hold_out(labels, cfg.holdout, self.generator)
        rows, guess = distill(probs, cfg.threshold)
        clean = torch.full((len(x),), MISSING, dtype=torch.long, device=device)
        clean[rows] = guess
        distilled = labels.clone()
        distilled[clean == MISSING] = MISSING
        fit_global(net, x, clean, distilled, cfg.tm_epochs, cfg.tm_lr, cfg.tm_batch, self.generator)
        # transfer: per-annotator heads from the global one
        r_count = labels.shape[1]
        weight = net.head.weight.detach().clone().repeat(r_count, 1, 1).requires_grad_()
        bias = net.head.bias.detach().clone().repeat(r_count, 1).requires_grad_()
        opt = torch.optim.SGD([weight, bias, *net.body.parameters()], lr=cfg.tm_lr, momentum=0.9)
        own = (distilled != MISSING).sum(0)
        skipped = (own < cfg.min_labels).cpu().numpy()
        for _ in range(cfg.transfer_epochs):
            for r in np.flatnonzero(~skipped):
                mine = (distilled[:, r] != MISSING).nonzero(as_tuple=True)[0]
                t = transitions(net.body(x[mine]), weight[r].expand(len(mine), -1, -1), bias[r].expand(len(mine), -1))
                loss = -torch.log(t[torch.arange(len(mine)), clean[mine], distilled[mine, r]].clamp_min(1e-12)).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        # individual heads on every annotation, against the frozen classifier
        all_rows, all_who, all_noisy = pairs(labels)
        for _ in range(cfg.individual_epochs):
            for b in _batches(len(all_rows), cfg.tm_batch, self.generator):
                r, w = all_rows[b], all_who[b]
                t = transitions(net.body(x[r]), weight[w], bias[w])
                loss = corrected_nll(probs[r], t, all_noisy[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
        global_vec = torch.cat([net.head.weight.detach().flatten(), net.head.bias.detach()])
        deltas = (global_vec - torch.cat([weight.detach().flatten(1), bias.detach()], 1)).cpu().numpy()
        graph = annotator_graph(deltas, cfg.neighbours, cfg.rank, skipped)
        net.adjacency.copy_(torch.as_tensor(normalise(graph), dtype=net.adjacency.dtype))
        # the GCN's heads on D~, features frozen
        d_rows, d_who, d_noisy = pairs(distilled)
        gcn_opt = torch.optim.SGD([net.theta1, net.theta2], lr=cfg.gcn_lr or cfg.tm_lr, momentum=0.9)
        with torch.no_grad():
            h_all = net.body(x)
        for _ in range(cfg.gcn_epochs):
            for b in _batches(len(d_rows), cfg.tm_batch, self.generator):
                r, w = d_rows[b], d_who[b]
                u, bb = net.gcn_heads()
                t = transitions(h_all[r], u[w], bb[w])
                loss = -torch.log(t[torch.arange(len(r)), clean[r], d_noisy[b]].clamp_min(1e-12)).mean()
                gcn_opt.zero_grad()
                loss.backward()
                gcn_opt.step()
        net.calibrated.fill_(True)
        self.diagnostics = {"distilled": int(len(rows)), "skipped": int(skipped.sum()), "deltas": deltas,
                            "distilled_rows": rows.cpu(), "distilled_labels": guess.cpu()}
        if held is not None:
            with torch.no_grad():
                nll = {kind: heldout_nll(probs, h_all, heads, held) for kind, heads in
                       (("global", net.global_heads(r_count)), ("individual", (weight, bias)), ("gcn", net.gcn_heads()))}
            counts = (labels != MISSING).sum(0).cpu().numpy()
            self.diagnostics.update(heldout_nll=nll, train_counts=counts,
                                    heldout=heldout_summary(nll, counts, cfg.sparse_labels))
        return self.diagnostics

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        rows, who, noisy = pairs(batch.labels)
        logits = model(batch.weak).float()
        if not bool(self.net.calibrated):  # warm-up: CE on every annotation + class balance
            log_p = logits.log_softmax(1)
            mean_p = log_p.exp().mean(0)
            balance = (torch.log(torch.tensor(1.0 / len(mean_p))) - torch.log(mean_p)).mean()
            return nn.functional.nll_loss(log_p[rows], noisy) + balance
        u, b = self.net.gcn_heads()
        t = transitions(self.net.body(batch.weak[rows]), u[who], b[who])
        return corrected_nll(logits.softmax(1)[rows], t, noisy)

    def crowd_metrics(self, truth: np.ndarray, crowd) -> dict:
        if not getattr(self, "diagnostics", None):
            return {}
        rows, ys = self.diagnostics["distilled_rows"], self.diagnostics["distilled_labels"]
        accuracy = [float((torch.as_tensor(truth)[rows] == ys).float().mean())] if len(rows) else []
        return {"distilled": self.diagnostics["distilled"], "distilled_label_accuracy": accuracy,
                "skipped_annotators": self.diagnostics["skipped"], "heldout_nll": self.diagnostics.get("heldout")}

"""BUAL: bidirectional uncertainty-based active learning for open-set annotation (Zong, Wang,
Ning, Ye, Huang, ECCV 2024; code github.com/chenchenzong/BUAL, read, not copied).

Each round, with f_p the target model (K-way cross-entropy on the labelled known images,
:meth:`Strategy.train`, evaluated before any fine-tuning):

1. **Auxiliary detector** (from the first round with a labelled unknown): a (K+1)-way classifier
   (plain cross-entropy, as the code's ``Aux_net``) on the labelled known images and the queried
   unknowns (class K); p_aux(x) = its probability of class K. Images it predicts as class K are
   removed from the query pool (``remove_predicted_unknown``; filled back by score only if fewer
   than the budget remain).
2. **RLNL** (random label negative learning): a copy of f_p's backbone and a NEW linear head
   (f_p itself is untouched) are fine-tuned for ``nl_epochs`` epochs on the labelled images and a
   uniform random subset D_sub of ``subset`` unlabelled images with the negative-learning loss
   -log(1 - p_ybar) (clamped at 1e-5). The complementary label ybar is drawn afresh for every image
   at the start of every epoch: (base + U{1..K-1}) mod K, base = the true label of a labelled image
   (so ybar != y, uniform over the K-1 others) and a uniform random class for an unlabelled one
   (so ybar is uniform over all K), as the code does.
3. **Snapshot averaging**: softmax of the new head on the unlabelled pool every
   ``snapshot_every`` epochs, the epoch-0 (untrained head) one included as in the code, averaged:
   P^-(x) (rows sum to 1; the code sums, which ranks the same except under entropy).
4. **BU score** with r = the last round's query precision (``r0`` before any query) and
   unc = least confidence, margin or entropy (:func:`vision.active.baselines.uncertainty`);
   every quantity min-max normalised over the query pool, a constant one guarded (a constant
   p_aux keeps its value, a constant uncertainty becomes 0: no 0/0):

   - ``score: code`` (default; the code's main.py): the b smallest p~aux*c~n + r*(1-p~aux)*c~p of
     normalised *confidences* c = -unc. This ranks differently from Eq. 3 since the weight
     p~aux + r*(1-p~aux) varies per image.
   - ``score: eq3`` (the paper's Eq. 3): the b largest p~aux*u~n + r*(1-p~aux)*u~p of normalised
     uncertainties.

   No unknown labelled yet (no detector): ``cold_start: code`` (default, main.py) scores
   c~n + r*c~p (round 1, r0 = 0: the negative head's uncertainty alone); ``cold_start: paper``
   takes p_aux = 0: r*unc_p, plain uncertainty on f_p (all ties, i.e. random, when r = 0).

Choices and omissions (code vs paper): D_sub is drawn uniformly from the whole unlabelled pool
(the code draws the true known/unknown proportion, equal in expectation; the paper removes the
predicted unknowns first, the code does not and neither do we). The code's NL early stop counts
the truly known images among the current top-b (an oracle leak): replaced by a fixed number of
snapshots (epochs 0, m, ..., E). The code fine-tunes with a constant lr 0.01; here the family's
SGD with cosine schedule at ``nl_lr``. The code's hard-coded query size 1500 is the family's
budget. Defaults are scaled to digits [assumed]: E = 10 (paper 100), m = 2 (paper 5), s = 300 (CIFAR
5 000), chosen on seeds 10-11 only (benchmarks/vision_bual.py).
The networks are the family's backbone (a narrow ConvNet), not ResNet-18. The appendix is not
read (absent from the authors' snapshot).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from curate.core.errors import BadInputError
from vision.active.base import RoundState, Strategy, probabilities, top, train_classifier
from vision.active.baselines import MEASURES, uncertainty
from vision.train import Batch, Method, Trained, predict

SCORES = ("code", "eq3")
COLD_STARTS = ("code", "paper")


@dataclass
class BUALConfig:
    measure: str = "margin"  # least_confidence | margin | entropy: B-LC, B-Margin, B-Entropy
    nl_epochs: int = 10  # E: RLNL fine-tuning epochs (paper 100)
    snapshot_every: int = 2  # m: a snapshot of the negative head every m epochs (from epoch 0; paper 5)
    subset: int = 300  # s: unlabelled images in D_sub (paper 5 000 of CIFAR's 50 000)
    nl_lr: float = 0.05  # the RLNL learning rate: the family's target lr (the code uses its lr 0.01 for both)
    r0: float = 0.0  # the query precision assumed before the first query (the code's 0)
    score: str = "code"  # code: smallest weighted normalised confidences | eq3: largest uncertainties
    cold_start: str = "code"  # no unknown labelled yet: code c~n + r*c~p | paper p_aux = 0
    remove_predicted_unknown: bool = True  # drop the detector's class-K predictions from the pool

    def __post_init__(self) -> None:
        if self.measure not in MEASURES:
            raise BadInputError(f"method.measure must be one of {', '.join(MEASURES)}, got {self.measure!r}")
        for name in ("nl_epochs", "snapshot_every", "subset"):
            if getattr(self, name) < 1:
                raise BadInputError(f"method.{name} must be at least 1, got {getattr(self, name)}")
        if self.snapshot_every > self.nl_epochs:
            raise BadInputError(f"method.snapshot_every must be at most method.nl_epochs ({self.nl_epochs}), "
                                f"got {self.snapshot_every}")
        if self.nl_lr <= 0:
            raise BadInputError(f"method.nl_lr must be positive, got {self.nl_lr}")
        if not 0 <= self.r0 <= 1:
            raise BadInputError(f"method.r0 must be in [0, 1], got {self.r0}")
        if self.score not in SCORES:
            raise BadInputError(f"method.score must be one of {', '.join(SCORES)}, got {self.score!r}")
        if self.cold_start not in COLD_STARTS:
            raise BadInputError(f"method.cold_start must be one of {', '.join(COLD_STARTS)}, got {self.cold_start!r}")


def complementary_labels(labels: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """One complementary label per image: ``(base + U{1..K-1}) mod K`` with base the label of a
    labelled image (``labels >= 0``: never its label, uniform over the others) and a uniform class
    for an unlabelled one (``labels < 0``: uniform over all K)."""
    n = len(labels)
    base = torch.where(labels >= 0, labels.cpu(), torch.randint(0, num_classes, (n,), generator=generator))
    offset = torch.randint(1, num_classes, (n,), generator=generator)
    return (base + offset) % num_classes


def nl_loss(logits: torch.Tensor, complementary: torch.Tensor) -> torch.Tensor:
    """Negative learning (NLNL, Eq. 1): mean of -log(1 - p_ybar), the log clamped at 1e-5."""
    p = torch.softmax(logits.float(), dim=1).gather(1, complementary[:, None]).squeeze(1)
    return -torch.log((1 - p).clamp(min=1e-5)).mean()


def minmax(x: np.ndarray, constant_keeps: bool = False) -> np.ndarray:
    """Min-max normalisation over the pool; a zero range (0/0) keeps ``x`` (``constant_keeps``,
    for probabilities) or gives zeros (an uninformative uncertainty)."""
    x = np.asarray(x, dtype=np.float64)
    spread = float(x.max() - x.min()) if len(x) else 0.0
    if spread > 0:
        return (x - x.min()) / spread
    return x.copy() if constant_keeps else np.zeros_like(x)


def bu_scores(positive: torch.Tensor, negative: torch.Tensor, p_aux: np.ndarray | None, r: float,
              measure: str, score: str = "code", cold_start: str = "code") -> np.ndarray:
    """Bidirectional-uncertainty scores of the pool (higher = queried first) from f_p's
    probabilities ``positive``, the averaged negative-head probabilities ``negative`` and the
    detector's unknown probability ``p_aux`` (None: no unknown labelled yet)."""
    u_p = uncertainty(positive.double(), measure).numpy()
    u_n = uncertainty(negative.double(), measure).numpy()
    if p_aux is None and cold_start == "paper":
        p_aux = np.zeros(len(u_p))
    if score == "code":  # the smallest weighted normalised confidences
        c_p, c_n = minmax(-u_p), minmax(-u_n)
        if p_aux is None:
            return -(c_n + r * c_p)
        w = minmax(p_aux, constant_keeps=True)
        return -(w * c_n + r * (1 - w) * c_p)
    n_p, n_n = minmax(u_p), minmax(u_n)
    if p_aux is None:
        return n_n + r * n_p
    w = minmax(p_aux, constant_keeps=True)
    return w * n_n + r * (1 - w) * n_p


class RLNL(Method):
    """Negative learning of a new head on a copy of f_p's backbone, fresh complementary labels
    every epoch (training labels: the class, or -1 for an unlabelled image), and softmax snapshots
    of the new head on ``pool`` every ``every`` epochs (epoch 0 included)."""

    name = "rlnl"

    def __init__(self, positive: nn.Module, num_classes: int, pool: torch.Tensor, every: int, seed: int):
        self.positive, self.num_classes, self.pool, self.every, self.seed = positive, num_classes, pool, every, seed
        self.snapshots: list[torch.Tensor] = []
        self.complementary = torch.zeros(0, dtype=torch.long)

    def modules(self, model: nn.Module, data) -> dict[str, nn.Module]:
        model.load_state_dict(copy.deepcopy(self.positive.state_dict()))  # start from f_p's weights
        self.generator = torch.Generator().manual_seed(self.seed)
        self.head = nn.Linear(model.feature_dim, self.num_classes)
        self.snapshots = []
        return {"negative": self.head}

    def generators(self) -> dict[str, torch.Generator]:
        return {"complementary": self.generator}

    def select(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, epoch: int) -> None:
        if epoch % self.every == 0:
            self.snapshot(model)
        self.complementary = complementary_labels(labels, self.num_classes, self.generator)
        return None

    def snapshot(self, model: nn.Module) -> None:
        self.snapshots.append(torch.softmax(self.predict(model, self.pool).cpu(), dim=1))

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        logits = self.head(model.features(batch.weak))
        return nl_loss(logits, self.complementary[batch.index.cpu()].to(logits.device))

    def predict(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.head(predict(model, images, features=True)).float()

    def averaged(self) -> torch.Tensor:
        """P^-: the mean of the snapshots (rows sum to 1)."""
        return torch.stack(self.snapshots).mean(0)


def negative_probabilities(target: Trained, state: RoundState, config: BUALConfig) -> torch.Tensor:
    """RLNL on the labelled images and a seeded uniform subset of the unlabelled ones; P^- on
    ``state.unlabeled`` (row i belongs to ``state.unlabeled[i]``)."""
    generator = state.generator(3)
    take = torch.randperm(len(state.unlabeled), generator=generator)[:config.subset].numpy()
    subset = np.sort(state.unlabeled[take])
    rows = np.concatenate([state.labeled, subset])
    labels = np.concatenate([state.labels, np.full(len(subset), -1)])
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    method = RLNL(target.model, state.num_known, state.images[state.unlabeled], config.snapshot_every, seed)
    train_config = replace(state.train, epochs=config.nl_epochs, warmup_epochs=0, lr=config.nl_lr, seed=seed)
    trained = train_classifier(method, state, rows, labels, state.num_known, train_config)
    if config.nl_epochs % config.snapshot_every == 0:
        method.snapshot(trained.model)  # the snapshot at epoch E
    return method.averaged()


class BUAL(Strategy):
    """BUAL: query by the bidirectional uncertainty of f_p and an RLNL-trained negative head."""

    name = "bual"
    config_class = BUALConfig

    def __init__(self, config: BUALConfig | None = None):
        self.config = config or BUALConfig()
        self._metrics: dict[str, Any] = {}

    def detector(self, state: RoundState) -> torch.Tensor | None:
        """The (K+1)-way detector's probabilities on ``state.unlabeled``; None before any unknown."""
        if not len(state.unknown):
            return None
        k = state.num_known
        rows = np.concatenate([state.labeled, state.unknown])
        labels = np.concatenate([state.labels, np.full(len(state.unknown), k)])
        return probabilities(train_classifier(Method(), state, rows, labels, k + 1), state.images[state.unlabeled])

    def query(self, state: RoundState, target: Trained, budget: int) -> np.ndarray:
        c = self.config
        r = state.precision[-1] if state.precision else c.r0
        positive = probabilities(target, state.images[state.unlabeled])
        negative = negative_probabilities(target, state, c)
        aux = self.detector(state)
        p_aux = None if aux is None else aux[:, state.num_known].numpy()
        keep = np.ones(len(state.unlabeled), dtype=bool)
        if aux is not None and c.remove_predicted_unknown:
            keep = aux.argmax(1).numpy() != state.num_known

        def scores(rows: np.ndarray) -> np.ndarray:
            return bu_scores(positive[rows], negative[rows], None if p_aux is None else p_aux[rows], r,
                             c.measure, c.score, c.cold_start)

        kept, removed = np.flatnonzero(keep), np.flatnonzero(~keep)
        chosen = top(scores(kept), state.unlabeled[kept], budget, state.seed) if len(kept) else np.zeros(0, np.int64)
        if len(chosen) < budget and len(removed):  # fewer kept than the budget: fill by the same score
            chosen = np.concatenate([chosen, top(scores(removed), state.unlabeled[removed],
                                                 budget - len(chosen), state.seed)])
        self._metrics = {"predicted_unknown": int(len(removed)), "r": float(r),
                         "subset": int(min(c.subset, len(state.unlabeled)))}
        return chosen

    def round_metrics(self) -> dict[str, Any]:
        return dict(self._metrics)

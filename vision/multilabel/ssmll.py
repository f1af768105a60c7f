"""Semi-supervised multi-label learning (SSMLL): D2L + MAT (dual-decoupling learning and
metric-adaptive thresholding; arXiv 2407.18624, ECCV 2024; spec ``specs/ssmll_dual.md``) and its
baselines, labelled-only BCE at 0.5 and CAP-style pseudo-labels (class-prior-matched thresholds).

The algorithm follows the authors' code (github.com/JiahaoXxX/SSMLL-D2L_MAT), the paper's body was
not available. One backbone phi, four linear heads on its pooled features: h1 (global) and h2
(patches, :mod:`vision.multilabel.patches`, aggregated by soft max-pooling A) learn from true
labels only and *generate* pseudo-labels; h3 (global) and h4 (patches) learn from pseudo-labels
only and *use* them, their gradients reaching the backbone. The teacher score is
s(x) = sigmoid((h1(phi(x)) + A(h2(phi(patches(x))))) / 2), of an EMA of the network
(``torch.optim.swa_utils.AveragedModel``, buffers included); inference uses h1 + h2 only.

1. Split: a seeded permutation of the train mosaics; the first floor(p n) are labelled, the rest
   unlabelled (their labels are only logged).
2. Warm-up (``train.warmup_epochs``): ASL(h1) + ASL(A(h2)) on the labelled set, in a fixed order,
   AdamW + OneCycle (pct_start 0.2), the EMA updated every step.
3. Main stage: h3 <- h1, h4 <- h2 (the transfer); every epoch starts with MAT: per class, the
   threshold on the 0.01 grid maximising the chosen metric (Fbeta, code form, beta 0.5) of the
   teacher's scores on the *labelled* set, ties to the smallest t. Per step: a strong labelled
   batch and an unlabelled batch (weak and strong); pseudo-labels 1[s(weak) >= tau];
   L = ASL(h1, y) + ASL(A(h2), y) + ASL(h3, y_hat) + ASL(A(h4), y_hat) on the strong views.
   A fresh OneCycle for the main stage, built for ``main / schedule_fraction`` epochs (the code
   builds 40 and runs at most 28: the LR warms up again and its decay is cut off).
4. Test: mAP, CF1 and OF1 of the student and of the EMA teacher, at thresholds fitted the method's
   way on the model's own scores (MAT: labelled set; CAP: unlabelled set; BCE: 0.5) and at 0.5.

CAP (``ssmll_cap``; github.com/xiemk/SSMLL-CAP, read for the rule): the same loop with one head per
branch (``decouple: false``), no patches, and tau_k the score ranked floor(gamma_k n_u) on the
unlabelled set, gamma_k the labelled positive rate of class k (index -1, the minimum, when
gamma_k n_u < 1, as in the code). The ablations are options of ``d2l_mat``: ``patches: false``,
``decouple: false`` (one shared head per branch), ``metric: f1``.

Scaled to a CPU and stated: a small ConvNet from scratch on 20 px jittered digit mosaics (not an
ImageNet ResNet-50 at 224 px; jitter keeps the 2x2 patch grid off the 2x2 tiles), EMA decay 0.99
(about the code's horizon in epochs), lr 3e-3 and ``warmup_passes`` labelled passes per warm-up epoch
(the recipes: 8, so that a from-scratch teacher is not random when the main stage starts), and, in
the recipes, ``cutout`` 0.25 of the side (the code's 0.5 erases whole 8 px digits of a 20 px mosaic). [assumed] where the
code was not read closely: the main stage's EMA restarts from the student after the transfer; the
warm-up uses the weak view; thresholds are fitted on un-augmented images (the code: weak views).
Left out: AMP, early stopping (the code stops after 5 epochs without improvement, judged on the
test set) and keeping the better of student and EMA (both are reported instead); Cutout's random
colour fill (``RandomErasing`` fills with noise); torchvision RandAugment replaces the pip
``randaugment`` package; no horizontal flip (digits). A class with no labelled positive would get
tau = 0 from the code's search (every unlabelled image a positive); here it gets
``empty_threshold`` (1.0: no pseudo-positives) and is listed in the result.
The experiment loop is :mod:`vision.multilabel.ssmll_experiment`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from curate.core.errors import BadInputError
from vision.multilabel.losses import asymmetric_loss as asl
from vision.multilabel.mosaics import MosaicConfig
from vision.multilabel.patches import aggregate, patch_logits, patch_view
from vision.train import TrainConfig

METRICS = ("fbeta", "f1", "precision", "recall")
GRID_STEP = 0.01


# -- configs -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class D2LMATConfig:
    thresholds: str = "mat"  # mat (labelled set, a metric) | cap (unlabelled set, the class prior)
    metric: str = "fbeta"  # fbeta | f1 | precision | recall (run.sh: fbeta, beta 0.5)
    beta: float = 0.5
    fbeta_form: str = "code"  # code: (1+b^2)PR/(bP+R) (acts as the standard F_sqrt(b)) | standard: (1+b^2)PR/(b^2P+R)
    patches: bool = True  # the discriminative branch (h2, h4); false: the global heads only
    decouple: bool = True  # generation (h1, h2) vs utilisation (h3, h4) heads; false: pseudo-labels on h1/h2
    grid: int = 2  # G x G patches
    ema_decay: float = 0.99  # the code: 0.9997 (for ~10^4 steps)
    gamma_neg: float = 4.0  # ASL
    gamma_pos: float = 0.0
    clip: float = 0.05
    reduction: str = "sum"  # the code sums ASL over batch and classes; mean: a switch
    labelled_batch: int = 4  # the code's p <= 0.05 setting: 4 labelled + 60 unlabelled per step
    unlabelled_batch: int = 60
    warmup_passes: int = 1  # passes over the labelled set per warm-up epoch (the code: 1)
    cutout: float = 0.5  # the strong view's Cutout side, a share of the image side (the code: 0.5)
    schedule_fraction: float = 0.7  # main OneCycle built for main / fraction epochs (28 of 40)
    mat_holdout: float = 0.0  # > 0: this share of the labelled set fits the thresholds only (not trained on)
    empty_threshold: float = 1.0  # tau of a class without labelled positives (the code: 0)

    def __post_init__(self) -> None:
        if self.thresholds not in ("mat", "cap"):
            raise BadInputError(f"thresholds must be mat or cap, got '{self.thresholds}'")
        if self.metric not in METRICS:
            raise BadInputError(f"metric must be one of {', '.join(METRICS)}, got '{self.metric}'")
        if self.fbeta_form not in ("code", "standard"):
            raise BadInputError(f"fbeta_form must be code or standard, got '{self.fbeta_form}'")
        if self.reduction not in ("sum", "mean"):
            raise BadInputError(f"reduction must be sum or mean, got '{self.reduction}'")
        if self.beta <= 0:
            raise BadInputError(f"beta must be positive, got {self.beta}")
        for name in ("grid", "labelled_batch", "unlabelled_batch", "warmup_passes"):
            if getattr(self, name) < 1:
                raise BadInputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.ema_decay < 1:
            raise BadInputError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0 < self.schedule_fraction <= 1:
            raise BadInputError(f"schedule_fraction must be in (0, 1], got {self.schedule_fraction}")
        if not 0 <= self.cutout < 1:
            raise BadInputError(f"cutout must be in [0, 1), got {self.cutout}")
        if not 0 <= self.mat_holdout < 1:
            raise BadInputError(f"mat_holdout must be in [0, 1), got {self.mat_holdout}")
        if min(self.gamma_neg, self.gamma_pos, self.clip) < 0 or self.clip >= 1:
            raise BadInputError(f"gamma_neg, gamma_pos must be >= 0 and clip in [0, 1), got "
                                f"{self.gamma_neg}, {self.gamma_pos}, {self.clip}")


@dataclass(frozen=True)
class CAPConfig(D2LMATConfig):
    thresholds: str = "cap"
    patches: bool = False
    decouple: bool = False


@dataclass(frozen=True)
class LabelledOnlyConfig:
    threshold: float = 0.5
    warmup_passes: int = 1  # passes over the labelled set per epoch

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:
            raise BadInputError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.warmup_passes < 1:
            raise BadInputError(f"warmup_passes must be at least 1, got {self.warmup_passes}")


@dataclass
class SSMLLExperimentConfig:
    dataset: str = "digit_mosaics"
    seed: int = 0  # the digits train/test split and the labelled/unlabelled split
    mosaic: MosaicConfig = field(default_factory=MosaicConfig)
    labelled: float = 0.05  # p: the labelled share of the train mosaics
    jitter: int = 4  # mosaics placed at a seeded offset on a (16 + jitter)^2 canvas
    train: TrainConfig = field(default_factory=TrainConfig)
    method: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dataset != "digit_mosaics":
            raise BadInputError(f"dataset must be digit_mosaics (semi-supervised multi-label), got '{self.dataset}'")
        if not 0 < self.labelled < 1:
            raise BadInputError(f"labelled must be in (0, 1), got {self.labelled}")
        if not 0 <= self.jitter <= 16:
            raise BadInputError(f"jitter must be in [0, 16], got {self.jitter}")

    def check_with_method(self, options: Any) -> None:
        """What the training schedule must give this method (``build_config`` names the file)."""
        train = self.train
        if not train.augment:
            raise BadInputError(f"train.augment: the semi-supervised loop needs weak and strong views (got {train.augment!r})")
        if train.flip:
            raise BadInputError(f"train.flip: digit mosaics are not flipped (got {train.flip!r})")
        if not isinstance(options, LabelledOnlyConfig) and train.warmup_epochs >= train.epochs:
            raise BadInputError(f"train.warmup_epochs ({train.warmup_epochs}) must be below train.epochs "
                                f"({train.epochs}): the main stage needs an epoch")


class D2LMAT:
    name = "d2l_mat"
    config_class: type = D2LMATConfig

    def __init__(self, config: Any = None):
        self.config = config or self.config_class()


class CAP(D2LMAT):
    name = "ssmll_cap"
    config_class = CAPConfig


class LabelledOnly(D2LMAT):
    name = "ssmll_bce"
    config_class = LabelledOnlyConfig


# -- the network -----------------------------------------------------------------------------------

class FourHeads(nn.Module):
    """A backbone's features and four linear heads: h1/h2 generate, h3/h4 use the pseudo-labels."""

    def __init__(self, backbone: nn.Module, num_classes: int, grid: int = 2):
        super().__init__()
        self.backbone, self.grid = backbone, grid
        self.heads = nn.ModuleDict({name: nn.Linear(backbone.feature_dim, num_classes)
                                    for name in ("h1", "h2", "h3", "h4")})

    def forward(self, x: torch.Tensor, heads: tuple[str, ...] = ("h1", "h2"), patches: bool = True,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Logits per head: global heads on phi(x), patch heads aggregated over phi(patches(x))."""
        out: dict[str, torch.Tensor] = {}
        whole = [h for h in heads if h in ("h1", "h3")]
        parts = [h for h in heads if h in ("h2", "h4")] if patches else []
        if whole:
            features = self.backbone.features(x)
            out.update({h: self.heads[h](features) for h in whole})
        if parts:
            view = patch_view(x, self.grid, x.shape[-1], generator)
            features = patch_logits(self.backbone.features, view)  # (B, P, D)
            out.update({h: aggregate(self.heads[h](features)) for h in parts})
        return out

    def transfer(self) -> None:
        """h3 <- h1, h4 <- h2 (the start of the main stage)."""
        with torch.no_grad():
            for target, source in (("h3", "h1"), ("h4", "h2")):
                for p, q in zip(self.heads[target].parameters(), self.heads[source].parameters()):
                    p.copy_(q)


def score(net: FourHeads, x: torch.Tensor, patches: bool = True) -> torch.Tensor:
    """s(x) = sigmoid((h1 + A(h2)) / 2) (sigmoid(h1) without patches): the teacher score and the
    test-time score; h3/h4 are not used."""
    heads = ("h1", "h2")  # generation heads only
    out = net(x, heads, patches)
    logits = (out[heads[0]] + out[heads[1]]) / 2 if patches else out[heads[0]]
    return torch.sigmoid(logits)


@torch.no_grad()
def scores_of(net: FourHeads, images: torch.Tensor, patches: bool, batch: int = 256) -> np.ndarray:
    was = net.training
    net.eval()
    device = next(net.parameters()).device
    out = torch.cat([score(net, images[s:s + batch].to(device), patches).float().cpu()
                     for s in range(0, len(images), batch)])
    net.train(was)
    return out.numpy()


# -- thresholds ------------------------------------------------------------------------------------

def threshold_grid(step: float = GRID_STEP) -> np.ndarray:
    return np.round(np.arange(0, 1 - step / 2, step), 6)  # 0.00, 0.01, ..., 0.99


def metric_curves(scores: np.ndarray, targets: np.ndarray, metric: str = "fbeta", beta: float = 0.5,
                  fbeta_form: str = "code", grid: np.ndarray | None = None) -> np.ndarray:
    """M_k(t) for every class k and grid value t (K, T); NaN where it is 0/0."""
    grid = threshold_grid() if grid is None else grid
    y = np.asarray(targets).astype(bool)
    predicted = np.asarray(scores)[:, :, None] >= grid[None, None, :]  # (n, K, T)
    hits = (predicted & y[:, :, None]).sum(0).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = hits / predicted.sum(0)
        recall = hits / y.sum(0)[:, None]
        if metric == "precision":
            return precision
        if metric == "recall":
            return recall
        b = 1.0 if metric == "f1" else beta
        weight = b if fbeta_form == "code" and metric == "fbeta" else b * b
        return (1 + b * b) * precision * recall / (weight * precision + recall)


def mat_thresholds(scores: np.ndarray, targets: np.ndarray, metric: str = "fbeta", beta: float = 0.5,
                   fbeta_form: str = "code", empty_threshold: float = 1.0) -> tuple[np.ndarray, list[int]]:
    """MAT: tau_k = the smallest grid t with the largest M_k(t) on (labelled) scores; the classes
    without a positive get ``empty_threshold`` and are returned."""
    grid = threshold_grid()
    curves = np.nan_to_num(metric_curves(scores, targets, metric, beta, fbeta_form, grid), nan=-np.inf)
    tau = grid[np.argmax(curves, axis=1)]  # argmax: the first maximum, the code's strict ">"
    tau[curves.max(1) <= 0] = 0.0  # no update from the code's best = 0, tau = 0
    empty = np.flatnonzero(np.asarray(targets).sum(0) == 0)
    tau[empty] = empty_threshold
    return tau, empty.tolist()


def cap_thresholds(unlabelled_scores: np.ndarray, labelled_targets: np.ndarray,
                   empty_threshold: float = 1.0) -> tuple[np.ndarray, list[int]]:
    """CAP: tau_k = the unlabelled score ranked floor(gamma_k n_u) (1-based, descending), gamma_k
    the labelled positive rate; rank 0 reads index -1 (the minimum), as in the code."""
    gamma = np.asarray(labelled_targets).mean(0)
    ranked = -np.sort(-np.asarray(unlabelled_scores), axis=0)
    index = np.floor(gamma * len(ranked)).astype(int) - 1
    tau = ranked[index, np.arange(ranked.shape[1])]
    empty = np.flatnonzero(gamma == 0)
    tau[empty] = empty_threshold
    return tau, empty.tolist()


def pseudo_thresholds(config: D2LMATConfig, labelled_scores: np.ndarray, labelled_targets: np.ndarray,
                      unlabelled_scores: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """The thresholds of the pseudo-labels, the method's way (MAT or CAP)."""
    if config.thresholds == "cap":
        return cap_thresholds(unlabelled_scores, labelled_targets, config.empty_threshold)
    return mat_thresholds(labelled_scores, labelled_targets, config.metric, config.beta, config.fbeta_form,
                          config.empty_threshold)


# -- training --------------------------------------------------------------------------------------

def student_loss(net: FourHeads, config: D2LMATConfig, x: torch.Tensor, y: torch.Tensor,
                 x_u: torch.Tensor | None = None, y_hat: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """ASL of the generation heads on true labels, plus (with unlabelled data) that of the
    utilisation heads on pseudo-labels (h1/h2 themselves when ``decouple`` is off)."""
    def terms(images: torch.Tensor, targets: torch.Tensor, heads: tuple[str, str]) -> torch.Tensor:
        out = net(images, heads, config.patches, generator)
        return sum(asl(out[h], targets, config.gamma_neg, config.gamma_pos, config.clip, config.reduction)
                   for h in out)

    loss = terms(x, y, ("h1", "h2")) if len(x) else torch.zeros(())
    if x_u is not None:
        use = ("h3", "h4") if config.decouple else ("h1", "h2")
        loss = loss + terms(x_u, y_hat, use)
    return loss


def main_loss(net: FourHeads, teacher: nn.Module, config: D2LMATConfig, x: torch.Tensor, y: torch.Tensor,
              weak_u: torch.Tensor, strong_u: torch.Tensor, tau: torch.Tensor,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """One main-stage step's loss: the teacher's pseudo-labels on the weak unlabelled view, the
    student's losses on the strong views."""
    y_hat = pseudo_labels(teacher, weak_u, tau, config.patches)
    return student_loss(net, config, x, y, strong_u, y_hat, generator)


@torch.no_grad()
def pseudo_labels(teacher: nn.Module, x: torch.Tensor, tau: torch.Tensor, patches: bool) -> torch.Tensor:
    """1[s_teacher(x) >= tau], hard, every class, nothing masked."""
    was = teacher.training
    teacher.eval()
    labels = (score(teacher, x, patches) >= tau).float()
    teacher.train(was)
    return labels


def ema_of(net: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    teacher = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher

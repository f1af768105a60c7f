"""PAT: counterfactual reasoning for multi-label classification by patching-based training and
inference (Xie et al., ICML 2024; spec ``specs/cf_multilabel.md``; the authors' code xiemk/MLC-PAT,
``run_PAT-T.py``, ``run_PAT-I.py``, ``src_files/models/factory.py``, ``src_files/data/data.py``).

A shared model learns correlative features of co-occurring objects (a mediator): they raise true
positives when a target appears with its usual companions and cause false positives when only the
companions appear. PAT estimates the total direct effect (TDE) of the target through a *pivot
patch*: the image is cut into ``n_grid`` x ``n_grid`` zoomed patches
(:func:`vision.multilabel.patches.patch_view`), and per class k a soft selection over patches j,

    z^pat_k = sum_j softmax_j(a_{., k}) * v_{j, k}          (softmax over the patch axis)

picks the patch most likely to hold the target alone; the score combines it with the whole-image
logit *in logit space*: s_k = sigmoid((1 - w) z^glob_k + w z^pat_k), w = ``patch_weight`` = 0.5 in
the code (the average of the logits, not of the probabilities).

- ``mode: inference`` (PAT-I): train the dependent baseline (:class:`DeTBaseline`: one backbone and
  head for all labels, whole images), then score with z^glob = f(x) and a = v = f(patches) (one head
  for both; :func:`vision.multilabel.patches.aggregate`). The result reports the baseline too.
- ``mode: train`` (PAT-T): backbone plus three linear heads (``heads: cross``: g on the whole image,
  a = selection and v = value on the patches; ``heads: self``: two heads, a = v), loss
  L = ASL(z^glob, y) + ASL(z^pat, y) (gamma- 4, gamma+ 0, clip 0.05, summed over batch x classes,
  the focusing weight without gradient); inference by the same formula.

What the code does and this module follows: AdamW, OneCycle (pct_start 0.2), an EMA of the weights
(:class:`torch.optim.swa_utils.AveragedModel`), the better of student and EMA kept by mAP (here on a
held-out ``val_fraction`` of the training set, every epoch, the val BCE of both in the history; the
code selects on its test set), the whole image and its patches in one concatenated forward pass
(``joint_forward: true``; BatchNorm statistics then mix both views; ``false`` runs them separately
as D2L does), patches shuffled on every call (seeded), thresholds only for CF1/OF1 (0.5), mAP from
the scores.

The TDE: the paper's section 3.2 defines TDE = Y(X=x, O=o) - Y(X=x*, O=o); the code (and this
module) never subtracts a counterfactual term: it *enhances the direct effect* by mixing in the
pivot-patch logit with weight 1/2. [assumed: the paper's exact estimator was not retrieved; the
weight is a parameter, ``patch_weight``.]

Omissions and deviations (stated): CPU-sized defaults (a small ConvNet from scratch on 32 px
confounded digit mosaics, :mod:`vision.multilabel.confounded`, not ResNet-101/TResNet-L pretrained
at 448 px; lr 5e-3 for 1e-4, 30 epochs for 80, EMA decay 0.99 for 0.9997, batch 64 for 128, bf16
autocast on CUDA for fp16 AMP); no early stop (the code's reads an undefined flag and kills
processes); augmentation (``train.augment``: the weak random crop of :mod:`vision.augment`, applied
independently to the whole image and to each cell, as the code applies its own per view) replaces
Cutout + RandAugment and is off by default; the independent-training reference of the paper's
diagnosis (``det_baseline`` with ``independent: true``: InT) trains one model per *target* class
(``mosaic.targets``), not one per class; the unused ``--temperature`` flag is left out; the Q2L heads are not
implemented. From :class:`vision.train.TrainConfig` it uses backbone, epochs, batch_size, lr,
weight_decay, augment, flip, device, amp, seed, checkpoint_dir and progress (warmup_epochs and
momentum are unused). Every epoch is checkpointed atomically; a rerun resumes where the last one
stopped, to the same result.
The experiment loop is :mod:`vision.multilabel.pat_experiment`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from curate.core.errors import BadInputError
from vision.multilabel.losses import asymmetric_loss
from vision.multilabel.confounded import ConfoundedConfig
from vision.multilabel.patches import aggregate, patch_view
from vision.train import TrainConfig

LOSSES = ("asl", "bce")


@dataclass(frozen=True)
class LossFields:
    loss: str = "asl"  # the code's ASL; "bce": plain binary cross-entropy (summed)
    gamma_neg: float = 4.0
    gamma_pos: float = 0.0
    clip: float = 0.05
    threshold: float = 0.5  # on probabilities, for CF1/OF1 and the conditional TPR/FPR

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise BadInputError(f"loss must be one of {', '.join(LOSSES)}, got '{self.loss}'")
        for name in ("gamma_neg", "gamma_pos"):
            if getattr(self, name) < 0:
                raise BadInputError(f"{name} must be non-negative, got {getattr(self, name)}")
        if not 0 <= self.clip < 1:
            raise BadInputError(f"clip must be in [0, 1), got {self.clip}")
        if not 0 < self.threshold < 1:
            raise BadInputError(f"threshold must be in (0, 1), got {self.threshold}")


@dataclass(frozen=True)
class BaselineConfig(LossFields):
    loss: str = "bce"
    # InT, the paper's reference: one model per target class (mosaic.targets), each trained on its
    # own label only; the result covers those classes only
    independent: bool = False


@dataclass(frozen=True)
class PATConfig(LossFields):
    mode: str = "train"  # train: PAT-T; inference: PAT-I on the trained dependent baseline
    heads: str = "cross"  # cross: global, selection and value heads; self: global and one patch head (a = v)
    n_grid: int = 2
    patch_weight: float = 0.5  # w in sigmoid((1 - w) z_glob + w z_pat); the code's 1/2
    joint_forward: bool = True  # whole image and patches in one forward pass (the code)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in ("train", "inference"):
            raise BadInputError(f"mode must be train or inference, got '{self.mode}'")
        if self.heads not in ("cross", "self"):
            raise BadInputError(f"heads must be cross or self, got '{self.heads}'")
        if not 2 <= self.n_grid <= 4:
            raise BadInputError(f"n_grid must be in [2, 4], got {self.n_grid}")
        if not 0 <= self.patch_weight <= 1:
            raise BadInputError(f"patch_weight must be in [0, 1], got {self.patch_weight}")


@dataclass
class PATTrainConfig(TrainConfig):
    """:class:`vision.train.TrainConfig` with the CPU-sized defaults of this protocol."""

    backbone: str = "convnet:32"
    epochs: int = 30
    warmup_epochs: int = 0
    batch_size: int = 64
    lr: float = 5e-3  # AdamW, the OneCycle peak
    weight_decay: float = 1e-4
    augment: bool = False


@dataclass
class PATExperimentConfig:
    dataset: str = "confounded_mosaics"
    seed: int = 0  # the digits train/test split
    mosaic: ConfoundedConfig = field(default_factory=ConfoundedConfig)
    train: PATTrainConfig = field(default_factory=PATTrainConfig)
    ema_decay: float = 0.99  # 0: no EMA
    val_fraction: float = 0.1  # of the training mosaics, held out to pick student or EMA and the epoch
    method: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dataset != "confounded_mosaics":
            raise BadInputError(f"dataset must be confounded_mosaics, got '{self.dataset}'")
        if not 0 <= self.ema_decay < 1:
            raise BadInputError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0 < self.val_fraction < 0.5:
            raise BadInputError(f"val_fraction must be in (0, 0.5), got {self.val_fraction}")


class DeTBaseline:
    """Dependent training: one shared backbone and head for all labels, on whole images."""

    name = "det_baseline"
    config_class = BaselineConfig

    def __init__(self, config: BaselineConfig | None = None):
        self.config = config or BaselineConfig()


class PAT:
    name = "pat"
    config_class = PATConfig

    def __init__(self, config: PATConfig | None = None):
        self.config = config or PATConfig()


# -- the pieces ---------------------------------------------------------------------------------

def criterion(logits: torch.Tensor, targets: torch.Tensor, config: LossFields) -> torch.Tensor:
    if config.loss == "bce":
        return nn.functional.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="sum")
    return asymmetric_loss(logits, targets, config.gamma_neg, config.gamma_pos, config.clip)


def pivot_pool(select: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
    """(B, P, K) selection logits a (and value logits v; None: a = v) -> (B, K):
    z^pat_k = sum_j softmax_j(a_{., k}) v_{j, k}, the softmax over the patch axis."""
    if values is None:
        return aggregate(select)
    return (torch.softmax(select, dim=1) * values).sum(dim=1)


def combine(global_logits: torch.Tensor, patch_logits: torch.Tensor, patch_weight: float = 0.5) -> torch.Tensor:
    """The score: sigmoid of the weighted average of the whole-image and pivot-patch logits."""
    return torch.sigmoid((1 - patch_weight) * global_logits + patch_weight * patch_logits)


class PatchHeads(nn.Module):
    """A backbone (``features`` + ``classifier``, the global head g) with the patch heads of PAT-T:
    ``cross``: a selection head a and a value head v; ``self``: one head (a = v); ``none``: g
    serves the patches too (PAT-I on a plain model)."""

    def __init__(self, backbone: nn.Module, num_classes: int, heads: str = "none"):
        super().__init__()
        self.backbone = backbone
        dim = backbone.feature_dim
        self.select = nn.Linear(dim, num_classes) if heads in ("cross", "self") else None
        self.value = nn.Linear(dim, num_classes) if heads == "cross" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # the global logits
        return self.backbone(x)

    def views(self, x: torch.Tensor, patches: torch.Tensor, joint: bool = True
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(z^glob (B, K), a (B, P, K), v (B, P, K) or None for a = v) of ``x`` and its
        ``patches`` (B, P, C, S, S); ``joint``: one forward pass over both (the code's concat)."""
        b, p = patches.shape[:2]
        flat = patches.flatten(0, 1)
        if joint:
            features = self.backbone.features(torch.cat([x, flat]))
            whole, cells = features[:b], features[b:]
        else:
            whole, cells = self.backbone.features(x), self.backbone.features(flat)
        glob = self.backbone.classifier(whole)
        select = (self.select or self.backbone.classifier)(cells).reshape(b, p, -1)
        values = self.value(cells).reshape(b, p, -1) if self.value is not None else None
        return glob, select, values


def pat_logits(net: PatchHeads, x: torch.Tensor, n_grid: int, generator: torch.Generator | None,
               joint: bool = True, augment=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(z^glob, z^pat) of ``x``: its patches (shuffled by ``generator``), the pivot pooling.
    ``augment``: a function applied to the whole images and, independently, to every cell."""
    patches = patch_view(x, n_grid, generator=generator)  # the order is drawn on the CPU generator
    if augment is not None:
        x, patches = augment(x), augment(patches.flatten(0, 1)).reshape(patches.shape)
    glob, select, values = net.views(x, patches, joint)
    return glob, pivot_pool(select, values)


def pat_t_loss(net: PatchHeads, x: torch.Tensor, y: torch.Tensor, options: PATConfig,
               generator: torch.Generator | None, augment=None) -> torch.Tensor:
    """PAT-T's loss: L(z^glob, y) + L(z^pat, y), the pivot-patch logit trained as a prediction too."""
    glob, pooled = pat_logits(net, x, options.n_grid, generator, options.joint_forward, augment)
    return criterion(glob, y, options) + criterion(pooled, y, options)


def multi_scores(net: PatchHeads, images: torch.Tensor, options: LossFields, seed: int,
                 batch_size: int = 256) -> dict[str, np.ndarray]:
    """Probabilities of ``images`` in eval mode: ``global`` (sigmoid of z^glob) and, for PAT,
    ``pat`` (the combination); the patch order is shuffled from ``seed``."""
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, list[torch.Tensor]] = {"global": [], "pat": []}
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].to(device)
            if isinstance(options, PATConfig):
                glob, pooled = pat_logits(net, x, options.n_grid, generator, options.joint_forward)
                out["pat"].append(combine(glob, pooled, options.patch_weight).float().cpu())
            else:
                glob = net(x)
            out["global"].append(torch.sigmoid(glob.float()).cpu())
    net.train(was_training)
    return {k: torch.cat(v).numpy() for k, v in out.items() if v}

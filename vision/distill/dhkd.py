"""DHKD, dual-head knowledge distillation (Yang, Zong, Huang, Feng and An, arXiv 2411.08937; the
authors' code github.com/penghui-yang/DHKD, read at 7976c69).

The student's backbone feeds two heads: the main head (the backbone's own classifier) z1 = W1 h + b1
takes the probability-level loss, an auxiliary head z2 = g(h) the logit-level one, BinaryKL-Norm:

    L = gamma * CE(z1, y) + alpha * T^2 / B * sum_{i,c} KL(Bern(1/2) || Bern(sigmoid((z2 - zt)_ic / T)))
      [+ kd_weight * softmax-KD(z1, zt; kd_temperature)]          (kd_weight 0, as the released code)

Each KL element is log cosh((z2 - zt)_ic / 2T) (computed as u + softplus(-2u) - log 2, exact at any
|u|, where the code's sigmoid + clamp(1e-8) saturates). Both gradients reach the backbone; only z1
is used at test time. Optional gradient alignment (``ga``, the CIFAR recipe's ``--ga``): the two
parts are back-propagated separately, their gradients flattened over every trained parameter
(zeros where a part does not reach), and the distillation gradient, when it conflicts with the CE
one (negative dot product), loses its component along it; CE's gradient is never changed. The sum
is the gradient; SGD (weight decay in it) takes the step. ``heads: single`` is the paper's ablation:
both losses on the one classifier (``gamma: 0`` with it: BinaryKL alone).

Defaults follow the CIFAR-100 recipe: gamma 1, alpha 1, T 2, the non-linear auxiliary head
``Linear(d, 200) -> Dropout(0.1) -> BatchNorm1d(200) -> ReLU -> Linear(200, C)``, GA on.
``alpha_epochs`` is the ImageNet recipe's ``--early_stop_epoch`` (alpha is 0 from that epoch on).

Left out of the paper/code: the optional gradient clipping (``--gc``), AMP loss scaling with GA
(there is none: the loop's CUDA autocast is bf16), ReviewKD and other feature-distillation
combinations, the segmentation (Cityscapes) experiments, the unnormalised BinaryKL (in the repo
but used by no script) and the model zoo (any backbone of :mod:`vision.backbones` is the student).
The paper's tables were not available here (the spec says so); the defaults are the code's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from curate.core.errors import BadInputError
from vision.distill.base import Distiller
from vision.distill.kd import softmax_kd
from vision.train import Batch, predict

AUX_HEADS = ("mlp", "linear")
HEADS = ("dual", "single")


def bkl_norm(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """BinaryKL-Norm of (B, C) logits: T^2 * mean over rows of sum over classes of
    KL(Bern(1/2) || Bern(sigmoid((student - teacher) / T))) = T^2 * log cosh((student - teacher) / 2T)."""
    u = (student.float() - teacher.float()) / (2 * temperature)
    log_cosh = u + F.softplus(-2 * u) - math.log(2)
    return temperature ** 2 * log_cosh.sum(1).mean()


def align_gradients(g_ce: torch.Tensor, g_kd: torch.Tensor) -> torch.Tensor:
    """GA on two flat gradients: g_ce + g_kd, with g_kd first projected off g_ce when they conflict
    (g_kd . g_ce < 0); g_ce itself is never changed (an asymmetric PCGrad)."""
    dot = torch.dot(g_kd, g_ce)
    if dot < 0:
        g_kd = g_kd - dot / torch.dot(g_ce, g_ce) * g_ce
    return g_ce + g_kd


def aligned_backward(ce: torch.Tensor, kd: torch.Tensor, params: list[nn.Parameter]) -> None:
    """Set ``params``' gradients to :func:`align_gradients` of the two losses' gradients, flattened
    over all of ``params`` at once (the authors' code projects the global vector, not per layer)."""
    flat = []
    for part in (ce, kd):
        grads = torch.autograd.grad(part, params, retain_graph=True, allow_unused=True)
        flat.append(torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)]))
    merged = align_gradients(*flat)
    for p, g in zip(params, merged.split([p.numel() for p in params])):
        p.grad = g.view_as(p).clone()


def aux_head(kind: str, feature_dim: int, num_classes: int, hidden: int = 200) -> nn.Module:
    """The auxiliary head: linear (the ImageNet recipe) or the CIFAR recipe's small MLP."""
    if kind == "linear":
        return nn.Linear(feature_dim, num_classes)
    return nn.Sequential(nn.Linear(feature_dim, hidden), nn.Dropout(0.1), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))


class DualHead(nn.Module):
    """A backbone (``features`` and ``classifier``) with an auxiliary head on the same feature:
    (z1, z2) in training mode, z1 alone in eval mode (the auxiliary head is for training only)."""

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, aux: str = "mlp", hidden: int = 200):
        super().__init__()
        self.backbone = backbone
        self.aux = aux_head(aux, feature_dim, num_classes, hidden)

    def both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.backbone.features(x)
        return self.backbone.classifier(h), self.aux(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        z1, z2 = self.both(x)
        return (z1, z2) if self.training else z1


@dataclass
class DHKDConfig:
    gamma: float = 1.0  # weight of CE on the main head
    alpha: float = 1.0  # weight of BinaryKL-Norm on the auxiliary head
    temperature: float = 2.0
    kd_weight: float = 0.0  # softmax-KD on the main head (0 in the released DHKD mode)
    kd_temperature: float = 4.0
    aux: str = "mlp"  # mlp (CIFAR recipe) | linear (ImageNet recipe)
    aux_hidden: int = 200
    heads: str = "dual"  # dual | single (both losses on the one classifier: the paper's ablation)
    ga: bool = True  # gradient alignment of the distillation gradient with the CE one
    alpha_epochs: int | None = None  # alpha is 0 from this epoch on (ImageNet recipe: 50); None: never

    def __post_init__(self) -> None:
        for name in ("gamma", "alpha", "kd_weight"):
            if getattr(self, name) < 0:
                raise BadInputError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("temperature", "kd_temperature"):
            if getattr(self, name) <= 0:
                raise BadInputError(f"{name} must be positive, got {getattr(self, name)}")
        if self.aux not in AUX_HEADS:
            raise BadInputError(f"aux must be one of {', '.join(AUX_HEADS)}, got {self.aux!r}")
        if self.heads not in HEADS:
            raise BadInputError(f"heads must be one of {', '.join(HEADS)}, got {self.heads!r}")
        if self.aux_hidden < 1:
            raise BadInputError(f"aux_hidden must be at least 1, got {self.aux_hidden}")
        if self.alpha_epochs is not None and self.alpha_epochs < 0:
            raise BadInputError(f"alpha_epochs must be >= 0 or null, got {self.alpha_epochs}")


class DHKD(Distiller):
    name = "dhkd"
    config_class = DHKDConfig

    def __init__(self, config: DHKDConfig | None = None):
        super().__init__()
        self.config = config or DHKDConfig()
        self.dual: DualHead | None = None

    def modules(self, model: nn.Module, data) -> dict[str, nn.Module]:
        if self.config.heads == "single":
            self.dual = None
            return {}
        self.dual = DualHead(model, model.feature_dim, data.num_classes, self.config.aux, self.config.aux_hidden)
        return {"aux": self.dual.aux}  # the backbone is the loop's model; only the head is new

    def logits(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z1, z2): the main and auxiliary heads' logits (the same tensor with a single head)."""
        if self.dual is None:
            z = model(x)
            return z, z
        return self.dual.both(x)

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(gamma * CE on z1, the distillation part): the parts :meth:`backward` aligns."""
        c = self.config
        teacher = self.teacher_logits(batch.weak)
        z1, z2 = self.logits(model, batch.weak)
        alpha = 0.0 if c.alpha_epochs is not None and batch.epoch >= c.alpha_epochs else c.alpha
        distill = alpha * bkl_norm(z2, teacher, c.temperature)
        if c.kd_weight > 0:
            distill = distill + c.kd_weight * softmax_kd(z1, teacher, c.kd_temperature)
        return c.gamma * F.cross_entropy(z1, batch.labels), distill

    def backward(self, parts: tuple[torch.Tensor, ...], params: list[nn.Parameter]) -> None:
        ce, distill = parts
        if self.config.ga and distill.requires_grad and ce.requires_grad:
            aligned_backward(ce, distill, params)
        else:
            (ce + distill).backward()

    def predict(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The main head's logits z1 (the auxiliary head is not used at test time)."""
        return predict(model if self.dual is None else self.dual, images)

"""Plain knowledge distillation (Hinton, Vinyals and Dean 2015), the baseline of every distiller.

    L = ce_weight * CE(z_s, y) + kd_weight * T^2 * (1/N) sum_i KL( softmax(z_t,i / T) || softmax(z_s,i / T) )

with N the number of rows (samples, or pixels for dense outputs). The T^2 keeps the gradient's
scale independent of T. Defaults are RepDistiller's KD recipe (T = 4, ce 0.1, kd 0.9), the
baseline DHKD compares with.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from curate.core.errors import BadInputError
from vision.distill.base import Distiller
from vision.train import Batch


def softmax_kd(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * mean over rows of KL(softmax(teacher/T) || softmax(student/T)). Logits are (N, C) or
    dense (N, C, ...): every position is a row (the mean is over all N * H * W pixels)."""
    if student.shape != teacher.shape:
        raise ValueError(f"student logits {tuple(student.shape)} and teacher logits {tuple(teacher.shape)} differ")
    classes = student.shape[1]
    s = student.float().movedim(1, -1).reshape(-1, classes) / temperature
    t = teacher.float().movedim(1, -1).reshape(-1, classes) / temperature
    log_p_t = t.log_softmax(-1)
    kl = (log_p_t.exp() * (log_p_t - s.log_softmax(-1))).sum(-1)
    return temperature ** 2 * kl.mean()


@dataclass
class KDConfig:
    temperature: float = 4.0
    ce_weight: float = 0.1
    kd_weight: float = 0.9

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise BadInputError(f"temperature must be positive, got {self.temperature}")
        for name in ("ce_weight", "kd_weight"):
            if getattr(self, name) < 0:
                raise BadInputError(f"{name} must be >= 0, got {getattr(self, name)}")


class KD(Distiller):
    name = "kd"
    config_class = KDConfig

    def __init__(self, config: KDConfig | None = None):
        super().__init__()
        self.config = config or KDConfig()

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        logits = model(batch.weak)
        return (self.config.ce_weight * nn.functional.cross_entropy(logits, batch.labels)
                + self.config.kd_weight * softmax_kd(logits, self.teacher_logits(batch.weak), self.config.temperature))

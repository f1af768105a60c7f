"""The distillation family's base method: a :class:`vision.train.Method` that holds a frozen teacher."""
from __future__ import annotations

import hashlib

import torch
from torch import nn

from vision.train import Method


def freeze(model: nn.Module) -> nn.Module:
    """The teacher as distillation needs it: eval mode (BatchNorm statistics and dropout fixed),
    no parameter that takes a gradient."""
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def weights_digest(model: nn.Module) -> str:
    """A digest of a model's parameters and buffers (a student's checkpoint key names its teacher)."""
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        h.update(f"{key}:{tuple(value.shape)}:{value.dtype}".encode())
        h.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


class Distiller(Method):
    """A student method with a teacher (set by the family's runner before training)."""

    def __init__(self) -> None:
        self.teacher: nn.Module | None = None

    def set_teacher(self, teacher: nn.Module) -> None:
        self.teacher = freeze(teacher)

    def identity(self) -> str:
        if self.teacher is None:
            return super().identity()
        return f"{super().identity()} teacher={weights_digest(self.teacher)}"

    @torch.no_grad()
    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.teacher is None:
            raise RuntimeError(f"{self.name}: no teacher; run it through the distill family's runner or set_teacher()")
        self.teacher.eval()
        if next(self.teacher.parameters()).device != x.device:
            self.teacher.to(x.device)
        return self.teacher(x).float()

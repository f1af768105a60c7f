"""What every federated method and both drivers share: the method interface, the masked
distillation pieces, one client's local training, FedAvg aggregation, seeded client sampling and
the global evaluation. Plain functions on tensors and state dicts, so that the in-process driver
and the Flower ClientApp/ServerApp run the same code.

The distillation loss of FedNTD, FedLMD and FedLMD-Tf, with support S_i (the classes the target
keeps for sample i) and the student's not-true distribution q_s = softmax over c != y_i of z_c/tau:

    L = CE(z, y) + beta * tau^2 * (1/B) sum_i sum_{c in S_i} q_t,ic (log q_t,ic - log q_s,ic)

The masks are exact (probability 0, not the authors' soft ``-1000`` on the logits); a row whose
support is empty contributes 0 (the ``-1000`` trick would spread it over the masked classes).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from curate.core.errors import BadInputError


@dataclass
class NotTrueKDConfig:
    """tau and beta of the not-true distillation term (the authors' fedntd/fedlmd configs: 1, 1)."""

    tau: float = 1.0
    beta: float = 1.0

    def __post_init__(self) -> None:
        if not self.tau > 0:
            raise BadInputError(f"tau must be positive, got {self.tau}")
        if not self.beta >= 0:
            raise BadInputError(f"beta must be >= 0, got {self.beta}")


class FederatedMethod:
    """A client objective; FedAvg's is cross-entropy. ``uses_teacher``: keep a frozen copy of the
    received global model and pass its logits to :meth:`loss`."""

    name = "fedavg"
    config_class: type | None = None
    uses_teacher = False

    def __init__(self, config: Any = None) -> None:
        self.config = config

    def identity(self) -> str:
        return f"{self.name} {self.config!r}"

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor | None,
             majority: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits, labels)


def true_mask(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Bool (B, C): True at each row's label."""
    return nn.functional.one_hot(labels, logits.shape[1]).bool()


def not_true_log_probs(logits: torch.Tensor, labels: torch.Tensor, tau: float) -> torch.Tensor:
    """log q_s: log-softmax of logits/tau over the classes other than y (-inf at y)."""
    return (logits.float() / tau).masked_fill(true_mask(logits, labels), float("-inf")).log_softmax(1)


def masked_softmax(logits: torch.Tensor, masked: torch.Tensor, tau: float) -> torch.Tensor:
    """softmax of logits/tau over the classes not ``masked`` (B, C bool), exactly 0 on the masked
    ones; a fully masked row is all zeros."""
    keep = ~masked
    z = (logits.float() / tau).masked_fill(masked, float("-inf"))
    z = torch.where(keep.any(1, keepdim=True), z, torch.zeros_like(z))  # no all -inf row (NaN)
    return z.softmax(1) * keep


def uniform_target(masked: torch.Tensor) -> torch.Tensor:
    """Uniform over the classes not ``masked``, per row (a fully masked row is all zeros)."""
    keep = (~masked).float()
    return keep / keep.sum(1, keepdim=True).clamp(min=1)


def kd_to_target(target: torch.Tensor, log_student: torch.Tensor, tau: float) -> torch.Tensor:
    """tau^2 * (1/B) sum_i KL(target_i || student_i), summed over each target's support only; the
    target is detached here (the teacher never takes a gradient), for every method."""
    target = target.detach()
    support = target > 0
    log_target = torch.where(support, target, torch.ones_like(target)).log()
    log_student = log_student.masked_fill(~support, 0.0)
    return tau ** 2 * (target * (log_target - log_student)).sum(1).mean()


@dataclass
class LocalResult:
    loss: float  # mean training loss over the local steps
    steps: int
    teacher: nn.Module | None  # the frozen copy of the received global model (methods with a teacher)


def local_train(model: nn.Module, method: FederatedMethod, images: torch.Tensor, labels: torch.Tensor,
                majority: torch.Tensor, lr: float, epochs: int, batch_size: int, momentum: float,
                weight_decay: float, seed: int) -> LocalResult:
    """Train ``model`` (holding the received global weights) in place on one client's data: SGD
    with a fresh momentum buffer, ``epochs`` passes in a seeded order, ``method``'s loss."""
    device = next(model.parameters()).device
    teacher = None
    if method.uses_teacher:
        teacher = copy.deepcopy(model).eval()
        for parameter in teacher.parameters():
            parameter.requires_grad_(False)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    majority = majority.to(device)
    model.train()
    total, steps = 0.0, 0
    for _ in range(epochs):
        for rows in torch.randperm(len(labels), generator=generator).split(batch_size):
            x, y = images[rows].to(device), labels[rows].to(device)
            logits = model(x)
            teacher_logits = None
            if teacher is not None:
                with torch.no_grad():
                    teacher_logits = teacher(x)
            loss = method.loss(logits, y, teacher_logits, majority)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, steps = total + float(loss.detach()), steps + 1
    return LocalResult(total / max(steps, 1), steps, teacher)


def client_seed(seed: int, round_: int, client: int) -> int:
    """The seed of one client's batch order in one round (the same under both drivers)."""
    return int(np.random.SeedSequence([seed, round_, client]).generate_state(1)[0])


def sample_clients(clients: int, ratio: float, round_: int, seed: int) -> list[int]:
    """max(floor(ratio * K), 1) distinct clients, drawn from a generator seeded by (seed, round)
    (the authors reseed numpy with the round: every method sees the same clients)."""
    m = max(int(clients * ratio), 1)
    return sorted(np.random.default_rng([seed, round_]).choice(clients, m, replace=False).tolist())


def fedavg(states: list[dict[str, torch.Tensor]], sizes: list[int]) -> dict[str, torch.Tensor]:
    """sum_k n_k w_k / sum_k n_k for every state_dict entry (integer buffers rounded back)."""
    if not states or len(states) != len(sizes):
        raise ValueError(f"fedavg: {len(states)} states for {len(sizes)} sizes")
    total = float(sum(sizes))
    out = {}
    for key, first in states[0].items():
        value = sum(state[key].float() * (n / total) for state, n in zip(states, sizes))
        out[key] = value.to(first.dtype) if first.is_floating_point() else value.round().to(first.dtype)
    return out


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, Any]:
    """Test accuracy and per-class accuracy of ``model`` (eval mode)."""
    from vision.train import predict

    hit = (predict(model, images).argmax(1).cpu() == labels).float()
    per_class = [float(hit[labels == c].mean()) if bool((labels == c).any()) else None for c in range(num_classes)]
    return {"test_accuracy": float(hit.mean()), "per_class_accuracy": per_class}


def subset_accuracy(per_class: list[float | None], classes: np.ndarray) -> float | None:
    """Mean of the per-class accuracies over ``classes`` (bool mask), None when empty."""
    values = [a for a, keep in zip(per_class, classes) if keep and a is not None]
    return float(np.mean(values)) if values else None

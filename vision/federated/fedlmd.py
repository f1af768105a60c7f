"""FedLMD (Lu et al., ACM MM 2023), label-masking distillation: the teacher is the frozen global
model received this round; in its distribution the true label **and the client's majority labels
M_k** are masked, so the local model is pulled toward the global model's knowledge of the
classes the client rarely or never sees:

    q_t = softmax over c not in {y} u M_k of z^t_c / tau   (0 elsewhere)
    q_s = softmax over c != y of z_c / tau                  (majority classes NOT masked)
    L   = CE(z, y) + beta * tau^2 * (1/B) sum_i KL(q_t,i || q_s,i)

M_k = {c : n_kc > mean_c' n_kc'} (:func:`vision.federated.partition.majority_classes`), computed
on the client from its label counts. Defaults tau = 1, beta = 1 (``config/fedlmd.json``).
Differences from the authors' code (``src/algorithms/fedlmd/criterion.py``): exact masks in place
of ``-1000`` on the logits, and a row whose target support is empty (every class but y is a
majority class) contributes 0. Omitted: the paper's other datasets, models and augmentations
(CIFAR crop/flip/Cutout), wandb logging, per-client test shards. The paper's tables were not
readable (only its abstract); nothing here is checked against them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vision.federated.base import FederatedMethod, NotTrueKDConfig, kd_to_target, masked_softmax, not_true_log_probs, true_mask


def lmd_target(teacher_logits: torch.Tensor, labels: torch.Tensor, majority: torch.Tensor, tau: float) -> torch.Tensor:
    """q_t: the teacher's softmax renormalised over the classes outside {y} u M_k."""
    masked = true_mask(teacher_logits, labels) | majority.to(teacher_logits.device)[None, :]
    return masked_softmax(teacher_logits, masked, tau)


def lmd_kd(logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, majority: torch.Tensor,
           tau: float) -> torch.Tensor:
    """The label-masking distillation term (before beta)."""
    return kd_to_target(lmd_target(teacher_logits, labels, majority, tau), not_true_log_probs(logits, labels, tau), tau)


@dataclass
class FedLMDConfig(NotTrueKDConfig):
    pass


class FedLMD(FederatedMethod):
    name = "fedlmd"
    config_class = FedLMDConfig
    uses_teacher = True

    def __init__(self, config: FedLMDConfig | None = None) -> None:
        super().__init__(config or FedLMDConfig())

    def loss(self, logits, labels, teacher_logits, majority):
        return (nn.functional.cross_entropy(logits, labels)
                + self.config.beta * lmd_kd(logits, teacher_logits, labels, majority, self.config.tau))

"""FedNTD (Lee et al., NeurIPS 2022), the not-true distillation baseline FedLMD forks: the local
model is pulled toward the received global model on every class but the true one.

    L = CE(z, y) + beta * tau^2 * (1/B) sum_i KL( softmax_{c != y}(z^t/tau) || softmax_{c != y}(z/tau) )

Defaults tau = 1, beta = 1: ``config/fedntd.json`` of the FedLMD repository (the FedNTD class
default is tau = 3). The authors drop the y column (``refine_as_not_true``); here it gets
probability 0 in both distributions, which is the same KL.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vision.federated.base import FederatedMethod, NotTrueKDConfig, kd_to_target, masked_softmax, not_true_log_probs, true_mask


def not_true_kd(logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, tau: float) -> torch.Tensor:
    """tau^2-scaled KL from the teacher's not-true distribution to the student's."""
    target = masked_softmax(teacher_logits, true_mask(logits, labels), tau)
    return kd_to_target(target, not_true_log_probs(logits, labels, tau), tau)


@dataclass
class FedNTDConfig(NotTrueKDConfig):
    pass


class FedNTD(FederatedMethod):
    name = "fedntd"
    config_class = FedNTDConfig
    uses_teacher = True

    def __init__(self, config: FedNTDConfig | None = None) -> None:
        super().__init__(config or FedNTDConfig())

    def loss(self, logits, labels, teacher_logits, majority):
        return (nn.functional.cross_entropy(logits, labels)
                + self.config.beta * not_true_kd(logits, teacher_logits, labels, self.config.tau))

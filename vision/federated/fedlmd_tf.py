"""FedLMD-Tf (Lu et al., ACM MM 2023), the teacher-free variant of FedLMD: the teacher's
distribution is replaced by the uniform one over the client's minority classes other than y,

    q_t,ic = 1 / |C \ ({y_i} u M_k)| for c outside {y_i} u M_k, 0 elsewhere,

so a round costs what FedAvg's does (no second forward pass, no stored global model). The
student side and the loss are FedLMD's (:mod:`vision.federated.fedlmd`). Implemented from these
semantics, not from the released code, which does not run (``LMD_Tf_Loss.forward`` passes 3 of
``lmd_tf_criterion``'s 4 arguments) and whose constant ``1/(C - len(label_mask) - 1)`` uses the
batch size (it can go negative) and is not renormalised when y is in M_k. An empty support (every
class but y is a majority class) gives 0. Defaults tau = 1, beta = 1 (``config/fedlmd_tf.json``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vision.federated.base import FederatedMethod, NotTrueKDConfig, kd_to_target, not_true_log_probs, uniform_target


def lmd_tf_target(labels: torch.Tensor, majority: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Uniform over C \\ ({y} u M_k), per row."""
    masked = nn.functional.one_hot(labels, num_classes).bool() | majority.to(labels.device)[None, :]
    return uniform_target(masked)


def lmd_tf_kd(logits: torch.Tensor, labels: torch.Tensor, majority: torch.Tensor, tau: float) -> torch.Tensor:
    """The teacher-free label-masking term (before beta)."""
    target = lmd_tf_target(labels, majority, logits.shape[1])
    return kd_to_target(target, not_true_log_probs(logits, labels, tau), tau)


@dataclass
class FedLMDTfConfig(NotTrueKDConfig):
    pass


class FedLMDTf(FederatedMethod):
    name = "fedlmd_tf"
    config_class = FedLMDTfConfig

    def __init__(self, config: FedLMDTfConfig | None = None) -> None:
        super().__init__(config or FedLMDTfConfig())

    def loss(self, logits, labels, teacher_logits, majority):
        return (nn.functional.cross_entropy(logits, labels)
                + self.config.beta * lmd_tf_kd(logits, labels, majority, self.config.tau))

"""Distribution Matching (Zhao & Bilen, WACV 2023): per class, the squared distance between the
mean features of the augmented real and synthetic batches under a randomly initialised ConvNet
(re-drawn every ``ipm`` iterations). Left out: multi-formation (factor 2, IDC), as in DM's paper."""
from __future__ import annotations

import torch

from vision.condense.base import Condenser


def dm_loss(real: torch.Tensor, synthetic: torch.Tensor) -> torch.Tensor:
    """‖mean(real) − mean(synthetic)‖² (sum over feature dimensions)."""
    return ((real.mean(0) - synthetic.mean(0)) ** 2).sum()


class DM(Condenser):
    name = "dm"

    def match_loss(self, real: torch.Tensor, synthetic: torch.Tensor) -> torch.Tensor:
        return dm_loss(real, synthetic)

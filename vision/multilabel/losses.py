"""Multi-label losses shared by the family."""
from __future__ import annotations

import torch


def asymmetric_loss(logits: torch.Tensor, targets: torch.Tensor, gamma_neg: float = 4.0, gamma_pos: float = 0.0,
                    clip: float = 0.05, reduction: str = "sum", eps: float = 1e-8) -> torch.Tensor:
    """ASL (Ridnik et al. 2021): the negatives' probability shifted down by ``clip``, each term
    weighted by the focusing factor (1 - p_t)^gamma computed without gradient; summed over batch x
    classes (the authors' code) or averaged (``reduction="mean"``)."""
    p = torch.sigmoid(logits.float())
    y = targets.float()
    p_neg = (1 - p + clip).clamp(max=1) if clip > 0 else 1 - p
    loss = y * p.clamp(min=eps).log() + (1 - y) * p_neg.clamp(min=eps).log()
    if gamma_neg > 0 or gamma_pos > 0:
        with torch.no_grad():
            p_t = p * y + p_neg * (1 - y)
            weight = (1 - p_t).pow(gamma_pos * y + gamma_neg * (1 - y))
        loss = loss * weight
    return -(loss.sum() if reduction == "sum" else loss.mean())

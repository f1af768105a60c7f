"""Patch views and their aggregation, shared by the multi-label methods that score an image by its
zoomed patches (D2L's discriminative branch, :mod:`vision.multilabel.ssmll`; PAT).

:func:`patch_view` resizes a batch to ``size`` x ``size``, cuts a ``grid`` x ``grid`` array of
non-overlapping cells, resizes each cell back to ``size`` x ``size`` (bilinear) and, given a
generator, shuffles the cells of every image (a seeded permutation per image, so patches carry no
positional meaning). :func:`patch_logits` runs a model on all patches at once and
:func:`aggregate` pools the patch logits per class with soft max-pooling:

    A(z)_k = sum_j softmax_j(z_{., k}) * z_{j, k}   (softmax over the patch axis)

which lies between the mean and the max over patches and does not depend on the patch order.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def patch_view(x: torch.Tensor, grid: int = 2, size: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, C, H, W) -> (B, grid*grid, C, size, size); ``size`` defaults to H. Without a generator the
    cells stay in row-major order; with one, each image's cells are permuted independently."""
    if x.dim() != 4:
        raise ValueError(f"patch_view expects (B, C, H, W), got shape {tuple(x.shape)}")
    if grid < 1:
        raise ValueError(f"grid must be at least 1, got {grid}")
    b, c = x.shape[:2]
    size = size or x.shape[-1]
    if size % grid:  # equal cells
        full = size + grid - size % grid
    else:
        full = size
    if x.shape[-2:] != (full, full):
        x = F.interpolate(x, size=(full, full), mode="bilinear", align_corners=False)
    cell = full // grid
    cells = x.unfold(2, cell, cell).unfold(3, cell, cell)  # (B, C, G, G, cell, cell)
    cells = cells.permute(0, 2, 3, 1, 4, 5).reshape(b * grid * grid, c, cell, cell)
    if cell != size:
        cells = F.interpolate(cells, size=(size, size), mode="bilinear", align_corners=False)
    cells = cells.reshape(b, grid * grid, c, size, size)
    if generator is not None:
        order = torch.argsort(torch.rand(b, grid * grid, generator=generator), dim=1)
        cells = cells[torch.arange(b)[:, None], order]
    return cells


def patch_logits(model: Callable[[torch.Tensor], torch.Tensor], patches: torch.Tensor) -> torch.Tensor:
    """(B, P, C, S, S) patches -> (B, P, K) logits, one forward pass over all B*P patches."""
    b, p = patches.shape[:2]
    return model(patches.flatten(0, 1)).reshape(b, p, -1)


def aggregate(patch_logits: torch.Tensor) -> torch.Tensor:
    """(B, P, K) patch logits -> (B, K): per class, the softmax-over-patches weighted mean."""
    if patch_logits.dim() != 3:
        raise ValueError(f"aggregate expects (B, P, K) logits, got shape {tuple(patch_logits.shape)}")
    return (torch.softmax(patch_logits, dim=1) * patch_logits).sum(dim=1)

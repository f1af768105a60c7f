"""Differentiable siamese augmentation (DSA, Zhao & Bilen 2021) in plain torch: ONE random draw of
parameters per call, applied to every image of the batch, so that the concatenated batch
[real; synthetic] of a class sees the same colour jitter, translation, cutout and scale (the
"siamese" mode of DSA/DM/IDC). Every operation is differentiable in the pixels.

Strategy: operations joined by ``_``, in order: ``color`` (brightness, saturation, contrast),
``crop`` (an integer translation by up to 1/8 of the side, zero padded), ``cutout`` (a zeroed
square of half the side), ``scale`` (x/y scaling in [1/1.2, 1.2] by ``grid_sample``). The
default ``color_crop_cutout`` is DM/IDC's matching strategy. The draws come from the object's own
seeded ``torch.Generator`` (checkpointed by the condensation loop). Flip and rotate of DSA are
left out (digits are orientation-sensitive).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from curate.core.errors import BadInputError

OPERATIONS = ("color", "crop", "cutout", "scale")


def parse_strategy(strategy: str, where: str = "augment") -> tuple[str, ...]:
    """The operations of a strategy string (``""`` or ``"none"``: none); unknown ones are refused."""
    if strategy in ("", "none"):
        return ()
    ops = tuple(strategy.split("_"))
    bad = [op for op in ops if op not in OPERATIONS]
    if bad:
        raise BadInputError(f"{where}: unknown augmentation '{bad[0]}' in {strategy!r}; "
                            f"use operations of {', '.join(OPERATIONS)} joined by '_', or 'none'")
    return ops


class DiffAugment:
    def __init__(self, strategy: str = "color_crop_cutout", seed: int = 0):
        self.ops = parse_strategy(strategy)
        self.generator = torch.Generator().manual_seed(seed)

    def _u(self) -> float:
        return float(torch.rand((), generator=self.generator))

    def draw(self, size: int) -> dict[str, Any]:
        """One set of parameters for a batch of ``size``-pixel images."""
        params: dict[str, Any] = {}
        for op in self.ops:
            if op == "color":
                params["color"] = (self._u() - 0.5, self._u() * 2.0, self._u() + 0.5)
            elif op == "crop":
                shift = int(size * 0.125 + 0.5)
                params["crop"] = tuple(int(torch.randint(-shift, shift + 1, (), generator=self.generator))
                                       for _ in range(2))
            elif op == "cutout":
                side = int(size * 0.5 + 0.5)
                params["cutout"] = (side, *(int(torch.randint(0, size - side + 1, (), generator=self.generator))
                                            for _ in range(2)))
            elif op == "scale":
                params["scale"] = tuple((self._u() * (1.2 - 1 / 1.2) + 1 / 1.2) for _ in range(2))
        return params

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` augmented with one fresh draw shared by all its images."""
        return apply(x, self.draw(x.shape[-1])) if self.ops else x


def apply(x: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    """``x`` (N, C, H, W) under the drawn ``params`` (every image the same)."""
    if "color" in params:
        brightness, saturation, contrast = params["color"]
        x = x + brightness
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * saturation + mean
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * contrast + mean
    if "crop" in params:
        dy, dx = params["crop"]
        h, w = x.shape[-2:]
        s = max(abs(dy), abs(dx))
        padded = F.pad(x, (s, s, s, s))
        x = padded[..., s + dy:s + dy + h, s + dx:s + dx + w]
    if "cutout" in params:
        side, top, left = params["cutout"]
        mask = torch.ones_like(x[:1, :1])
        mask[..., top:top + side, left:left + side] = 0
        x = x * mask
    if "scale" in params:
        sx, sy = params["scale"]
        theta = torch.tensor([[sx, 0.0, 0.0], [0.0, sy, 0.0]], dtype=x.dtype, device=x.device)
        grid = F.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=True)
        x = F.grid_sample(x, grid, align_corners=True)
    return x

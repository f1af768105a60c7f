"""Augmentations with torchvision.transforms.v2, applied per image (v2 transforms on a batched
tensor would share one random draw across the batch).

- ``weak``: a random crop of the padded image (padding 1/8 of the side) and, for natural images,
  a horizontal flip;
- ``strong``: ``weak`` plus colour/affine jitter and random erasing (the contrastive methods' second
  view).

``views(x)`` returns a (weak, strong) pair for contrastive methods.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from curate.core.errors import BadInputError


def _v2():
    try:
        from torchvision.transforms import v2
    except ImportError as err:
        raise BadInputError("augmentations need torchvision: pip install 'curatekit[vision]'") from err
    return v2


@dataclass
class Augmenter:
    image_size: int
    flip: bool = True  # off for digits and other orientation-sensitive images
    seed: int = 0

    def __post_init__(self) -> None:
        v2 = _v2()
        pad = max(1, self.image_size // 8)
        weak: list[Any] = [v2.RandomCrop(self.image_size, padding=pad, padding_mode="reflect")]
        if self.flip:
            weak.append(v2.RandomHorizontalFlip())
        self.weak_transform = v2.Compose(weak)
        self.strong_transform = v2.Compose([
            *weak,
            v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1)),
            v2.ColorJitter(brightness=0.4, contrast=0.4),
            v2.RandomErasing(p=0.5, scale=(0.02, 0.15), value=0),
        ])
        self.generator = torch.Generator().manual_seed(self.seed)

    def _apply(self, transform, images: torch.Tensor) -> torch.Tensor:
        # torchvision draws from torch's global generator: fork it so the run's seed decides.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator)))
            return torch.stack([transform(image) for image in images.cpu()]).to(images.device)

    def weak(self, images: torch.Tensor) -> torch.Tensor:
        return self._apply(self.weak_transform, images)

    def strong(self, images: torch.Tensor) -> torch.Tensor:
        return self._apply(self.strong_transform, images)

    def views(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.weak(images), self.strong(images)

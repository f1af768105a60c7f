"""Augmentations (torchvision.transforms.v2): per-image random views of the same shape, a fresh
draw per image, repeatable by seed, and a strong view that moves further than the weak one."""
from __future__ import annotations

import torch

from vision.augment import Augmenter


def test_views_are_per_image_seeded_and_keep_the_shape():
    torch.manual_seed(0)
    images = torch.rand(16, 1, 8, 8)
    a, b = Augmenter(8, flip=False, seed=3), Augmenter(8, flip=False, seed=3)
    weak, strong = a.views(images)
    assert weak.shape == strong.shape == images.shape
    assert torch.equal(weak, b.weak(images)) and torch.equal(strong, b.strong(images))  # the seed decides
    moved = [(w - x).abs().sum() > 0 for w, x in zip(weak, images)]
    assert 0 < sum(moved) <= len(images)  # crops differ image by image, not one draw for the batch
    shifts = {tuple((w - x).flatten()[:8].tolist()) for w, x in zip(weak, images)}
    assert len(shifts) > 1
    assert (strong - images).abs().mean() > (weak - images).abs().mean()


def test_a_fresh_generator_state_per_call():
    aug = Augmenter(8, flip=False, seed=0)
    images = torch.rand(8, 1, 8, 8)
    assert not torch.equal(aug.strong(images), aug.strong(images))

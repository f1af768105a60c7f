"""Image data: digits offline with a stratified seeded split, resizing, checked tensors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from curate.core.errors import BadInputError
from vision.data import from_tensors, load_images


def test_digits_split_is_stratified_and_seeded():
    data = load_images("digits", seed=0)
    assert data.train_images.shape[1:] == (1, 8, 8) and data.num_classes == 10
    assert len(data.train_images) + len(data.test_images) == 1797
    assert 0 <= float(data.train_images.min()) and float(data.train_images.max()) <= 1
    counts = np.bincount(data.test_labels.numpy(), minlength=10)
    assert counts.max() - counts.min() <= 2  # stratified
    again = load_images("digits", seed=0)
    assert torch.equal(again.train_labels, data.train_labels)
    assert not torch.equal(load_images("digits", seed=1).train_labels, data.train_labels)


def test_resize_to_32():
    data = load_images("digits", image_size=32)
    assert data.train_images.shape[1:] == (1, 32, 32) and data.image_size == 32


def test_tensors_are_checked():
    data = from_tensors(torch.rand(5, 8, 8), [0, 1, 2, 1, 0])
    assert data.channels == 1 and data.num_classes == 3 and len(data.test_images) == 5
    with pytest.raises(BadInputError, match="4 labels for 5 images"):
        from_tensors(torch.rand(5, 1, 8, 8), [0, 1, 2, 1])
    with pytest.raises(BadInputError, match="unknown dataset 'imagenet22k'"):
        load_images("imagenet22k")

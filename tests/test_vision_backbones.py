"""Backbones: logits and features of the documented shapes, seeded initialisation, clear errors."""
from __future__ import annotations

import pytest
import torch

from curate.core.errors import BadInputError
from vision.backbones import build_backbone


@pytest.mark.parametrize("name, channels, size", [("convnet", 1, 8), ("convnet", 3, 32), ("preact_resnet18", 3, 32),
                                                  ("preact_resnet18", 1, 8)])
def test_logits_and_features(name, channels, size):
    net = build_backbone(name, channels, 10, size, seed=0)
    x = torch.randn(4, channels, size, size)
    features = net.features(x)
    assert features.shape == (4, net.feature_dim)
    assert net(x).shape == (4, 10)
    torch.testing.assert_close(net.classifier(features), net(x))


def test_seeded_initialisation_repeats():
    a, b = build_backbone("convnet", 1, 10, 8, seed=3), build_backbone("convnet", 1, 10, 8, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_unknown_backbone_and_bad_class_count_are_refused():
    with pytest.raises(BadInputError, match="unknown backbone 'nope'"):
        build_backbone("nope", 3, 10, 32)
    with pytest.raises(BadInputError, match="num_classes"):
        build_backbone("convnet", 3, 1, 32)

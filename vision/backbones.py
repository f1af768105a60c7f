"""Backbones by name. Every backbone maps images (N, C, H, W) to logits and exposes
``features(x)`` (the penultimate representation, for contrastive and kNN-based methods) and
``feature_dim``.

- ``convnet``: the ConvNet of the dataset-condensation literature (depth x [conv 3x3, instance
  norm, ReLU, avg-pool 2x2], width 128; depth 3 as in the papers' 28-32 px images, 2 under 24 px,
  1 under 12 px, so instance norm never works on a near-empty map), then a linear classifier.
- ``mlp``: a 2-layer MLP (flatten, linear to 256, ReLU, linear classifier), for 8x8 digits.
- ``convnet:W`` / ``mlp:W``: the same with width W (a narrow student for distillation, e.g. ``mlp:32``).
- ``preact_resnet18``: PreAct-ResNet-18 (He et al. 2016), the noisy-label literature's backbone.
- any other name: a torchvision classification model (``torchvision.models.get_model``), its last
  linear layer as the classifier head.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from curate.core.errors import BadInputError


class ConvNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, image_size: int, width: int = 128, depth: int | None = None):
        super().__init__()
        depth = depth or (3 if image_size >= 24 else 2 if image_size >= 12 else 1)
        layers: list[nn.Module] = []
        channels, size = in_channels, image_size
        for _ in range(depth):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.GroupNorm(width, width, affine=True),
                       nn.ReLU(inplace=True)]
            if size >= 2:
                layers.append(nn.AvgPool2d(2))
                size //= 2
            channels = width
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.feature_dim = width * size * size
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class MLP(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, image_size: int, width: int = 256):
        super().__init__()
        self.feature_dim = width
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size * image_size, width), nn.ReLU())
        self.classifier = nn.Linear(width, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class PreActBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(in_planes), nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(planes), nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = (nn.Conv2d(in_planes, planes, 1, stride, bias=False)
                         if stride != 1 or in_planes != planes else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + skip


class PreActResNet18(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, image_size: int = 32):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        blocks, planes_in = [], 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [PreActBlock(planes_in, planes, stride), PreActBlock(planes, planes, 1)]
            planes_in = planes
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(512)
        self.feature_dim = 512
        self.classifier = nn.Linear(512, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn(self.blocks(self.stem(x))))
        return torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class TorchvisionBackbone(nn.Module):
    """A torchvision classifier split into features and its final linear layer."""

    def __init__(self, name: str, in_channels: int, num_classes: int):
        super().__init__()
        try:
            from torchvision import models
        except ImportError as err:
            raise BadInputError(f"unknown backbone '{name}'; built in: {', '.join(BACKBONES)} (torchvision "
                                "models by name need torchvision: pip install 'curatekit[vision]')") from err
        try:
            net = models.get_model(name, weights=None, num_classes=num_classes)
        except ValueError as err:
            raise BadInputError(f"unknown backbone '{name}'; built in: {', '.join(BACKBONES)}, "
                                "or a torchvision model name") from err
        head_name, head = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)][-1]
        parent = net.get_submodule(head_name.rsplit(".", 1)[0]) if "." in head_name else net
        setattr(parent, head_name.rsplit(".", 1)[-1], nn.Identity())
        if in_channels != 3:
            raise BadInputError(f"torchvision backbone '{name}' expects 3-channel images, got {in_channels}")
        self.net, self.classifier, self.feature_dim = net, head, head.in_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


BACKBONES: dict[str, Callable[[int, int, int], nn.Module]] = {
    "convnet": lambda c, k, s: ConvNet(c, k, s),
    "mlp": lambda c, k, s: MLP(c, k, s),
    "preact_resnet18": lambda c, k, s: PreActResNet18(c, k, s),
}


WIDTHS: dict[str, Callable[[int, int, int, int], nn.Module]] = {
    "convnet": lambda c, k, s, w: ConvNet(c, k, s, width=w),
    "mlp": lambda c, k, s, w: MLP(c, k, s, width=w),
}


def reinitialised_copy(model: nn.Module, seed: int) -> nn.Module:
    """A copy of ``model`` (on the CPU) with every layer re-initialised from ``seed`` (the global RNG
    is left as it was): a second network of the same shape that never starts equal to the first."""
    import copy

    net = copy.deepcopy(model).cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in net.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return net


def build_backbone(name: str, in_channels: int, num_classes: int, image_size: int, seed: int = 0) -> nn.Module:
    """A seeded, freshly initialised backbone by name (see the module docstring)."""
    if num_classes < 2:
        raise BadInputError(f"num_classes must be at least 2, got {num_classes}")
    torch.manual_seed(seed)
    if name in BACKBONES:
        return BACKBONES[name](in_channels, num_classes, image_size)
    base, _, width = name.partition(":")
    if base in WIDTHS and width:
        if not width.isdigit() or int(width) < 1:
            raise BadInputError(f"backbone '{name}': the width after ':' must be a positive integer")
        return WIDTHS[base](in_channels, num_classes, image_size, int(width))
    return TorchvisionBackbone(name, in_channels, num_classes)

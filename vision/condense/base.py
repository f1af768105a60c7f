"""The condensation method interface and the pieces the loop shares.

- :class:`SyntheticSet`: ``ipc`` learnable images per class (pixels, class-major order),
  initialised from seeded real images of that class;
- :class:`ClassSampler`: seeded batches of real images of one class;
- :class:`RandomNetworks`: a fresh randomly initialised ConvNet (instance norm, train mode, never
  trained; parameters frozen) every ``ipm`` iterations, seeded by (seed, iteration // ipm), so a
  resumed run rebuilds the same network;
- :class:`Condenser`: what a method implements (see its docstring).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from curate.core.errors import BadInputError
from vision.backbones import ConvNet
from vision.data import ImageData


def _class_rows(labels: torch.Tensor, num_classes: int) -> list[torch.Tensor]:
    return [torch.nonzero(labels == c).flatten() for c in range(num_classes)]


class SyntheticSet:
    """``images`` (ipc * K, C, H, W), a leaf tensor with gradients, and ``labels`` (class-major)."""

    def __init__(self, data: ImageData, ipc: int, seed: int, device: torch.device | str = "cpu"):
        rows = _class_rows(data.train_labels, data.num_classes)
        small = [c for c, r in enumerate(rows) if len(r) < ipc]
        if small:
            raise BadInputError(f"ipc {ipc}: class {small[0]} has only {len(rows[small[0]])} training images")
        generator = torch.Generator().manual_seed(seed)
        chosen = torch.cat([r[torch.randperm(len(r), generator=generator)[:ipc]] for r in rows])
        self.source_rows = chosen  # the real images each synthetic one starts from
        self.ipc, self.num_classes = ipc, data.num_classes
        self.images = data.train_images[chosen].clone().to(device).requires_grad_(True)
        self.labels = torch.arange(data.num_classes).repeat_interleave(ipc)

    def of_class(self, c: int) -> torch.Tensor:
        return self.images[c * self.ipc:(c + 1) * self.ipc]

    def clamp_(self) -> None:
        with torch.no_grad():
            self.images.clamp_(0, 1)


class ClassSampler:
    """Class-wise real batches: ``sample(c)`` draws ``batch`` images of class ``c`` without
    replacement (all of them when the class is smaller), from its own seeded generator."""

    def __init__(self, data: ImageData, batch: int, seed: int):
        self.images, self.batch = data.train_images, batch
        self.rows = _class_rows(data.train_labels, data.num_classes)
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, c: int) -> torch.Tensor:
        rows = self.rows[c]
        return self.images[rows[torch.randperm(len(rows), generator=self.generator)[:self.batch]]]


class RandomNetworks:
    """``at(iteration)``: the random ConvNet of block ``iteration // ipm`` (built once per block)."""

    def __init__(self, data: ImageData, width: int, depth: int | None, ipm: int, seed: int, device: torch.device):
        self.shape = (data.channels, data.num_classes, data.image_size)
        self.width, self.depth, self.ipm, self.seed, self.device = width, depth, ipm, seed, device
        self._block, self._net = -1, None

    def build(self, block: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + block)
            net = ConvNet(*self.shape, width=self.width, depth=self.depth)
        net.requires_grad_(False)
        return net.to(self.device).train()

    def at(self, iteration: int) -> nn.Module:
        block = iteration // self.ipm
        if block != self._block:
            self._block, self._net = block, self.build(block)
        return self._net


@dataclass
class Step:
    """What a method's hooks see in one iteration of the loop."""
    iteration: int
    synthetic: SyntheticSet
    optimizer: torch.optim.Optimizer
    augment: Any  # the DiffAugment of the loop (one draw per call)
    batch_syn_max: int


class Condenser:
    """A condensation method. The loop (:func:`vision.condense.experiment.condense`), per iteration:
    clamp the pixels to [0, 1]; ``net = method.network(it, networks)``; for each class c: real batch
    R (``batch_real``), synthetic S_c (capped at ``batch_syn_max``), ONE augmentation draw on
    [R; S_c], features ``net.features`` (real under no_grad), ``loss = method.match_loss(f_R, f_S)``,
    one SGD step on the pixels; then ``method.after_matching(step)`` (extra steps, e.g. DANCE's
    calibration, on the same optimiser). ``prepare(data, config)`` runs once before the loop (expert
    pre-training); ``optimises = False`` skips the loop (the random-subset baseline)."""

    name = "condense"
    config_class: type | None = None
    optimises = True

    def identity(self) -> str:
        """What, besides the run's settings, keys its checkpoints."""
        return repr(getattr(self, "config", None))

    def prepare(self, data: ImageData, config: Any) -> None:
        """Once, before the loop (and before resuming): e.g. train experts."""

    def generators(self) -> dict[str, torch.Generator]:
        """The method's own generators (checkpointed with the loop); create them in :meth:`prepare`."""
        return {}

    def network(self, iteration: int, networks: RandomNetworks) -> nn.Module:
        """The feature extractor of this iteration: by default a fresh random ConvNet every ipm."""
        return networks.at(iteration)

    def match_loss(self, real: torch.Tensor, synthetic: torch.Tensor) -> torch.Tensor:
        """The matching loss of one class's real and synthetic features (every optimising method
        defines it: DM's mean distance, ECHO's MMD²)."""
        raise NotImplementedError(f"{self.name}: a condensation method that optimises defines match_loss")

    def after_matching(self, step: Step) -> None:
        """Extra optimiser steps after the per-class matching steps of an iteration."""


def match_features(net: nn.Module, augment: Any, real: torch.Tensor,
                   synthetic: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(real features, synthetic features) under ``net`` after ONE augmentation draw on the
    concatenated batch [real; synthetic]; the real ones without gradients."""
    both = augment(torch.cat([real, synthetic]))
    with torch.no_grad():
        real_features = net.features(both[:len(real)])
    return real_features, net.features(both[len(real):])

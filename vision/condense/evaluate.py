"""The evaluation protocol: a fresh, seeded network (the ConvNet by default) trained on the
synthetic set ONLY, with DSA augmentation (one draw per batch), by the shared loop
:func:`vision.train.fit` (SGD with momentum and weight decay, cosine schedule); its test accuracy
on the real test split after the final epoch is the reported number (the papers' "best of the test
checks" is not used: it selects on the test set). Differences from DM/IDC: cosine in place of
step decay, no CutMix, fewer epochs on CPU."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from curate.core.errors import BadInputError
from vision.condense.augment import DiffAugment, parse_strategy
from vision.data import ImageData
from vision.train import Method, TrainConfig, fit


@dataclass
class EvaluateConfig:
    backbone: str = "convnet"
    epochs: int = 300
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    augment: str = "color_crop_scale"  # DSA strategy of the evaluation, 'none' for none
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise BadInputError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("lr", "momentum", "weight_decay"):
            value = getattr(self, name)
            if value < 0 or (name == "lr" and value == 0):
                raise BadInputError(f"{name} must be {'positive' if name == 'lr' else 'non-negative'}, got {value}")
        parse_strategy(self.augment, "augment")


class _DSATraining(Method):
    """Cross-entropy on DSA-augmented batches of the synthetic set."""

    name = "condense-eval"

    def __init__(self, strategy: str, seed: int):
        self.strategy, self.seed = strategy, seed

    def identity(self) -> str:
        return f"{self.strategy}:{self.seed}"

    def modules(self, model: nn.Module, data: ImageData) -> dict[str, nn.Module]:
        self.augment = DiffAugment(self.strategy, seed=self.seed)
        return {}

    def generators(self) -> dict[str, torch.Generator]:
        return {"dsa": self.augment.generator}

    def loss(self, model, batch):
        return nn.functional.cross_entropy(model(self.augment(batch.weak)), batch.labels)


def evaluate(images: torch.Tensor, labels: torch.Tensor, data: ImageData, config: EvaluateConfig,
             device: str = "cpu") -> dict[str, Any]:
    """Train a fresh network on (``images``, ``labels``) only; ``data`` gives the test split."""
    synthetic = ImageData(images.detach().cpu().clamp(0, 1), labels, data.test_images, data.test_labels,
                          data.num_classes, f"{data.name}-synthetic")
    train = TrainConfig(backbone=config.backbone, epochs=config.epochs, warmup_epochs=0,
                        batch_size=config.batch_size, lr=config.lr, momentum=config.momentum,
                        weight_decay=config.weight_decay, augment=False, device=device, seed=config.seed,
                        progress=False)
    result = fit(_DSATraining(config.augment, config.seed), synthetic, synthetic.train_labels, train)
    return {"test_accuracy": result["final"]["test_accuracy"], "epochs": config.epochs,
            "train_images": len(synthetic.train_labels)}

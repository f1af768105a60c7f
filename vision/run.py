"""A vision experiment from a config (YAML or dict): dataset, label noise, backbone and training
settings, and the method's options; the result JSON has the same shape for every method.

    dataset: digits            # or cifar10, ... (torchvision, online), with optional root/image_size
    noise: {kind: symmetric, rate: 0.4, seed: 0}
    train: {backbone: convnet, epochs: 30, warmup_epochs: 5, batch_size: 64, lr: 0.05}
    method: {k: 20}            # the method's config fields

A config is validated into an :class:`ExperimentConfig` before any work: an unknown or mistyped
field is refused with one line naming it (``train.epochs``), its value and the file.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from curate.core.io import read_yaml
from curate.core.config import from_mapping
from curate.core.errors import BadInputError
from vision.data import DataFields
from vision.registry import build_method, experiment_class, experiment_runner, method_options
from vision.noise import NoiseConfig
from vision.train import TrainConfig


@dataclass
class ExperimentConfig(DataFields):
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    method: dict[str, Any] = field(default_factory=dict)  # the method's options, checked by its config_class
    # > 0: hold out this share of the (noisy) training set and report accuracy against its NOISY
    # labels in place of the test set: model selection without clean labels (under symmetric noise
    # that accuracy is an increasing affine function of clean accuracy); the test set is unused.
    validation: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.validation < 1:
            raise BadInputError(f"validation must be in [0, 1), got {self.validation}")


def build_config(raw: Mapping[str, Any], method: str, where: str = "config") -> ExperimentConfig:
    """The experiment config of ``method`` from a mapping (a YAML file's); errors start with ``where``."""
    config = from_mapping(experiment_class(method), dict(raw) if isinstance(raw, Mapping) else raw, where)
    options = method_options(method, config.method, where)
    config.method = {key: getattr(options, key) for key in config.method}  # as typed by the method's config
    check = getattr(config, "check_with_method", None)  # checks that need both (e.g. a schedule the method needs)
    if check is not None:
        try:
            check(options)
        except BadInputError as err:
            raise BadInputError(f"{where}: {err}") from None
    return config


def load_config(path: str | Path, method: str, train: Mapping[str, Any] | None = None) -> ExperimentConfig:
    """The experiment config of a YAML file, with ``train`` fields (command-line overrides) put over
    its ``train`` section before it is checked."""
    raw = read_yaml(path, "--config")
    if train and isinstance(raw.get("train") or {}, dict):
        raw["train"] = {**(raw.get("train") or {}), **train}
    return build_config(raw, method, f"--config {path}")


def run_experiment(method_name: str, config: Any) -> dict[str, Any]:
    """Run a method on its family's experiment (a config dataclass, or a mapping checked into one)."""
    if not isinstance(config, experiment_class(method_name)):
        config = build_config(config, method_name)
    method = build_method(method_name, config.method)
    check_output_folders(config)
    return experiment_runner(method_name)(method, config)


def check_output_folders(config: Any) -> None:
    """Refuse, before any work, a checkpoint or output folder that cannot be written (below a file,
    read-only): one line naming the field and its value, not a traceback after the first epoch."""
    from curate.core.io import check_writable_dir

    for section in ("train", "teacher"):
        folder = getattr(getattr(config, section, None), "checkpoint_dir", None)
        if folder:
            check_writable_dir(folder, f"{section}.checkpoint_dir")
    if getattr(config, "out_dir", None):
        check_writable_dir(config.out_dir, "out_dir")


def run_noisy_experiment(method: Any, config: ExperimentConfig) -> dict[str, Any]:
    """The noisy-label family: inject the configured noise, train ``method`` on it."""
    from vision.data import load_images
    from vision.noise import inject
    from vision.train import fit

    data = load_images(config.dataset, root=config.root, seed=config.seed, image_size=config.image_size)
    noise = config.noise
    features = data.train_images.flatten(1).numpy() if noise.kind == "instance" else None
    noisy = inject(data.train_labels.numpy(), data.num_classes, noise, features=features)
    extra = {"noise": {**asdict(noise), "actual_rate": noisy.actual_rate,
                     "transition": noisy.transition.round(4).tolist()}}
    labels, clean = noisy.labels, noisy.is_clean
    if config.validation > 0:
        data, labels, clean = noisy_validation_split(data, labels, clean, config.validation, config.seed)
        extra["evaluated_on"] = f"noisy validation ({len(data.test_labels)} held-out training images)"
    return fit(method, data, labels, config.train, clean=clean, extra=extra)


def noisy_validation_split(data, labels, clean, share: float, seed: int):
    """(data, labels, clean) with a seeded ``share`` of the training images moved to the test slot
    under their noisy labels; the real test set is dropped."""
    import numpy as np
    import torch

    from vision.data import ImageData

    order = np.random.default_rng([seed, 7]).permutation(len(labels))
    cut = max(1, int(round(share * len(labels))))
    if cut >= len(labels):
        raise BadInputError(f"validation: {share} holds out all {len(labels)} training images; use a smaller share")
    held, kept = np.sort(order[:cut]), np.sort(order[cut:])
    split = ImageData(data.train_images[kept], data.train_labels[kept], data.train_images[held],
                      torch.as_tensor(np.asarray(labels)[held], dtype=torch.long), data.num_classes,
                      f"{data.name}-noisy-validation")
    return split, np.asarray(labels)[kept], (None if clean is None else np.asarray(clean)[kept])

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
from vision.registry import build_method, family, method_options
from vision.noise import NoiseConfig
from vision.train import TrainConfig


@dataclass
class ExperimentConfig:
    dataset: str = "digits"
    root: str | None = None  # where torchvision datasets are downloaded
    image_size: int | None = None
    seed: int = 0  # the train/test split
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    method: dict[str, Any] = field(default_factory=dict)  # the method's options, checked by its config_class


def experiment_class(method: str) -> type:
    """The experiment dataclass of the method's family (crowds: annotators instead of noise;
    multilabel: mosaics and per-class flips)."""
    if family(method) == "crowds":
        from vision.crowds.experiment import CrowdExperimentConfig

        return CrowdExperimentConfig
    if family(method) == "multilabel":
        from vision.multilabel.mltm import MultiLabelExperimentConfig

        return MultiLabelExperimentConfig
    return ExperimentConfig


def build_config(raw: Mapping[str, Any], method: str, where: str = "config") -> ExperimentConfig:
    """The experiment config of ``method`` from a mapping (a YAML file's); errors start with ``where``."""
    config = from_mapping(experiment_class(method), dict(raw) if isinstance(raw, Mapping) else raw, where)
    options = method_options(method, config.method, where)
    config.method = {key: getattr(options, key) for key in config.method}  # as typed by the method's config
    return config


def load_config(path: str | Path, method: str, train: Mapping[str, Any] | None = None) -> ExperimentConfig:
    """The experiment config of a YAML file, with ``train`` fields (command-line overrides) put over
    its ``train`` section before it is checked."""
    raw = read_yaml(path, "--config")
    if train and isinstance(raw.get("train") or {}, dict):
        raw["train"] = {**(raw.get("train") or {}), **train}
    return build_config(raw, method, f"--config {path}")


def run_experiment(method_name: str, config: ExperimentConfig | Mapping[str, Any]) -> dict[str, Any]:
    from vision.data import load_images
    from vision.noise import inject
    from vision.train import fit

    if not isinstance(config, experiment_class(method_name)):
        config = build_config(config, method_name)
    method = build_method(method_name, config.method)
    if family(method_name) == "crowds":
        from vision.crowds.experiment import run_crowd_experiment

        return run_crowd_experiment(method, config)
    if family(method_name) == "multilabel":
        from vision.multilabel.mltm import run_multilabel_experiment

        return run_multilabel_experiment(method, config)
    data = load_images(config.dataset, root=config.root, seed=config.seed, image_size=config.image_size)
    noise = config.noise
    features = data.train_images.flatten(1).numpy() if noise.kind == "instance" else None
    noisy = inject(data.train_labels.numpy(), data.num_classes, noise, features=features)
    extra = {"noise": {**asdict(noise), "actual_rate": noisy.actual_rate,
                     "transition": noisy.transition.round(4).tolist()}}
    return fit(method, data, noisy.labels, config.train, clean=noisy.is_clean, extra=extra)

"""A vision experiment from a config (YAML or dict): dataset, label noise, backbone and training
settings, and the method's options; the result JSON has the same shape for every method.

    dataset: digits            # or cifar10, ... (torchvision, online), with optional root/image_size
    noise: {kind: symmetric, rate: 0.4, seed: 0}
    train: {backbone: convnet, epochs: 30, warmup_epochs: 5, batch_size: 64, lr: 0.05}
    method: {k: 20}            # the method's config fields
"""
from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from curate.core.errors import BadInputError, check_fields
from curate.core.io import read_yaml

SECTIONS = ("dataset", "root", "image_size", "seed", "noise", "train", "method")


def load_config(path: str | Path) -> dict[str, Any]:
    """The experiment config of a YAML file; unknown sections and fields are named."""
    from vision.noise import NoiseConfig
    from vision.train import TrainConfig

    config = read_yaml(path, "--config")
    check_fields(config, SECTIONS, f"--config {path}")
    for section, cls in (("train", TrainConfig), ("noise", NoiseConfig)):
        value = config.get(section) or {}
        if not isinstance(value, dict):
            raise BadInputError(f"--config {path}: '{section}' must be a mapping of fields")
        check_fields(value, {f.name for f in fields(cls)}, f"--config {path}: {section}")
    return config


def run_experiment(method_name: str, config: dict[str, Any]) -> dict[str, Any]:
    from vision.data import load_images
    from vision.methods import build_method
    from vision.noise import NoiseConfig, inject
    from vision.train import TrainConfig, fit

    method = build_method(method_name, config.get("method"))
    try:
        train = TrainConfig(**(config.get("train") or {}))
        noise = NoiseConfig(**(config.get("noise") or {}))
    except TypeError as err:
        raise BadInputError(f"bad train or noise setting: {err}") from err
    data = load_images(config.get("dataset", "digits"), root=config.get("root"), seed=int(config.get("seed", 0)),
                       image_size=config.get("image_size"))
    features = data.train_images.flatten(1).numpy() if noise.kind == "instance" else None
    noisy = inject(data.train_labels.numpy(), data.num_classes, noise, features=features)
    extra = {"noise": {**asdict(noise), "actual_rate": noisy.actual_rate,
                       "transition": noisy.transition.round(4).tolist()}}
    return fit(method, data, noisy.labels, train, clean=noisy.is_clean, extra=extra)

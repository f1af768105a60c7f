"""A federated experiment from a config, and the default pure-PyTorch in-process driver.

    dataset: digits
    partition: {kind: shards, clients: 20, shards_per_client: 2, seed: 0}   # or kind: dirichlet, alpha: 0.1
    train: {backbone: "mlp:128", rounds: 50, sample_ratio: 0.25, local_epochs: 2, batch_size: 50, lr: 0.01}
    driver: inprocess                                                         # or flower
    method: {tau: 1.0, beta: 1.0}

The training settings sit in ``train`` so that the command line's ``--checkpoint-dir`` and
``--device`` land there as for every family (``--epochs`` is refused: say ``train.rounds`` or
``train.local_epochs``). Round r (0-based) samples ``max(floor(sample_ratio * K), 1)`` clients
from a generator seeded by (train.seed, r), uses lr = lr * gamma^r (the authors' StepLR on the
server optimizer), fresh client momentum, FedAvg weighted by n_k, then evaluates the global model on
the global test split. With ``checkpoint_dir`` the in-process driver saves the global weights,
the history and every random state after each round (atomically) and a rerun resumes from them
to the identical result. ``seed`` is the train/test split, ``partition.seed`` the clients' split,
``train.seed`` the model's initialisation, the client sampling and the batch orders.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from curate.core.errors import BadInputError
from vision.data import DataFields

PARTITIONS = ("shards", "dirichlet")
DRIVERS = ("inprocess", "flower")


@dataclass
class PartitionConfig:
    kind: str = "shards"
    clients: int = 20
    shards_per_client: int = 2  # kind shards
    alpha: float = 0.1  # kind dirichlet
    min_samples: int = 10  # kind dirichlet: redraw until every client holds this many
    seed: int = 0  # the split among clients, apart from training

    def __post_init__(self) -> None:
        if self.kind not in PARTITIONS:
            raise BadInputError(f"kind must be one of {', '.join(PARTITIONS)}, got {self.kind!r}")
        for name in ("clients", "shards_per_client"):
            if getattr(self, name) < 1:
                raise BadInputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.alpha > 0:
            raise BadInputError(f"alpha must be positive, got {self.alpha}")
        if self.min_samples < 1:
            raise BadInputError(f"min_samples must be at least 1, got {self.min_samples}")


@dataclass
class FederatedTrainConfig:
    backbone: str = "mlp:128"  # the spec's MLP 64 -> 128 -> C
    rounds: int = 50
    sample_ratio: float = 0.25
    local_epochs: int = 2
    batch_size: int = 50
    lr: float = 0.01
    gamma: float = 0.99  # lr decay per round
    momentum: float = 0.9
    weight_decay: float = 1e-5
    seed: int = 0
    device: str = "auto"
    checkpoint_dir: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("rounds", "local_epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise BadInputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.sample_ratio <= 1:
            raise BadInputError(f"sample_ratio must be in (0, 1], got {self.sample_ratio}")
        if not self.lr > 0:
            raise BadInputError(f"lr must be positive, got {self.lr}")
        if not 0 < self.gamma <= 1:
            raise BadInputError(f"gamma must be in (0, 1], got {self.gamma}")
        if not 0 <= self.momentum < 1:
            raise BadInputError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise BadInputError(f"weight_decay must be >= 0, got {self.weight_decay}")


@dataclass
class FederatedExperimentConfig(DataFields):
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    train: FederatedTrainConfig = field(default_factory=FederatedTrainConfig)
    driver: str = "inprocess"
    method: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.driver not in DRIVERS:
            raise BadInputError(f"driver must be one of {', '.join(DRIVERS)}, got {self.driver!r}")


@dataclass
class Federation:
    """What both drivers start from: the data, the clients' index sets and majority masks."""

    data: Any  # vision.data.ImageData
    parts: list  # np.ndarray of training indices per client
    majority: list  # np.ndarray bool (C,) per client
    split: dict  # partition.split_summary


def build_federation(config: FederatedExperimentConfig, data: Any = None) -> Federation:
    from vision.data import load_images
    from vision.federated.partition import (class_counts, dirichlet_partition, majority_classes, shard_partition,
                                            split_summary)

    if data is None:
        data = load_images(config.dataset, root=config.root, seed=config.seed, image_size=config.image_size)
    labels, p = data.train_labels.numpy(), config.partition
    if p.kind == "shards":
        parts = shard_partition(labels, p.clients, p.shards_per_client, data.num_classes, p.seed)
    else:
        parts = dirichlet_partition(labels, p.clients, p.alpha, data.num_classes, p.seed, p.min_samples)
    split = split_summary(parts, labels, data.num_classes)
    majority = [majority_classes(class_counts(labels[part], data.num_classes)) for part in parts]
    return Federation(data, parts, majority, split)


def round_lr(train: FederatedTrainConfig, round_: int) -> float:
    return train.lr * train.gamma ** round_


def run_federated_experiment(method: Any, config: FederatedExperimentConfig, data: Any = None) -> dict[str, Any]:
    """Partition, run ``train.rounds`` rounds with the configured driver; the result JSON."""
    federation = build_federation(config, data)
    started = time.monotonic()
    history, _ = federate(method, config, federation)
    return _result(method, config, federation, history, time.monotonic() - started)


def federate(method: Any, config: FederatedExperimentConfig, federation: Federation) -> tuple[list, dict]:
    """(per-round history, final global state_dict) from the configured driver."""
    if config.driver == "flower":
        from vision.federated.flower import run_flower

        return run_flower(method, config, federation)
    return run_inprocess(method, config, federation)


def _model(config: FederatedExperimentConfig, data: Any):
    from vision.backbones import build_backbone

    return build_backbone(config.train.backbone, data.channels, data.num_classes, data.image_size, config.train.seed)


def run_inprocess(method: Any, config: FederatedExperimentConfig, federation: Federation) -> tuple[list, dict]:
    """The rounds in this process; (history, final global state_dict)."""
    import torch
    from tqdm.auto import tqdm

    from curate.core.device import resolve_device
    from vision import rng
    from vision.federated.base import evaluate, fedavg, sample_clients
    from vision.train import kill_hook, save_checkpoint

    train, data = config.train, federation.data
    device = resolve_device(train.device)
    rng.seed_globals(train.seed)
    model = _model(config, data).to(device)
    history: list[dict[str, Any]] = []
    start = 0
    checkpoint = _checkpoint_path(method, config, federation)
    if checkpoint is not None and checkpoint.exists():
        saved = torch.load(checkpoint, map_location=device, weights_only=False)
        model.load_state_dict(saved["model"])
        rng.restore(saved["rng"], {})
        history, start = saved["history"], saved["round"] + 1
    bar = tqdm(range(start, train.rounds), desc=f"{method.name} ({data.name})", unit="round", disable=not train.progress)
    for round_ in bar:
        began = time.monotonic()
        clients = sample_clients(len(federation.parts), train.sample_ratio, round_, train.seed)
        global_state = {k: v.clone() for k, v in model.state_dict().items()}
        states, sizes, local = [], [], []
        for k in clients:
            model.load_state_dict(global_state)
            outcome = train_client(model, method, data, federation.parts[k], federation.majority[k], k, round_, train)
            states.append({key: v.detach().clone() for key, v in model.state_dict().items()})
            sizes.append(len(federation.parts[k]))
            local.append(outcome)
        model.load_state_dict(fedavg(states, sizes))
        history.append(round_record(round_, clients, round_lr(train, round_), local,
                                    evaluate(model, data.test_images, data.test_labels, data.num_classes),
                                    time.monotonic() - began))
        bar.set_postfix(acc=f"{history[-1]['test_accuracy']:.3f}")
        if checkpoint is not None:
            save_checkpoint(checkpoint, {"model": model.state_dict(), "history": history, "round": round_,
                                         "rng": rng.capture({})})
            kill_hook(round_ + 1)
    return history, {k: v.cpu() for k, v in model.state_dict().items()}


def train_client(model: Any, method: Any, data: Any, part: Any, majority: Any, k: int, round_: int,
                 train: FederatedTrainConfig) -> dict[str, Any]:
    """One client's round (both drivers): local training from the weights in ``model``, then the
    local model's accuracy on the client's minority and majority classes (the mechanism's
    observable: how much it forgot of what it rarely sees)."""
    import torch

    from vision.federated.base import client_seed, evaluate, local_train, subset_accuracy

    index = torch.as_tensor(part)
    result = local_train(model, method, data.train_images[index], data.train_labels[index], torch.as_tensor(majority),
                         round_lr(train, round_), train.local_epochs, train.batch_size, train.momentum,
                         train.weight_decay, client_seed(train.seed, round_, k))
    per_class = evaluate(model, data.test_images, data.test_labels, data.num_classes)["per_class_accuracy"]
    return {"client": k, "n": len(index), "loss": result.loss,
            "minority_accuracy": subset_accuracy(per_class, ~majority),
            "majority_accuracy": subset_accuracy(per_class, majority)}


def round_record(round_: int, clients: list[int], lr: float, local: list[dict], evaluation: dict, seconds: float) -> dict:
    import numpy as np

    def mean(key: str) -> float | None:
        values = [x[key] for x in local if x[key] is not None]
        return float(np.mean(values)) if values else None

    return {"round": round_, "clients": clients, "lr": lr, "train_loss": mean("loss"),
            "local_minority_accuracy": mean("minority_accuracy"), "local_majority_accuracy": mean("majority_accuracy"),
            **evaluation, "seconds": round(seconds, 3)}


CHECKPOINT_FORMAT = 1


def _checkpoint_path(method: Any, config: FederatedExperimentConfig, federation: Federation) -> Path | None:
    from curate.core.cache import digest

    if not config.train.checkpoint_dir:
        return None
    settings = {k: v for k, v in asdict(config).items() if k not in ("train", "method")}  # the driver stays
    settings["train"] = {k: v for k, v in asdict(config.train).items() if k not in ("checkpoint_dir", "progress", "device")}
    identity = [CHECKPOINT_FORMAT, method.identity(), settings, [p.tolist() for p in federation.parts]]
    key = digest(json.dumps(identity, sort_keys=True, default=str))
    return Path(config.train.checkpoint_dir) / f"{method.name}-{key}.pt"


def _result(method: Any, config: FederatedExperimentConfig, federation: Federation, history: list,
            seconds: float) -> dict[str, Any]:
    import numpy as np

    split = federation.split
    last = history[-1]
    tail = history[-min(10, len(history)):]
    minority = [h["local_minority_accuracy"] for h in tail if h["local_minority_accuracy"] is not None]
    final = {"test_accuracy": last["test_accuracy"], "per_class_accuracy": last["per_class_accuracy"],
             "local_minority_accuracy": float(np.mean(minority)) if minority else None,
             "selection": None}
    p = config.partition
    kind = f"shards {p.shards_per_client}/client" if p.kind == "shards" else f"Dirichlet alpha {p.alpha}"
    summary = (f"global test accuracy {100 * final['test_accuracy']:.1f}% on {federation.data.name} after "
               f"{len(history)} rounds ({config.driver}); {split['clients']} clients, {kind}: "
               f"{split['classes_per_client']:.1f} classes and {split['majority_per_client']:.1f} majority per client, "
               f"{split['sizes']['min']}-{split['sizes']['max']} samples")
    if final["local_minority_accuracy"] is not None:
        summary += f"; local models on their minority classes {100 * final['local_minority_accuracy']:.1f}%"
    return {"method": method.name, "dataset": federation.data.name, "config": asdict(config), "partition": split,
            "rounds": history, "final": final, "seconds": round(seconds, 2), "summary": summary}

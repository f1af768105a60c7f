"""One compact training loop that every vision method plugs into.

A method (:class:`Method`) may add trainable modules (a projection head, a second network), choose
the samples to trust at the start of each epoch after warmup (``select``), define the batch loss
(or its parts, and how their gradients combine: ``backward``), act after every optimiser step (``after_step``: a momentum encoder) and predict at test time
(``predict``: an ensemble). The loop
handles seeding, the device, AMP on CUDA, SGD with a cosine schedule, weak/strong augmented views,
per-epoch checkpoints (atomic; a run resumes from its last epoch, with every random state put back,
see :mod:`vision.rng`), tqdm, and metrics: loss, test accuracy and, when the clean labels are known,
the precision and recall of the selection. Every method returns the same JSON-ready result.

Test hook: ``CURATEKIT_KILL_AFTER_EPOCH=k`` SIGKILLs the process right after the checkpoint of its
k-th finished epoch (1-based) is written, to test resuming after a crash.
"""
from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from curate.core.cache import digest
from curate.core.device import resolve_device
from curate.core.errors import BadInputError
from curate.core.io import atomic_file
from vision import rng
from vision.backbones import build_backbone
from vision.data import ImageData


@dataclass
class TrainConfig:
    backbone: str = "convnet"
    epochs: int = 30
    warmup_epochs: int = 5  # epochs on every sample before a method starts selecting
    batch_size: int = 64
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: bool = True
    flip: bool = False  # horizontal flips (natural images only)
    device: str = "auto"
    amp: bool = True  # mixed precision on CUDA
    seed: int = 0
    checkpoint_dir: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise BadInputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise BadInputError(f"warmup_epochs must be in [0, epochs], got {self.warmup_epochs}")
        if self.lr <= 0:
            raise BadInputError(f"lr must be positive, got {self.lr}")


@dataclass
class Batch:
    index: torch.Tensor  # rows of the training set
    labels: torch.Tensor  # the given (noisy) labels
    weak: torch.Tensor
    strong: torch.Tensor
    selected: torch.Tensor  # bool: the method trusts this sample (all True in warmup)
    epoch: int
    lr: float = 0.0  # the optimiser's current learning rate (for look-ahead steps)


class Method:
    """Cross-entropy on every sample; subclasses override what they change."""

    name = "ce"
    config_class: type | None = None  # the dataclass of its options (``__init__(config)``); None: none

    def identity(self) -> str:
        """What, besides the run's settings and labels, keys its checkpoints (a distiller adds its teacher)."""
        return repr(getattr(self, "config", None))

    def modules(self, model: nn.Module, data: ImageData) -> dict[str, nn.Module]:
        """Extra trainable modules (they are optimised and checkpointed with the model)."""
        return {}

    def generators(self) -> dict[str, torch.Generator]:
        """The method's own random generators, by name (checkpointed and restored with the run);
        (re)create them in :meth:`modules`, which every run calls first."""
        return {}

    def select(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, epoch: int) -> torch.Tensor | None:
        """A bool mask of trusted training samples for this epoch, or None for all."""
        return None

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """The batch loss, or a tuple of its parts (the loss is their sum; see :meth:`backward`)."""
        return nn.functional.cross_entropy(model(batch.weak), batch.labels)

    def backward(self, parts: tuple[torch.Tensor, ...], params: list[nn.Parameter]) -> None:
        """Fill ``params``' gradients (zeroed, set to None) from the loss parts before the optimiser
        step; by default the gradient of their sum. A method may combine the parts' gradients
        otherwise (gradient surgery: DHKD's alignment of the distillation gradient with the CE one)."""
        sum(parts).backward()

    def after_step(self, model: nn.Module) -> None:
        """Called after every optimiser step (e.g. a momentum encoder's update)."""

    def predict(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Test-time logits (or probabilities; the argmax is taken), e.g. an ensemble of networks."""
        return predict(model, images)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 512, features: bool = False) -> torch.Tensor:
    """Logits (or penultimate features) for ``images`` in eval mode, on the model's device."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = [(model.features if features else model)(images[s:s + batch_size].to(device)).float()
           for s in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(out)


def selection_metrics(selected: torch.Tensor | None, clean: np.ndarray | None) -> dict[str, float] | None:
    if selected is None or clean is None:
        return None
    chosen = selected.cpu().numpy().astype(bool)
    true_positive = float((chosen & clean).sum())
    return {"selected": int(chosen.sum()), "precision": true_positive / max(int(chosen.sum()), 1),
            "recall": true_positive / max(int(clean.sum()), 1)}


@dataclass
class Trained:
    """A finished run: the method, its network and extra modules, and the per-epoch history."""

    method: Method
    model: nn.Module
    heads: nn.ModuleDict
    history: list[dict[str, Any]]

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """The method's test-time logits (or probabilities) for ``images``."""
        return self.method.predict(self.model, images)


def fit(method: Method, data: ImageData, labels: np.ndarray | torch.Tensor, config: TrainConfig,
        clean: np.ndarray | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train ``method`` on ``data`` with the given (noisy) ``labels``; ``clean`` (bool per training
    sample) turns on selection precision/recall. Returns the result dict (see the module docstring)."""
    history = train(method, data, labels, config, clean).history
    last_selection = next((h["selection"] for h in reversed(history) if h["selection"]), None)
    return {"method": method.name, "dataset": data.name, "config": asdict(config), **(extra or {}),
            "epochs": history, "final": {"test_accuracy": history[-1]["test_accuracy"] if history else None,
                                         "selection": last_selection}}


def train(method: Method, data: ImageData, labels: np.ndarray | torch.Tensor, config: TrainConfig,
          clean: np.ndarray | None = None) -> Trained:
    """:func:`fit`, returning the trained networks with the history."""
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if len(labels) != len(data.train_images):
        raise BadInputError(f"{len(labels)} labels for {len(data.train_images)} training images")
    device = resolve_device(config.device)
    rng.seed_globals(config.seed)
    model = build_backbone(config.backbone, data.channels, data.num_classes, data.image_size, config.seed).to(device)
    heads = nn.ModuleDict(method.modules(model, data)).to(device)
    params = [*model.parameters(), *heads.parameters()]
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    steps_per_epoch = -(-len(labels) // config.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps_per_epoch)
    use_amp = config.amp and device.type == "cuda"  # bf16 autocast: no loss scaling needed
    augmenter = None
    if config.augment:
        from vision.augment import Augmenter

        augmenter = Augmenter(data.image_size, flip=config.flip, seed=config.seed)

    generator = torch.Generator().manual_seed(config.seed)  # the data order
    generators = {"order": generator, **({"augment": augmenter.generator} if augmenter else {}),
                  **{f"method.{name}": g for name, g in method.generators().items()}}

    history: list[dict[str, Any]] = []
    start_epoch = 0
    checkpoint = _checkpoint_path(config, method, data, labels)
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        heads.load_state_dict(state["heads"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        rng.restore(state["rng"], generators)
        history, start_epoch = state["history"], state["epoch"] + 1

    images = data.train_images
    bar = tqdm(range(start_epoch, config.epochs), desc=f"{method.name} ({data.name})", unit="epoch",
               disable=not config.progress)
    for epoch in bar:
        started = time.monotonic()
        selected = method.select(model, images, labels, epoch) if epoch >= config.warmup_epochs else None
        trusted = selected if selected is not None else torch.ones(len(labels), dtype=torch.bool)
        model.train()
        heads.train()
        total, count = 0.0, 0
        for rows in torch.randperm(len(labels), generator=generator).split(config.batch_size):
            x = images[rows]
            weak, strong = (augmenter.views(x) if augmenter else (x, x))
            batch = Batch(rows.to(device), labels[rows].to(device), weak.to(device), strong.to(device),
                          trusted[rows].to(device), epoch, optimizer.param_groups[0]["lr"])
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss = method.loss(model, batch)
            parts = tuple(loss) if isinstance(loss, (tuple, list)) else (loss,)
            optimizer.zero_grad(set_to_none=True)
            method.backward(parts, params)
            optimizer.step()
            scheduler.step()
            method.after_step(model)
            total, count = total + float(sum(p.detach() for p in parts)) * len(rows), count + len(rows)
        accuracy = float((method.predict(model, data.test_images).argmax(1).cpu() == data.test_labels).float().mean())
        history.append({"epoch": epoch, "loss": total / max(count, 1), "test_accuracy": accuracy,
                        "selection": selection_metrics(selected, clean), "seconds": round(time.monotonic() - started, 3)})
        bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", acc=f"{accuracy:.3f}")
        if checkpoint is not None:
            save_checkpoint(checkpoint, {"model": model.state_dict(), "heads": heads.state_dict(),
                               "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                               "rng": rng.capture(generators), "history": history, "epoch": epoch})
            kill_hook(epoch + 1)
    return Trained(method, model, heads, history)


CHECKPOINT_FORMAT = 2  # 2: random states saved; older checkpoints are not resumed from


def _checkpoint_path(config: TrainConfig, method: Method, data: ImageData, labels: torch.Tensor) -> Path | None:
    if not config.checkpoint_dir:
        return None
    settings = {k: v for k, v in asdict(config).items() if k not in ("checkpoint_dir", "progress", "device")}
    identity = [CHECKPOINT_FORMAT, method.name, method.identity(), data.name, settings,
                labels.tolist()]
    key = digest(json.dumps(identity, sort_keys=True, default=str))
    return Path(config.checkpoint_dir) / f"{method.name}-{key}.pt"


KILL_AFTER_EPOCH = "CURATEKIT_KILL_AFTER_EPOCH"


def kill_hook(finished: int) -> None:
    """Test hook: with CURATEKIT_KILL_AFTER_EPOCH=k, SIGKILL this process as soon as the checkpoint
    of its k-th finished epoch (1-based) is on disk, as a crash or a preempted job would end it."""
    if os.environ.get(KILL_AFTER_EPOCH) == str(finished):
        os.kill(os.getpid(), signal.SIGKILL)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically, synced to disk before it replaces the last one."""
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())

"""The distillation family's segmentation protocol (used by ``rdd``): procedural shape scenes, a
wide teacher with an auxiliary head trained by CE first, then the student (a narrow FCN) with the
method's loss; dataset-level test mIoU (torchmetrics ``MulticlassJaccardIndex``, macro, ignore 255).

    dataset: shapes
    data: {image_size: 32, train: 320, test: 128, hard: 0.2, label_flip: 0.05, seed: 0}
    teacher: {width: 24, aux: true, epochs: 20}
    train: {width: 6, epochs: 20, batch_size: 16, lr: 0.02}     # the student
    method: {warmup: 200}

The loop follows the authors' ``train_onlykd_two_stage_diff.py``: SGD (momentum 0.9, wd 1e-4),
poly learning rate lr * (1 - (it - 1)/max)^0.9 per iteration, the iteration counter from 1, the
teacher frozen in eval mode under no_grad, bf16 autocast on CUDA. Per-epoch checkpoints (atomic,
every random state, :mod:`vision.rng`) when ``checkpoint_dir`` is set: a rerun resumes from the
last one, and the teacher (checkpointed in the student's directory) is trained once.
[assumed] Random horizontal flips stand in for the code's random scale/crop/mirror.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from curate.core.cache import digest
from curate.core.device import resolve_device
from curate.core.errors import BadInputError
from vision import rng
from vision.distill.shapes import SegmentationData, ShapesConfig, make_shapes

CHECKPOINT_FORMAT = 1


@dataclass
class SegTrainConfig:
    width: int = 6  # channels of the FCN's first stage (the later stages have twice as many)
    aux: bool = False  # an auxiliary head on the stride-2 stage
    epochs: int = 20
    batch_size: int = 16
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    power: float = 0.9  # of the poly schedule
    flip: bool = True  # random horizontal flips
    device: str = "auto"
    amp: bool = True  # bf16 autocast on CUDA
    seed: int = 0  # initialisation, data order, flips
    checkpoint_dir: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("width", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise BadInputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise BadInputError(f"lr must be positive, got {self.lr}")
        if self.power < 0:
            raise BadInputError(f"power must be >= 0, got {self.power}")


@dataclass
class SegmentationExperimentConfig:
    dataset: str = "shapes"
    data: ShapesConfig = field(default_factory=ShapesConfig)
    teacher: SegTrainConfig = field(default_factory=lambda: SegTrainConfig(width=24, aux=True))
    train: SegTrainConfig = field(default_factory=SegTrainConfig)  # the student
    method: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dataset != "shapes":
            raise BadInputError(f"dataset must be 'shapes' (procedural scenes, offline), got '{self.dataset}'")


@torch.no_grad()
def evaluate_miou(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, num_classes: int,
                  ignore_index: int, batch_size: int = 64) -> float:
    """Dataset-level mIoU: intersections and unions accumulated over the whole split, then averaged over classes."""
    from torchmetrics.classification import MulticlassJaccardIndex

    device = next(model.parameters()).device
    metric = MulticlassJaccardIndex(num_classes=num_classes, average="macro", ignore_index=ignore_index)
    was_training = model.training
    model.eval()
    for s in range(0, len(images), batch_size):
        metric.update(model(images[s:s + batch_size].to(device))["out"].float().argmax(1).cpu(), labels[s:s + batch_size])
    model.train(was_training)
    return float(metric.compute())


def train_step(method: Any, model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
               y: torch.Tensor, iteration: int, ignore_index: int, use_amp: bool = False) -> dict[str, float]:
    """One iteration: the teacher's outputs (no_grad, eval mode) if the method has one, the student's
    in train mode, the method's loss (fp32), one SGD step. The loss parts, as floats."""
    from vision.distill.base import Distiller

    model.train()
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=use_amp):
        teacher = method.teacher_outputs(x) if isinstance(method, Distiller) else None
        student = model(x)
    loss, parts = method.seg_loss(student, y, iteration, teacher, ignore_index)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": float(loss.detach()), **parts}


def _checkpoint_path(method: Any, data_config: ShapesConfig, config: SegTrainConfig) -> Path | None:
    if not config.checkpoint_dir:
        return None
    settings = {k: v for k, v in asdict(config).items() if k not in ("checkpoint_dir", "progress", "device")}
    key = digest(json.dumps([CHECKPOINT_FORMAT, method.name, method.identity(), asdict(data_config), settings],
                            sort_keys=True, default=str))
    return Path(config.checkpoint_dir) / f"seg-{method.name}-{key}.pt"


def train_segmenter(method: Any, data: SegmentationData, data_config: ShapesConfig,
                    config: SegTrainConfig) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(the trained network, its result: per-epoch loss parts and test mIoU, the final mIoU)."""
    from vision.distill.segnets import SegFCN
    from vision.train import kill_hook, save_checkpoint

    device = resolve_device(config.device)
    rng.seed_globals(config.seed)
    model = SegFCN(data.num_classes, config.width, config.aux, data.train_images.shape[1]).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    use_amp = config.amp and device.type == "cuda"
    count = len(data.train_images)
    steps = -(-count // config.batch_size)
    total = config.epochs * steps
    generators = {"order": torch.Generator().manual_seed(config.seed),
                  "flip": torch.Generator().manual_seed(config.seed + 1)}
    history: list[dict[str, Any]] = []
    start = 0
    checkpoint = _checkpoint_path(method, data_config, config)
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        rng.restore(state["rng"], generators)
        history, start = state["history"], state["epoch"] + 1
    bar = tqdm(range(start, config.epochs), desc=f"{method.name} ({data.name})", unit="epoch",
               disable=not config.progress)
    for epoch in bar:
        began = time.monotonic()
        sums: dict[str, float] = {}
        for step, rows in enumerate(torch.randperm(count, generator=generators["order"]).split(config.batch_size)):
            iteration = epoch * steps + step + 1
            for group in optimizer.param_groups:
                group["lr"] = config.lr * (1 - (iteration - 1) / total) ** config.power
            x, y = data.train_images[rows], data.train_labels[rows]
            if config.flip:
                flip = torch.rand(len(rows), generator=generators["flip"]) < 0.5
                x, y = torch.where(flip[:, None, None, None], x.flip(-1), x), torch.where(flip[:, None, None], y.flip(-1), y)
            parts = train_step(method, model, optimizer, x.to(device), y.to(device), iteration, data.ignore_index, use_amp)
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + value * len(rows)
        miou = evaluate_miou(model, data.test_images, data.test_labels, data.num_classes, data.ignore_index)
        history.append({"epoch": epoch, **{k: v / count for k, v in sums.items()}, "test_miou": miou,
                        "seconds": round(time.monotonic() - began, 3)})
        bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", miou=f"{miou:.3f}")
        if checkpoint is not None:
            save_checkpoint(checkpoint, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                         "rng": rng.capture(generators), "history": history, "epoch": epoch})
            kill_hook(epoch + 1)
    return model, {"epochs": history, "final": {"test_miou": history[-1]["test_miou"] if history else None}}


def train_segmentation_teacher(data: SegmentationData, config: SegmentationExperimentConfig
                               ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(the frozen teacher, its summary): CE on the training split, checkpointed in the student's
    checkpoint_dir when the teacher has none (so a rerun trains it once)."""
    from vision.distill.base import freeze
    from vision.distill.rdd import SegmentationCE

    teacher_train = config.teacher
    if config.train.checkpoint_dir and not teacher_train.checkpoint_dir:
        teacher_train = replace(teacher_train, checkpoint_dir=config.train.checkpoint_dir)
    keeper = SegmentationCE()
    keeper.name = "teacher"
    model, result = train_segmenter(keeper, data, config.data, teacher_train)
    return freeze(model.cpu()), {"width": config.teacher.width, "aux": config.teacher.aux,
                                 "test_miou": result["final"]["test_miou"], "epochs": len(result["epochs"])}


def run_segmentation_experiment(method: Any, config: SegmentationExperimentConfig,
                                teacher: tuple[torch.nn.Module, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Make the scenes, train (or take, as ``teacher``: (network, summary)) the teacher, then the
    student ``method`` with it; the result JSON, with a one-line ``summary``."""
    from vision.distill.base import Distiller

    if getattr(method, "needs_teacher_aux", False) and not config.teacher.aux:
        raise BadInputError(f"{method.name} needs a teacher with an auxiliary head: set teacher.aux: true")
    data = make_shapes(config.data)
    teacher_summary = None
    if isinstance(method, Distiller):
        network, teacher_summary = teacher or train_segmentation_teacher(data, config)
        method.set_teacher(network)
    _, result = train_segmenter(method, data, config.data, config.train)
    miou = result["final"]["test_miou"]
    summary = f"student (width {config.train.width}) test mIoU {100 * miou:.1f}% on {data.name}"
    if teacher_summary is not None:
        summary += f"; teacher (width {teacher_summary['width']}) {100 * teacher_summary['test_miou']:.1f}%"
    return {"method": method.name, "dataset": data.name, "config": asdict(config), "teacher": teacher_summary,
            **result, "summary": summary}

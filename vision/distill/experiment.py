"""A distillation experiment from a config: dataset, the teacher's training settings (or saved
weights), the student's training settings, the method's options.

    dataset: digits
    teacher: {backbone: convnet, epochs: 30, warmup_epochs: 0}
    train: {backbone: "mlp:32", epochs: 30, warmup_epochs: 0}   # the student
    method: {temperature: 4.0}

The teacher is trained on the same training split with clean labels (checkpointed with the
student's ``checkpoint_dir`` when one is set, so a rerun reuses it), frozen, and handed to the
method; a plain :class:`vision.train.Method` (no teacher) trains the student alone, the
cross-entropy baseline, under the same protocol.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from curate.core.errors import BadInputError
from vision.data import DataFields
from vision.train import Method, TrainConfig


@dataclass
class TeacherTrainConfig(TrainConfig):
    """The teacher's training settings: a TrainConfig whose own defaults are the teacher's, so that a
    partial ``teacher:`` section keeps them (a section is built from its class's defaults)."""
    backbone: str = "convnet"
    warmup_epochs: int = 0


@dataclass
class StudentTrainConfig(TrainConfig):
    """The student's training settings (the ``train:`` section), a narrow student by default."""
    backbone: str = "mlp:32"
    warmup_epochs: int = 0


@dataclass
class DistillExperimentConfig(DataFields):
    teacher: TeacherTrainConfig = field(default_factory=TeacherTrainConfig)
    teacher_weights: str | None = None  # a saved state_dict of the teacher backbone, in place of training it
    train: StudentTrainConfig = field(default_factory=StudentTrainConfig)
    method: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.teacher_weights is not None and not Path(self.teacher_weights).is_file():
            raise BadInputError(f"teacher_weights: no file at {self.teacher_weights!r}")


def train_teacher(data, config: DistillExperimentConfig):
    """(the frozen teacher, a summary dict): trained by cross-entropy on ``data``'s training split,
    or loaded from ``config.teacher_weights``."""
    import pickle

    import torch

    from vision.backbones import build_backbone
    from vision.distill.base import freeze
    from vision.train import fit, predict

    if config.teacher_weights:
        teacher = build_backbone(config.teacher.backbone, data.channels, data.num_classes, data.image_size)
        try:
            state = torch.load(config.teacher_weights, map_location="cpu", weights_only=True)
            teacher.load_state_dict(state)
        except (OSError, RuntimeError, ValueError, TypeError, AttributeError, pickle.UnpicklingError, EOFError) as err:
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise BadInputError(f"teacher_weights: cannot load {config.teacher_weights} into a "
                                f"'{config.teacher.backbone}' teacher ({reason})") from err
        result = None
    else:
        keeper = TeacherTraining()
        teacher_train = config.teacher
        if config.train.checkpoint_dir and not teacher_train.checkpoint_dir:
            teacher_train = replace(teacher_train, checkpoint_dir=config.train.checkpoint_dir)
        result = fit(keeper, data, data.train_labels, teacher_train)
        teacher = keeper.model
    teacher = freeze(teacher.cpu())
    accuracy = float((predict(teacher, data.test_images).argmax(1) == data.test_labels).float().mean())
    return teacher, {"backbone": config.teacher.backbone, "test_accuracy": accuracy,
                     "weights": config.teacher_weights, "epochs": None if result is None else len(result["epochs"])}


def run_distill_experiment(method: Any, config: DistillExperimentConfig) -> dict[str, Any]:
    """Train (or load) the teacher, then the student ``method`` with it; the result JSON."""
    from vision.data import load_images
    from vision.distill.base import Distiller
    from vision.train import fit

    data = load_images(config.dataset, root=config.root, seed=config.seed, image_size=config.image_size)
    teacher, teacher_summary = train_teacher(data, config)
    if isinstance(method, Distiller):
        method.set_teacher(teacher)
    result = fit(method, data, data.train_labels, config.train, extra={"teacher": teacher_summary})
    result["summary"] = (f"student ({config.train.backbone}) test accuracy {100 * result['final']['test_accuracy']:.1f}% "
                         f"on {data.name}; teacher ({teacher_summary['backbone']}) {100 * teacher_summary['test_accuracy']:.1f}%")
    return result


class TeacherTraining(Method):
    """Cross-entropy training that keeps a handle on the trained network (the teacher)."""

    name = "teacher"

    def modules(self, model, data) -> dict:
        self.model = model
        return {}

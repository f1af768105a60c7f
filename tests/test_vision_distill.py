"""The distillation family's base (:mod:`vision.distill`): ``softmax_kd`` against its written-out
definition, the plain KD loss, the frozen teacher, the teacher in the student's checkpoint key,
``teacher_weights`` and the family's config sections (a partial section keeps the family's defaults)."""
from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from vision.data import load_images
from vision.distill.base import Distiller, weights_digest
from vision.distill.experiment import DistillExperimentConfig, run_distill_experiment
from vision.distill.kd import KD, KDConfig, softmax_kd
from vision.run import build_config
from vision.train import Batch, Method, TrainConfig, _checkpoint_path, fit
from refused import refused


def _np_kd(student: np.ndarray, teacher: np.ndarray, t: float) -> float:
    """T^2 * mean over rows of KL(softmax(teacher/T) || softmax(student/T)), rows (N, C), by hand."""
    def softmax(z):
        e = np.exp(z / t - (z / t).max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)
    p, q = softmax(teacher), softmax(student)
    return t ** 2 * float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1)))


def _batch(x: torch.Tensor, y: torch.Tensor) -> Batch:
    return Batch(torch.arange(len(y)), y, x, x, torch.ones(len(y), dtype=torch.bool), epoch=0)


@pytest.fixture(scope="module")
def digits():
    data = load_images("digits", seed=0)
    data.train_images, data.train_labels = data.train_images[:300], data.train_labels[:300]
    data.test_images, data.test_labels = data.test_images[:100], data.test_labels[:100]
    return data


class NormTeacher(nn.Module):
    """A teacher with BatchNorm and Dropout: in train mode its forward changes its running statistics
    and its outputs; frozen, neither may happen."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.BatchNorm1d(48), nn.ReLU(), nn.Dropout(0.3),
                                 nn.Linear(48, classes))

    def forward(self, x):
        return self.net(x)


def test_softmax_kd_matches_its_definition_by_hand():
    # Kills a reversed KL (student || teacher), a sum over rows in place of the mean, a missing T^2
    # and the temperature applied to one side only.
    rng = np.random.default_rng(0)
    s, t = rng.normal(0, 3, (6, 5)), rng.normal(0, 3, (6, 5))
    for temperature in (1.0, 4.0):
        got = float(softmax_kd(torch.tensor(s), torch.tensor(t), temperature))
        assert got == pytest.approx(_np_kd(s, t, temperature), rel=1e-6)
    # the T^2 factor: the same logits at T = 4 give 16 times the KL of the softened distributions
    assert float(softmax_kd(torch.tensor(s), torch.tensor(t), 4.0)) == pytest.approx(
        16 * _np_kd(s / 4, t / 4, 1.0), rel=1e-6)
    assert float(softmax_kd(torch.tensor(t), torch.tensor(t), 4.0)) == pytest.approx(0, abs=1e-7)
    with pytest.raises(ValueError, match="differ"):
        softmax_kd(torch.zeros(2, 3), torch.zeros(2, 4), 1.0)


def test_softmax_kd_of_dense_logits_is_the_mean_over_pixels():
    # Kills a reshape that mixes classes and pixels ((N, C, H, W) flattened without moving C last)
    # and a mean over images of per-image sums.
    rng = np.random.default_rng(1)
    s, t = rng.normal(0, 2, (2, 4, 3, 5)), rng.normal(0, 2, (2, 4, 3, 5))
    rows = lambda z: np.moveaxis(z, 1, -1).reshape(-1, 4)  # noqa: E731 (every pixel a row)
    got = float(softmax_kd(torch.tensor(s), torch.tensor(t), 2.0))
    assert got == pytest.approx(_np_kd(rows(s), rows(t), 2.0), rel=1e-6)
    per_pixel = [_np_kd(s[n, :, i, j][None], t[n, :, i, j][None], 2.0) for n in range(2) for i in range(3) for j in range(5)]
    assert got == pytest.approx(np.mean(per_pixel), rel=1e-6)


def test_kd_loss_is_weighted_ce_plus_weighted_kd():
    # Kills swapped weights, CE against the teacher's argmax, and KD on the strong view or on
    # another batch's teacher logits.
    torch.manual_seed(0)
    student, teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    method = KD(KDConfig(temperature=3.0, ce_weight=0.3, kd_weight=0.7))
    method.set_teacher(teacher)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    batch = Batch(torch.arange(8), y, x, torch.randn_like(x), torch.ones(8, dtype=torch.bool), epoch=0)
    with torch.no_grad():
        s, t = student(x).double().numpy(), teacher(x).double().numpy()
    log_p = s - s.max(1, keepdims=True) - np.log(np.exp(s - s.max(1, keepdims=True)).sum(1, keepdims=True))
    ce = -float(np.mean(log_p[np.arange(8), y.numpy()]))
    expected = 0.3 * ce + 0.7 * _np_kd(s, t, 3.0)
    assert method.loss(student, batch).item() == pytest.approx(expected, rel=1e-5)


def test_kd_options_are_checked():
    for bad, message in [({"temperature": 0}, "temperature must be positive"), ({"ce_weight": -1}, "ce_weight must be >= 0"),
                         ({"kd_weight": -0.5}, "kd_weight must be >= 0")]:
        with pytest.raises(Exception, match=message):
            KDConfig(**bad)


def test_the_teacher_stays_frozen_through_student_training(digits):
    # Kills a teacher left in train mode (its BatchNorm statistics would move and dropout would
    # make its targets noisy), a teacher whose parameters take gradients, and a teacher optimised
    # with the student.
    torch.manual_seed(0)
    teacher = NormTeacher()
    teacher.train()
    before = copy.deepcopy(teacher.state_dict())
    method = KD()
    method.set_teacher(teacher)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    teacher.train()  # put back in train mode by someone: teacher_logits must still use eval mode
    x = digits.train_images[:16]
    first, second = method.teacher_logits(x), method.teacher_logits(x)
    assert torch.equal(first, second) and not first.requires_grad
    config = TrainConfig(backbone="mlp:16", epochs=2, warmup_epochs=0, device="cpu", progress=False)
    alone = fit(Method(), digits, digits.train_labels, replace(config, epochs=1))["epochs"]
    result = fit(method, digits, digits.train_labels, config)
    assert result["epochs"][0]["loss"] != alone[0]["loss"]  # the teacher was used
    after = teacher.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    assert not any(p.grad is not None for p in teacher.parameters())
    teacher.train()
    teacher(x)  # the same teacher in train mode does move its statistics (the check above can fail)
    assert not torch.equal(before["net.2.running_mean"], teacher.state_dict()["net.2.running_mean"])


class Untrained(Distiller):
    """A plain CE distiller without config: the teacher alone keys its checkpoints."""

    name = "untrained-distiller"


def test_the_students_checkpoint_key_names_its_teachers_weights(digits, tmp_path):
    # Kills an identity without the teacher (a rerun with a retrained teacher would resume the
    # student of the old one) and a digest of parameters only (BatchNorm buffers are weights too).
    config = TrainConfig(backbone="mlp:16", epochs=1, warmup_epochs=0, device="cpu", progress=False,
                         checkpoint_dir=str(tmp_path))
    labels = digits.train_labels
    torch.manual_seed(0)
    teacher = NormTeacher()

    def key(t: nn.Module | None, method: Distiller | None = None) -> str:
        method = method or KD()
        if t is not None:
            method.set_teacher(t)
        return _checkpoint_path(config, method, digits, labels).name

    same = copy.deepcopy(teacher)
    nudged = copy.deepcopy(teacher)
    with torch.no_grad():
        nudged.net[1].weight[0, 0] += 1e-6
    buffered = copy.deepcopy(teacher)
    buffered.net[2].running_mean += 0.5
    assert key(teacher) == key(same)
    assert len({key(teacher), key(nudged), key(buffered), key(None)}) == 4
    assert key(teacher, Untrained()) != key(nudged, Untrained())
    assert weights_digest(teacher) == weights_digest(same) != weights_digest(nudged)


def _experiment(**changes) -> DistillExperimentConfig:
    fast = dict(epochs=1, warmup_epochs=0, device="cpu", progress=False)
    return DistillExperimentConfig(teacher=TrainConfig(backbone="mlp:16", **fast),
                                   train=TrainConfig(backbone="mlp:8", **fast), **changes)


def test_teacher_weights_are_loaded_in_place_of_training(tmp_path):
    # Kills a loader that trains a teacher anyway, or hands the student another network than the
    # file's (the distiller's teacher digest must be the saved model's).
    from vision.backbones import build_backbone
    from vision.train import predict

    saved = build_backbone("mlp:16", 1, 10, 8, seed=5)
    path = tmp_path / "teacher.pt"
    torch.save(saved.state_dict(), path)
    method = KD()
    result = run_distill_experiment(method, _experiment(teacher_weights=str(path)))
    assert result["teacher"]["weights"] == str(path) and result["teacher"]["epochs"] is None
    assert weights_digest(method.teacher) == weights_digest(saved)
    data = load_images("digits", seed=0)
    accuracy = float((predict(saved, data.test_images).argmax(1) == data.test_labels).float().mean())
    assert result["teacher"]["test_accuracy"] == pytest.approx(accuracy)
    assert "teacher (mlp:16)" in result["summary"]


@pytest.fixture
def no_data(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("data loaded before the config was checked")
    monkeypatch.setattr("vision.data.load_images", refuse)


def test_a_missing_teacher_weights_file_is_one_line_before_any_data(tmp_path, capsys, no_data):
    config = {"teacher": {"backbone": "mlp:16"}, "teacher_weights": str(tmp_path / "nope.pt")}
    err = refused(tmp_path, capsys, "kd", config, names_file=False)
    assert f"teacher_weights: no file at '{tmp_path / 'nope.pt'}'" in err


@pytest.mark.parametrize("content, message", [
    # Kills a loader that catches only some of torch.load's and load_state_dict's errors (a text
    # file raises UnpicklingError, a saved tensor TypeError: both were tracebacks).
    ("text", "teacher_weights: cannot load"), ("tensor", "Expected state_dict to be dict-like"),
    ("other-backbone", "teacher_weights: cannot load"),
])
def test_a_bad_teacher_weights_file_is_one_line(tmp_path, capsys, content, message):
    from vision.backbones import build_backbone

    path = tmp_path / "teacher.pt"
    if content == "text":
        path.write_text("not a checkpoint\n")
    elif content == "tensor":
        torch.save(torch.zeros(3), path)
    else:
        torch.save(build_backbone("mlp:16", 1, 10, 8).state_dict(), path)
    config = {"teacher": {"backbone": "convnet"}, "teacher_weights": str(path), "train": {"epochs": 1}}
    err = refused(tmp_path, capsys, "kd", config, names_file=False)
    assert message in err and "into a 'convnet' teacher" in err


def test_a_partial_section_keeps_the_familys_defaults():
    # Kills sections built from TrainConfig's own defaults: ``train: {epochs: 3}`` gave a convnet
    # student with 5 warm-up epochs (refused: warmup_epochs 5 > epochs 3) instead of mlp:32.
    config = build_config({"teacher": {"epochs": 2}, "train": {"epochs": 3}}, "kd")
    assert (config.teacher.backbone, config.teacher.warmup_epochs) == ("convnet", 0)
    assert (config.train.backbone, config.train.warmup_epochs, config.train.epochs) == ("mlp:32", 0, 3)
    default = build_config({}, "kd")
    assert (default.teacher.backbone, default.train.backbone) == ("convnet", "mlp:32")

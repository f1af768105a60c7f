"""RDD (relative difficulty distillation, segmentation): the spec's three property tests (TFE
weighting and KL direction; the TSE XOR of two OHEM masks with min_kept; the stage switch, KD in
both stages, a frozen teacher, an empty selection), the shapes generator, the dataset-level mIoU,
bad input (exit 2, one line) and resume after SIGKILL. Each test names the wrong implementation it
kills; those are mutants in tests/mutants.py (block "RDD")."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch.nn import functional as F

from curate.cli import main as curate_main
from forked import run_forked
from vision.distill.kd import softmax_kd
from vision.distill.rdd import (RDD, PixelKD, RDDConfig, ohem_hard, tfe_task_loss, tfe_weights, tse_selection,
                                tse_task_loss)
from vision.distill.segmentation import (SegmentationExperimentConfig, SegTrainConfig, evaluate_miou,
                                         run_segmentation_experiment, train_step)
from vision.distill.segnets import SegFCN
from vision.distill.shapes import IGNORE, ShapesConfig, _flip_boundaries, make_shapes
from vision.train import KILL_AFTER_EPOCH



def _logits(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 2


def _pixels(probs: list[list[float]]) -> torch.Tensor:
    """Logits (1, C, 1, P) whose softmax at pixel p is probs[p]."""
    return torch.tensor(probs).log().T[None, :, None, :]


# -- property 1: TFE weights exp(-KL(p_aux || p_main)), easy pixels first ---------------------------

def test_agreeing_teacher_heads_give_unit_weights_and_the_mean_over_every_crop_pixel():
    # Kills weights taken from the student's heads (they disagree here), and a TFE mean over the
    # valid pixels only (the code divides by all B*H*W, ignored pixels included).
    main = _logits(2, 3, 4, 5, seed=0)
    teacher = {"out": main, "aux": main.clone()}
    student = {"out": _logits(2, 3, 4, 5, seed=1), "aux": _logits(2, 3, 4, 5, seed=2)}
    labels = torch.randint(0, 3, (2, 4, 5), generator=torch.Generator().manual_seed(3))
    labels[:, 0] = IGNORE
    torch.testing.assert_close(tfe_weights(main, main, (4, 5)), torch.ones(2, 4, 5))
    per = (F.cross_entropy(student["out"], labels, ignore_index=IGNORE, reduction="none")
           + 0.4 * F.cross_entropy(student["aux"], labels, ignore_index=IGNORE, reduction="none"))
    expected = per.sum() / labels.numel()
    loss = RDD(RDDConfig(warmup=10)).task_loss(student, labels, 1, teacher, IGNORE)
    torch.testing.assert_close(loss, expected)


def test_the_weight_falls_with_disagreement_and_uses_kl_of_aux_to_main():
    # Kills hard-first weighting (exp(+D): w_A > 1; 1 - exp(-D): w_B = 0 < w_A) and the swapped KL
    # (KL(p_main || p_aux) differs on this asymmetric pair).
    main = _pixels([[0.34, 0.33, 0.33], [0.6, 0.3, 0.1]])  # pixel A, pixel B
    for aux_a, stronger in ([0.7, 0.2, 0.1], [0.98, 0.01, 0.01]), ([0.5, 0.3, 0.2], [0.9, 0.05, 0.05]):
        aux = _pixels([aux_a, [0.6, 0.3, 0.1]])
        w = tfe_weights(main, aux, (1, 2))[0, 0].tolist()
        assert w[0] < w[1] and w[1] == pytest.approx(1.0)
        w_more = tfe_weights(main, _pixels([stronger, [0.6, 0.3, 0.1]]), (1, 2))[0, 0].tolist()
        assert w_more[0] < w[0]
    p_aux, p_main = np.array([0.98, 0.01, 0.01]), np.array([0.34, 0.33, 0.33])
    w = float(tfe_weights(_pixels([list(p_main)]), _pixels([list(p_aux)]), (1, 1)))
    right = math.exp(-float((p_aux * np.log(p_aux / p_main)).sum()))
    swapped = math.exp(-float((p_main * np.log(p_main / p_aux)).sum()))
    assert abs(right - swapped) > 0.2  # 0.38 vs 0.14
    assert w == pytest.approx(right, rel=1e-5)


# -- property 2: TSE selects hard_student XOR hard_teacher ---------------------------------------------

EASY, HARD = [0.95, 0.05], [0.3, 0.7]  # p_gt of class 0: 0.95 easy, 0.3 hard


def _four_cases():
    """Pixels (all label 0) easy/easy, teacher-hard, student-hard, hard/hard (3 of each), then 3
    ignored pixels that are hard for the teacher only. Logits shifted by -5 (softmax unchanged), so
    every true-class LOGIT is below 0.7."""
    cases = [(EASY, EASY), (HARD, EASY), (EASY, HARD), (HARD, HARD), (HARD, EASY)]  # (teacher, student)
    teacher = _pixels([t for t, _ in cases for _ in range(3)]) - 5
    student = _pixels([s for _, s in cases for _ in range(3)]) - 5
    labels = torch.tensor([0] * 12 + [IGNORE] * 3)[None, None]
    mixed = torch.tensor([False] * 3 + [True] * 6 + [False] * 6)[None, None]
    return teacher, student, labels, mixed


def test_tse_selects_only_the_two_mixed_cases_and_never_an_ignored_pixel():
    # Kills OR (adds hard/hard), AND (only hard/hard), OHEM on the student only, selection by
    # logits (every true-class logit is <= 0.7: all hard for both, nothing selected), and hard
    # masks that keep ignored pixels (they are hard for the teacher only here).
    teacher, student, labels, mixed = _four_cases()
    chosen = tse_selection(student, teacher, labels, IGNORE, 0.7, min_kept_ratio=0.05)
    assert torch.equal(chosen, mixed)
    ce = F.cross_entropy(student, labels, ignore_index=IGNORE, reduction="none")
    loss = tse_task_loss({"out": student}, {"out": teacher}, labels, IGNORE)
    torch.testing.assert_close(loss, ce[mixed].mean())


def test_the_auxiliary_tse_term_uses_masks_of_the_auxiliary_heads():
    # Kills a TSE aux term that reuses the main heads' XOR mask.
    teacher, student, labels, mixed = _four_cases()
    aux_t, aux_s = student.clone(), teacher.clone()  # the same four cases with teacher and student swapped...
    aux_t[..., :3], aux_s[..., :3] = _pixels([HARD] * 3) - 5, _pixels([EASY] * 3) - 5  # ...and easy/easy now mixed
    aux_mixed = mixed.clone()
    aux_mixed[..., :3] = True
    ce = F.cross_entropy(student, labels, ignore_index=IGNORE, reduction="none")
    ce_aux = F.cross_entropy(aux_s, labels, ignore_index=IGNORE, reduction="none")
    loss = tse_task_loss({"out": student, "aux": aux_s}, {"out": teacher, "aux": aux_t}, labels, IGNORE)
    torch.testing.assert_close(loss, ce[mixed].mean() + 0.4 * ce_aux[aux_mixed].mean())


def test_the_ohem_threshold_rises_to_the_min_kept_th_smallest_probability():
    # Kills a fixed 0.7 threshold (nothing here is <= 0.7) and a min_kept counted over all pixels
    # or unclamped (a ratio of 1 must keep every valid pixel, not crash).
    p_gt = torch.linspace(0.72, 0.99, 20)
    logits = torch.stack([p_gt, 1 - p_gt]).log()[None, :, None, :]
    labels = torch.zeros(1, 1, 20, dtype=torch.long)
    hard = ohem_hard(logits, labels, IGNORE, 0.7, min_kept_ratio=0.25)[0, 0]
    assert hard.tolist() == [True] * 5 + [False] * 15  # min_kept = 5 of 20
    labels[..., 10:] = IGNORE  # 10 valid: min_kept = max(1, int(0.25 * 10)) = 2
    assert ohem_hard(logits, labels, IGNORE, 0.7, 0.25)[0, 0].tolist() == [True] * 2 + [False] * 18
    assert ohem_hard(logits, labels, IGNORE, 0.7, 1.0)[0, 0].tolist() == [True] * 10 + [False] * 10
    below = torch.stack([torch.full((20,), 0.5), torch.full((20,), 0.5)]).log()[None, :, None, :]
    assert ohem_hard(below, torch.zeros(1, 1, 20, dtype=torch.long), IGNORE, 0.7, 0.05).all()  # 0.7 is a floor


# -- property 3: the stage switch, KD in both stages, a frozen teacher, an empty selection --------------

def _outputs(seed: int) -> dict[str, torch.Tensor]:
    return {"out": _logits(2, 3, 6, 6, seed=seed), "aux": _logits(2, 3, 6, 6, seed=seed + 1)}


def test_tfe_runs_until_warmup_minus_one_then_tse_with_the_same_kd():
    # Kills a stage off-by-one (TSE at it = warmup - 1 or TFE at it = warmup) and KD dropped in stage 2.
    method = RDD(RDDConfig(warmup=5))
    student, teacher = _outputs(0), _outputs(10)
    labels = torch.randint(0, 3, (2, 6, 6), generator=torch.Generator().manual_seed(4))
    kd = softmax_kd(student["out"], teacher["out"], 1.0)
    tfe = tfe_task_loss(student, teacher, labels, IGNORE)
    tse = tse_task_loss(student, teacher, labels, IGNORE)
    assert abs(float(tfe - tse)) > 1e-3
    for iteration, task in ((1, tfe), (4, tfe), (5, tse), (6, tse)):
        loss, parts = method.seg_loss(student, labels, iteration, teacher, IGNORE)
        torch.testing.assert_close(loss, task + kd, msg=f"iteration {iteration}")
        assert parts["kd"] == pytest.approx(float(kd))


def test_an_empty_selection_gives_zero_task_loss_and_kd_still_trains():
    # Kills the released code's weighted mean over an empty set (NaN, and the step skipped).
    flat = torch.zeros(1, 3, 4, 4)
    student = {"out": (flat + torch.tensor([0.0, 0.1, 0.2])[None, :, None, None]).requires_grad_()}
    teacher = {"out": flat + torch.tensor([0.3, 0.0, 0.0])[None, :, None, None]}
    labels = torch.zeros(1, 4, 4, dtype=torch.long)  # p_gt < 0.7 everywhere: all hard for both, S empty
    teacher["aux"] = teacher["out"]
    loss, parts = RDD(RDDConfig(warmup=1)).seg_loss(student, labels, 1, teacher, IGNORE)
    assert parts["task"] == 0.0 and parts["kd"] > 0 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(student["out"].grad).all() and student["out"].grad.abs().sum() > 0


def test_a_step_leaves_the_teacher_bit_identical_and_without_gradients():
    # Kills a teacher run in train mode (its BatchNorm statistics move) or with gradients.
    torch.manual_seed(0)
    teacher, student = SegFCN(3, 4, aux=True), SegFCN(3, 2, aux=True)
    method = RDD(RDDConfig(warmup=2))
    method.set_teacher(teacher)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    x, y = torch.rand(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
    for iteration in (1, 2):  # a TFE and a TSE step
        parts = train_step(method, student, optimizer, x, y, iteration, IGNORE)
        assert math.isfinite(parts["loss"])
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())


class _Recorder(PixelKD):
    name = "recorder"

    def seg_loss(self, student, labels, iteration, teacher, ignore_index):
        self.iterations = [*getattr(self, "iterations", []), iteration]
        return super().seg_loss(student, labels, iteration, teacher, ignore_index)


def _tiny(checkpoint_dir: str | None = None, epochs: int = 2, warmup: int = 4) -> SegmentationExperimentConfig:
    return SegmentationExperimentConfig(
        data=ShapesConfig(image_size=16, train=24, test=8, seed=1),
        teacher=SegTrainConfig(width=4, aux=True, epochs=2, batch_size=8, device="cpu", progress=False),
        train=SegTrainConfig(width=2, epochs=epochs, batch_size=8, device="cpu", progress=False, seed=2,
                             checkpoint_dir=checkpoint_dir),
        method={"warmup": warmup})


def test_the_loop_counts_iterations_from_one():
    # Kills an iteration counter from 0 (TFE would run warmup steps, not warmup - 1).
    method = _Recorder()
    run_segmentation_experiment(method, _tiny(epochs=2))
    assert method.iterations == list(range(1, 7))  # 2 epochs x 3 batches


# -- data, metric, bad input, resume ---------------------------------------------------------------------

def test_the_scenes_are_seeded_with_an_ignored_border_and_boundary_flips_only_in_training():
    a, b = make_shapes(ShapesConfig(image_size=16, train=6, test=4, seed=3)), make_shapes(
        ShapesConfig(image_size=16, train=6, test=4, seed=3))
    assert torch.equal(a.train_images, b.train_images) and torch.equal(a.test_labels, b.test_labels)
    assert not torch.equal(a.train_images, make_shapes(ShapesConfig(image_size=16, train=6, test=4, seed=4)).train_images)
    for labels in (a.train_labels, a.test_labels):
        assert (labels[:, 0] == IGNORE).all() and (labels[:, :, -1] == IGNORE).all()
        assert set(labels[:, 1:-1, 1:-1].unique().tolist()) <= set(range(5))
    label = np.zeros((20, 20), dtype=np.int64)
    label[5:15, 5:15] = 2
    flipped = _flip_boundaries(label, 0.05, np.random.default_rng(0))
    changed = flipped != label
    assert changed.sum() == 20  # 5% of 400 pixels
    inner = np.zeros_like(changed)
    inner[6:14, 6:14] = inner[:4] = True
    assert not (changed & inner).any()  # only on the boundary band


def test_miou_is_accumulated_over_the_whole_split():
    # Kills a per-image (or per-batch) mean of IoUs: 0.375 here, not 0.6.
    class Fixed(torch.nn.Module):
        def __init__(self, predictions):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))
            self.predictions, self.seen = predictions, 0

        def forward(self, x):
            rows = self.predictions[self.seen:self.seen + len(x)]
            self.seen += len(x)
            return {"out": F.one_hot(rows, 2).permute(0, 3, 1, 2).float()}

    labels = torch.tensor([[[0, 0], [0, 0]], [[1, 1], [0, 1]]])
    predictions = torch.tensor([[[0, 0], [0, 1]], [[1, 1], [1, 1]]])
    images = torch.zeros(2, 3, 2, 2)
    # over the split: class 0 intersection 3, union 5; class 1 intersection 3, union 5
    miou = evaluate_miou(Fixed(predictions), images, labels, 2, IGNORE, batch_size=1)
    assert miou == pytest.approx(0.6)


def _refused(tmp_path: Path, capsys, config: dict) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "out" / "r.json"
    assert curate_main(["vision", "rdd", "--config", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()
    return err


@pytest.mark.parametrize("section, bad, message", [
    ("method", {"min_kept_ratio": 2.0}, "min_kept_ratio must be in (0, 1], got 2.0"),
    ("method", {"selection": "nand"}, "selection must be one of xor, or, and, student, got 'nand'"),
    ("method", {"warmpu": 5}, "unknown field 'method.warmpu' (did you mean 'method.warmup'?)"),
    ("teacher", {"aux": False}, "rdd needs a teacher with an auxiliary head: set teacher.aux: true"),
    ("data", {"hard": 1.5}, "hard must be in [0, 1], got 1.5"),
    (None, {"dataset": "cityscapes"}, "dataset must be 'shapes'"),
])
def test_bad_input_is_one_line_and_exit_2_before_any_work(tmp_path, capsys, monkeypatch, section, bad, message):
    monkeypatch.setattr("vision.distill.segmentation.make_shapes", lambda *a: pytest.fail("data made"))
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "recipes/vision/rdd.yaml").read_text())
    if section is None:
        config.update(bad)
    else:
        config[section] = {**config[section], **bad}
    assert message in _refused(tmp_path, capsys, config)


def test_the_command_prints_a_one_line_summary(tmp_path, capsys):
    raw = {"data": {"image_size": 16, "train": 24, "test": 8}, "method": {"warmup": 4},
           "teacher": {"width": 4, "aux": True, "epochs": 1, "batch_size": 8, "progress": False},
           "train": {"width": 2, "epochs": 1, "batch_size": 8, "progress": False}}
    path, out = tmp_path / "rdd.yaml", tmp_path / "r.json"
    path.write_text(yaml.safe_dump(raw))
    assert curate_main(["vision", "rdd", "--config", str(path), "--out", str(out), "--device", "cpu"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("rdd: student (width 2) test mIoU ") and "teacher (width 4)" in line
    assert json.loads(out.read_text())["final"]["test_miou"] is not None


def _train(checkpoint_dir: Path, kill_after: int | None) -> None:
    torch.set_num_threads(1)
    if kill_after is not None:
        os.environ[KILL_AFTER_EPOCH] = str(kill_after)
    result = run_segmentation_experiment(RDD(RDDConfig(warmup=7)), _tiny(str(checkpoint_dir), epochs=4))
    (checkpoint_dir / "result.json").write_text(json.dumps(result["epochs"]))


def _run(checkpoint_dir: Path, kill_after: int | None = None) -> int:
    return run_forked(_train, checkpoint_dir, kill_after)


def test_a_run_killed_after_epoch_three_resumes_to_the_uninterrupted_result(tmp_path):
    # Kills a checkpoint without the flip or order generator or the global states, and a
    # resumed iteration counter that restarts (the stage switch at it = 7 falls in epoch 3).
    # The teacher (2 epochs) never reaches the kill point; on the rerun it is loaded, not retrained.
    assert _run(tmp_path / "straight") == 0
    assert _run(tmp_path / "killed", kill_after=3) == -9
    assert _run(tmp_path / "killed") == 0
    def outcome(d: Path):
        epochs = [{k: v for k, v in e.items() if k != "seconds"} for e in json.loads((d / "result.json").read_text())]
        (student,) = d.glob("seg-rdd-*.pt")
        return epochs, torch.load(student, weights_only=False)["model"]
    (straight, weights), (resumed, resumed_weights) = outcome(tmp_path / "straight"), outcome(tmp_path / "killed")
    assert len(straight) == 4 and resumed == straight
    for key, value in weights.items():
        torch.testing.assert_close(resumed_weights[key], value, rtol=0, atol=1e-6, msg=key)

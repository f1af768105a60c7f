"""D2L + MAT, semi-supervised multi-label (vision.multilabel.ssmll, vision.multilabel.patches): the
spec's property tests, each naming in a comment the plausible wrong implementation it kills (its
mutant in tests/mutants.py), a SIGKILL resume test and bad-input tests."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from forked import run_forked
from refused import recipe, refused
from vision.backbones import build_backbone
from vision.multilabel.patches import aggregate, patch_view
from vision.multilabel.ssmll import (CAPConfig, D2LMATConfig, FourHeads, asl, cap_thresholds, ema_of, main_loss,
                                     mat_thresholds, metric_curves, pseudo_thresholds, score, student_loss,
                                     threshold_grid)

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "vision"


def _code_search(scores: np.ndarray, targets: np.ndarray, metric: str, beta: float = 0.5) -> np.ndarray:
    """The authors' loop, by hand: best = 0, tau = 0; per t in 0.00 .. 0.99 update on a strict '>'."""
    tau = np.zeros(scores.shape[1])
    for k in range(scores.shape[1]):
        best = 0.0
        for t in threshold_grid():
            pred = scores[:, k] >= t
            tp, pp, pos = float((pred & (targets[:, k] == 1)).sum()), float(pred.sum()), float(targets[:, k].sum())
            if pp == 0 or pos == 0:
                continue
            p, r = tp / pp, tp / pos
            value = {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0,
                     "fbeta": (1 + beta * beta) * p * r / (beta * p + r) if p + r else 0.0}[metric]
            if value > best:
                best, tau[k] = value, t
    return tau


def _labelled_case(seed: int, n: int = 60, k: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, k)) < 0.3).astype(int)
    scores = np.clip(0.25 + 0.35 * targets + rng.normal(0, 0.2, (n, k)), 0, 1).round(3)
    return scores, targets


# -- property 1: MAT is an exact per-class grid argmax on labelled data ----------------------------

@pytest.mark.parametrize("metric", ["fbeta", "f1", "precision"])
def test_mat_is_the_per_class_grid_argmax_with_ties_to_the_smallest_t(metric):
    # Kills a global threshold (one t for all classes), CAP quantiles in place of MAT, ties broken
    # to the largest t, and '>' for '>=' in the prediction: the authors' search, by hand, must agree.
    config = D2LMATConfig(metric=metric)
    for seed in range(4):
        scores, targets = _labelled_case(seed)
        unlabelled = np.random.default_rng(seed + 50).random((200, scores.shape[1]))
        tau, empty = pseudo_thresholds(config, scores, targets, unlabelled)
        assert empty == [] and np.array_equal(tau, _code_search(scores, targets, metric))
        curves = np.nan_to_num(metric_curves(scores, targets, metric), nan=-1)
        at_tau = curves[np.arange(len(tau)), np.round(tau * 100).astype(int)]
        assert np.array_equal(at_tau, curves.max(1))
    assert len(set(tau.tolist())) > 1  # the classes differ: a global threshold cannot pass


def test_mat_ignores_the_unlabelled_scores():
    # Kills thresholds fitted on the unlabelled set (CAP's or MAT's): new unlabelled scores, same tau.
    scores, targets = _labelled_case(7)
    rng = np.random.default_rng(0)
    taus = [pseudo_thresholds(D2LMATConfig(), scores, targets, rng.random((150, scores.shape[1])) ** power)[0]
            for power in (0.3, 1.0, 3.0)]
    assert all(np.array_equal(taus[0], t) for t in taus[1:])
    cap = [pseudo_thresholds(CAPConfig(), scores, targets, rng.random((150, scores.shape[1])) ** power)[0]
           for power in (0.3, 3.0)]
    assert not np.array_equal(cap[0], cap[1])  # CAP does read them


def test_f1_mat_on_separable_scores_is_the_first_grid_value_above_the_largest_negative():
    # Kills a search that keeps the last of tied thresholds (it returns the largest t <= min positive)
    # or one that scans a coarser or shifted grid.
    rng = np.random.default_rng(3)
    targets = (rng.random((80, 5)) < 0.4).astype(int)
    targets[0], targets[1] = 1, 0
    scores = np.where(targets == 1, rng.uniform(0.6, 1.0, targets.shape), rng.uniform(0.0, 0.4, targets.shape))
    tau, _ = mat_thresholds(scores, targets, metric="f1")
    largest_negative = np.where(targets == 0, scores, -1).max(0)
    expected = np.floor(largest_negative * 100 + 1) / 100
    assert np.allclose(tau, expected) and np.all(tau <= np.where(targets == 1, scores, 2).min(0))
    predicted = scores >= tau
    assert np.all(predicted == (targets == 1))  # labelled F1 = 1


def test_fbeta_code_form_acts_as_the_standard_f_sqrt_beta_and_beta_one_is_f1():
    # Kills beta and beta^2 swapped without the fbeta_form flag (the code form would then be the
    # standard F_0.5), and an F1 that is not Fbeta at beta = 1 (compared with a tolerance: the forms
    # differ only in float ties).
    scores, targets = _labelled_case(11, n=200, k=10)
    code = metric_curves(scores, targets, "fbeta", 0.5, "code")
    sqrt_beta = metric_curves(scores, targets, "fbeta", math.sqrt(0.5), "standard")
    ratio = (1 + 0.25) / (1 + 0.5)  # the two are proportional
    assert np.allclose(np.nan_to_num(code), np.nan_to_num(sqrt_beta) * ratio)
    assert np.allclose(np.nan_to_num(metric_curves(scores, targets, "fbeta", 1.0, "code")),
                       np.nan_to_num(metric_curves(scores, targets, "f1")))
    code_tau, _ = mat_thresholds(scores, targets, "fbeta", 0.5, "code")
    half_tau, _ = mat_thresholds(scores, targets, "fbeta", 0.5, "standard")
    assert np.abs(code_tau - mat_thresholds(scores, targets, "fbeta", math.sqrt(0.5), "standard")[0]).max() <= 0.01
    assert (code_tau != half_tau).any()  # F_0.71 is not F_0.5 here


def test_a_class_without_labelled_positives_gets_the_guard_threshold():
    # Kills the code's unguarded search (tau = 0: every unlabelled image a positive of that class).
    scores, targets = _labelled_case(2)
    targets[:, 3] = 0
    tau, empty = mat_thresholds(scores, targets)
    assert empty == [3] and tau[3] == 1.0 and (tau[[0, 1, 2, 4, 5]] < 1).all()
    tau, empty = cap_thresholds(np.random.default_rng(0).random((100, 6)), targets)
    assert empty == [3] and tau[3] == 1.0


def test_cap_matches_the_labelled_class_prior_on_unlabelled_data():
    # Kills CAP thresholds ranked in ascending order, or ranked by the labelled set's size.
    rng = np.random.default_rng(5)
    targets = (rng.random((40, 4)) < np.array([0.1, 0.25, 0.5, 0.7])).astype(int)
    unlabelled = rng.random((500, 4))
    tau, _ = cap_thresholds(unlabelled, targets)
    rate = (unlabelled >= tau).mean(0)
    assert np.allclose(rate, np.floor(targets.mean(0) * 500) / 500)


# -- property 2: decoupling is gradient isolation --------------------------------------------------

def _net(seed: int = 0) -> FourHeads:
    return FourHeads(build_backbone("convnet:8", 1, 10, 20, seed), 10, 2)


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 1, 20, 20, generator=torch.Generator().manual_seed(seed))


def _grads(net: FourHeads) -> dict[str, float]:
    out = {h: sum(float(p.grad.abs().sum()) if p.grad is not None else 0.0 for p in net.heads[h].parameters())
           for h in ("h1", "h2", "h3", "h4")}
    out["backbone"] = sum(float(p.grad.abs().sum()) for p in net.backbone.parameters() if p.grad is not None)
    return out


def test_transfer_copies_the_generation_heads_bitwise():
    # Kills a main stage that skips the transfer (h3/h4 left at their random initialisation).
    net = _net()
    assert not torch.equal(net.heads["h3"].weight, net.heads["h1"].weight)
    net.transfer()
    for a, b in (("h3", "h1"), ("h4", "h2")):
        for p, q in zip(net.heads[a].parameters(), net.heads[b].parameters()):
            assert torch.equal(p, q) and p.data_ptr() != q.data_ptr()


def test_pseudo_label_loss_never_reaches_the_generation_heads_and_vice_versa():
    # Kills one shared head per branch (pseudo-labels trained into h1/h2, i.e. no generation /
    # utilisation split) while decouple is on.
    config = D2LMATConfig()
    x, y = _images(6, 1), (torch.rand(6, 10) < 0.3).float()
    xu, y_hat = _images(8, 2), (torch.rand(8, 10) < 0.3).float()
    net = _net()
    net.transfer()
    student_loss(net, config, x[:0], y[:0], xu, y_hat).backward()
    g = _grads(net)
    assert g["h1"] == 0 and g["h2"] == 0 and g["h3"] > 0 and g["h4"] > 0 and g["backbone"] > 0
    net.zero_grad(set_to_none=True)
    student_loss(net, config, x, y).backward()
    g = _grads(net)
    assert g["h3"] == 0 and g["h4"] == 0 and g["h1"] > 0 and g["h2"] > 0
    net.zero_grad(set_to_none=True)
    student_loss(net, D2LMATConfig(decouple=False), x[:0], y[:0], xu, y_hat).backward()
    assert _grads(net)["h1"] > 0  # the ablation does share them


def test_pseudo_labels_come_from_the_ema_teacher_which_gets_no_gradient():
    # Kills pseudo-labels from the student (teacher and student one network) and a teacher whose
    # weights take gradients: the teacher says every class, the student none.
    config = D2LMATConfig()
    net = _net()
    net.transfer()
    teacher = ema_of(net, 0.9)
    teacher.update_parameters(net)  # the first update copies the student
    with torch.no_grad():
        for h in ("h1", "h2"):
            teacher.module.heads[h].bias.fill_(30.0)
            net.heads[h].bias.fill_(-30.0)
    x, y = _images(4, 1), (torch.rand(4, 10) < 0.3).float()
    weak, strong = _images(8, 2), _images(8, 3)
    tau = torch.full((10,), 0.5)
    loss = main_loss(net, teacher.module, config, x, y, weak, strong, tau)
    assert torch.allclose(loss, student_loss(net, config, x, y, strong, torch.ones(8, 10)))
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    before = [p.detach().clone() for p in teacher.module.parameters()]
    teacher.update_parameters(net)
    after = list(teacher.module.parameters())
    assert all(torch.allclose(a, 0.9 * b + 0.1 * s) for a, b, s in zip(after, before, net.parameters()))


def test_inference_reads_the_generation_heads_only():
    # Kills a test-time score that reads (or adds) the utilisation heads h3/h4.
    net = _net()
    x = _images(5, 4)
    base = score(net, x)
    with torch.no_grad():
        for h in ("h3", "h4"):
            net.heads[h].weight.normal_()
            net.heads[h].bias.fill_(5.0)
    assert torch.equal(score(net, x), base)
    with torch.no_grad():
        net.heads["h2"].bias.add_(1.0)
    assert not torch.allclose(score(net, x), base)
    expected = torch.sigmoid((net(x, ("h1",))["h1"] + net(x, ("h2",))["h2"]) / 2)
    assert torch.allclose(score(net, x), expected)


# -- property 3: patch aggregation -----------------------------------------------------------------

def test_aggregation_is_soft_max_pooling_over_patches():
    # Kills a softmax over the class axis, and mean pooling: bounds, permutation invariance, class
    # independence, and one dominant patch.
    torch.manual_seed(0)
    z = torch.randn(7, 4, 10) * 3
    a = aggregate(z)
    assert (z.amin(1) <= a + 1e-6).all() and (z.mean(1) <= a + 1e-6).all() and (a <= z.amax(1) + 1e-6).all()
    assert (a > z.mean(1) + 1e-3).any()  # not the mean
    assert torch.allclose(aggregate(z[:, torch.randperm(4)]), a, atol=1e-6)
    other = z.clone()
    other[..., 1:] = torch.randn(7, 4, 9) * 5
    assert torch.allclose(aggregate(other)[:, 0], a[:, 0])
    spike = torch.randn(3, 4, 10)
    spike[:, 2, :] += 20
    assert torch.allclose(aggregate(spike), spike[:, 2, :], atol=1e-5)


def test_patch_view_is_the_grid_resized_and_a_seeded_shuffle():
    # Kills cells cut in the wrong order or from the wrong region, and an unseeded shuffle.
    x = torch.arange(2 * 16.0).reshape(2, 1, 4, 4)
    cells = patch_view(x, 2, 2)
    assert cells.shape == (2, 4, 1, 2, 2)
    assert torch.allclose(cells[0, :, 0, 0, 0], torch.tensor([2.5, 4.5, 10.5, 12.5]))  # 2x2 cell means
    big = patch_view(torch.rand(3, 1, 20, 20), 2, 20)
    assert big.shape == (3, 4, 1, 20, 20)
    plain = patch_view(x, 2, 4)
    a = patch_view(x, 2, 4, torch.Generator().manual_seed(1))
    b = patch_view(x, 2, 4, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    for i in range(2):  # a permutation of the same cells
        assert sorted(a[i].flatten(1).sum(1).tolist()) == sorted(plain[i].flatten(1).sum(1).tolist())


def test_asl_without_focusing_or_clip_is_summed_bce_and_its_weights_carry_no_gradient():
    # Kills an averaged ASL (the code sums) and a focusing weight that is differentiated.
    torch.manual_seed(0)
    logits, y = torch.randn(5, 4, requires_grad=True), (torch.rand(5, 4) < 0.4).float()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="sum")
    assert torch.allclose(asl(logits, y, 0.0, 0.0, 0.0), bce, atol=1e-4)
    asl(logits, y).backward()
    grad = logits.grad.clone()
    p = torch.sigmoid(logits.detach())
    p_neg = (1 - p + 0.05).clamp(max=1)
    weight = torch.where(y == 1, torch.ones_like(p), (1 - p_neg) ** 4)
    logits.grad = None
    (-(weight * (y * torch.log(torch.sigmoid(logits)) + (1 - y) * torch.log((1 - torch.sigmoid(logits) + 0.05)
                                                                            .clamp(max=1))))).sum().backward()
    assert torch.allclose(grad, logits.grad, atol=1e-5)


# -- the experiment: end to end, resume, bad input -------------------------------------------------

def _tiny(method: str, **method_options) -> dict:
    config = yaml.safe_load((RECIPES / f"{method}.yaml").read_text())
    config["mosaic"] = {**config["mosaic"], "train_size": 240, "test_size": 100}
    config["labelled"] = 0.15
    config["train"].update(backbone="convnet:8", epochs=3, warmup_epochs=1, progress=False)
    config["method"] = {**config["method"], "warmup_passes": 1, **method_options}
    if method != "ssmll_bce":
        config["method"].update(unlabelled_batch=51, labelled_batch=6)
    return config


def _fit(method: str, config: dict, checkpoint_dir: str | None = None) -> dict:
    from vision.run import run_experiment

    config = {**config, "train": {**config["train"], "checkpoint_dir": checkpoint_dir}}
    return run_experiment(method, config)


def _resume_child(config: dict, checkpoint_dir: str, out: str, kill: int | None) -> None:
    import os

    if kill:
        os.environ["CURATEKIT_KILL_AFTER_EPOCH"] = str(kill)
    torch.set_num_threads(1)
    result = _fit("d2l_mat", config, checkpoint_dir)
    Path(out).write_text(json.dumps(result))


def test_end_to_end_records_the_split_and_the_per_epoch_mat_thresholds():
    # Kills a runner that trains on the unlabelled labels (the split), or fits no thresholds per epoch.
    result = _fit("d2l_mat", _tiny("d2l_mat"))
    assert result["split"] == {"labelled": 36, "unlabelled": 204, "threshold_fit": 36, "test": 100}
    main = [e for e in result["epochs"] if e["stage"] == "main"]
    assert len(main) == 2 and all(len(e["pseudo_thresholds"]) == 10 for e in main)
    assert 0 <= result["final"]["test_map"] <= 1 and "mAP" in result["summary"]
    bce = _fit("ssmll_bce", _tiny("ssmll_bce"))
    assert bce["student"]["thresholds"] == [0.5] * 10 and all(e["stage"] == "warmup" for e in bce["epochs"])


@pytest.mark.parametrize("kill_after", [1, 2])  # after the warm-up epoch, inside the main stage
def test_a_killed_run_resumes_to_the_uninterrupted_result(tmp_path, kill_after):
    # Kills a checkpoint without the EMA teacher, the stage's optimiser/scheduler or a generator
    # (data order, augmentations, patch shuffles): the resumed run would end elsewhere.
    config = _tiny("d2l_mat")
    ck = str(tmp_path / "ck")
    assert run_forked(_resume_child, config, ck, str(tmp_path / "killed.json"), kill_after) == -9
    assert not (tmp_path / "killed.json").exists()
    assert run_forked(_resume_child, config, ck, str(tmp_path / "resumed.json"), None) == 0
    assert run_forked(_resume_child, config, str(tmp_path / "ck2"), str(tmp_path / "straight.json"), None) == 0
    got, straight = (json.loads((tmp_path / f).read_text()) for f in ("resumed.json", "straight.json"))
    strip = lambda epochs: [{k: v for k, v in e.items() if k != "seconds"} for e in epochs]  # noqa: E731
    assert strip(got["epochs"]) == strip(straight["epochs"]) and got["final"] == straight["final"]


@pytest.mark.parametrize("method, section, bad, message", [
    # Kills a loader that lets these through to fail (or train nonsense) later.
    ("d2l_mat", "method", {"metric": "accuracy"}, "method: metric must be one of fbeta, f1, precision, recall, got 'accuracy'"),
    ("d2l_mat", "method", {"fbeta_form": "paper"}, "method: fbeta_form must be code or standard, got 'paper'"),
    ("d2l_mat", "method", {"schedule_fraction": 0}, "method: schedule_fraction must be in (0, 1], got 0"),
    ("d2l_mat", "method", {"cutout": 1.0}, "method: cutout must be in [0, 1), got 1.0"),
    ("ssmll_bce", "method", {"warmup_passes": 0}, "method: warmup_passes must be at least 1, got 0"),
    ("ssmll_cap", "method", {"thresholds": "quantile"}, "method: thresholds must be mat or cap, got 'quantile'"),
    ("ssmll_bce", "method", {"threshold": 1.5}, "method: threshold must be in (0, 1), got 1.5"),
    ("d2l_mat", None, {"labelled": 1.0}, "labelled must be in (0, 1), got 1.0"),
    ("d2l_mat", None, {"dataset": "digits"}, "dataset must be digit_mosaics"),
    ("d2l_mat", "train", {"augment": False}, "train.augment: the semi-supervised loop needs weak and strong views"),
    ("d2l_mat", "train", {"warmup_epochs": 30}, "train.warmup_epochs (30) must be below train.epochs (30)"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, method, section, bad, message):
    err = refused(tmp_path, capsys, method, recipe(method, section, bad))
    assert message in err, err


def test_mat_holdout_fits_the_thresholds_on_labelled_images_it_does_not_train_on():
    # Kills a mat_holdout that is ignored (thresholds fitted on, and training on, all 36 labelled).
    config = _tiny("d2l_mat", mat_holdout=0.5)
    config["train"].update(epochs=2)
    result = _fit("d2l_mat", config)
    assert result["split"]["threshold_fit"] == 18 and result["split"]["labelled"] == 18

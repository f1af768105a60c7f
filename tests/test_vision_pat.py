"""PAT (vision.multilabel.pat) and its confounded mosaics: the spec's property tests. Each test
names, in a comment, the plausible wrong implementation it kills (tests/mutants.py, block "pat")."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from curate.cli import main as curate_main
from forked import run_forked
from vision.multilabel.confounded import ConfoundedConfig, confounding_metrics, draw_sets, render
from vision.multilabel.pat import (PATConfig, PatchHeads, asymmetric_loss, combine, multi_scores, pat_logits,
                                   pivot_pool)
from vision.multilabel.patches import patch_view
from vision.run import run_experiment
from vision.train import KILL_AFTER_EPOCH

TINY = {"mosaic": {"train_size": 240, "test_size": 60, "shift_size": 20},
        "train": {"backbone": "convnet:8", "epochs": 2, "batch_size": 40, "progress": False}}


def _tiny(**method) -> dict:
    return {**TINY, "method": method}


# -- property 1: pivot aggregation --------------------------------------------------------------

def test_pivot_pool_is_a_softmax_over_patches_per_class():
    # Kills a softmax over the class axis, mean pooling, and selection/value logits swapped.
    gen = torch.Generator().manual_seed(0)
    a, v = torch.randn(3, 4, 5, generator=gen) * 2, torch.randn(3, 4, 5, generator=gen) * 2
    cross = pivot_pool(a, v)
    perm = torch.tensor([2, 0, 3, 1])
    assert torch.allclose(pivot_pool(a[:, perm], v[:, perm]), cross, atol=1e-6)  # patch order is irrelevant
    for select in (a, v):  # a = v: between the mean and the max over patches
        pooled = pivot_pool(select)
        assert torch.all(select.mean(1) <= pooled + 1e-6) and torch.all(pooled <= select.amax(1) + 1e-6)
        assert torch.allclose(pooled, pivot_pool(select, select), atol=1e-6)
    spiked = a.clone()
    spiked[:, 1] += 20  # one patch far above the rest: the pool is about that patch's logit
    assert torch.allclose(pivot_pool(spiked), spiked[:, 1], atol=1e-3)
    other = a.clone(), v.clone()  # changing class j != k leaves class k unchanged
    other[0][..., 1:] += torch.randn(3, 4, 4, generator=gen) * 3
    other[1][..., 1:] -= 5
    assert torch.allclose(pivot_pool(*other)[..., 0], cross[..., 0], atol=1e-6)
    weights = torch.softmax(a, dim=1)  # cross: linear in v, weights softmax_j(a) that do not depend on v
    for j, k in ((0, 0), (3, 2), (1, 4)):
        bumped = v.clone()
        bumped[:, j, k] += 1.5
        assert torch.allclose(pivot_pool(a, bumped)[:, k] - cross[:, k], 1.5 * weights[:, j, k], atol=1e-5)
    assert torch.allclose(pivot_pool(a, 2 * v - 1), 2 * cross - 1, atol=1e-5)


# -- property 2: the combination happens in logit space ------------------------------------------

def test_global_and_patch_logits_are_averaged_before_the_sigmoid():
    # Kills an average of probabilities ((σ(6) + σ(-2)) / 2 = 0.558) and a sum of the logits.
    score = combine(torch.tensor([6.0]), torch.tensor([-2.0]))
    assert abs(float(score) - float(torch.sigmoid(torch.tensor(2.0)))) < 1e-6 and abs(float(score) - 0.881) < 1e-3
    assert abs(float(combine(torch.tensor([6.0]), torch.tensor([-2.0]), 0.25)) - float(torch.sigmoid(torch.tensor(4.0)))) < 1e-6


class _Constant(nn.Module):
    """A backbone whose features ignore the image: the patches' logits equal the whole image's."""

    def __init__(self, k: int = 10):
        super().__init__()
        self.feature_dim = 6
        self.bias = nn.Parameter(torch.randn(6, generator=torch.Generator().manual_seed(1)))
        self.classifier = nn.Linear(6, k)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(len(x), -1) + 0 * x.flatten(1)[:, :1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def test_pat_i_with_identical_patch_and_global_logits_is_the_baseline():
    # Kills a sum (not an average) of the two logits, an unnormalised patch pool, and any extra
    # (counterfactual) term: with the patches' logits equal to the image's, PAT-I is the baseline.
    torch.manual_seed(0)
    net = PatchHeads(_Constant(), 10)
    images = torch.rand(7, 1, 32, 32)
    for weight in (0.5, 0.3):
        probs = multi_scores(net, images, PATConfig(mode="inference", patch_weight=weight), seed=0)
        assert np.abs(probs["pat"] - probs["global"]).max() < 1e-6  # equal up to float rounding


# -- property 3: the patch builder ---------------------------------------------------------------

def test_patch_cells_tile_the_resized_image_and_shuffling_changes_no_score():
    # Kills cells read in the wrong order (rows for columns), overlapping or gapped cells, and
    # selection and value logits taken from differently shuffled patch views.
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 30, 30, generator=gen)
    for grid, size in ((2, 32), (3, 24)):
        cells = patch_view(x, grid, size)
        assert cells.shape == (3, grid * grid, 1, size, size)  # every cell reaches S x S
        resized = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        c = size // grid
        crops = [resized[:, :, r * c:(r + 1) * c, q * c:(q + 1) * c] for r in range(grid) for q in range(grid)]
        tiled = torch.cat([torch.cat(crops[r * grid:(r + 1) * grid], 3) for r in range(grid)], 2)
        assert torch.equal(tiled, resized)  # the crops tile the image: no overlap, no gap
        for j, crop in enumerate(crops):
            expected = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False)
            assert torch.allclose(cells[:, j], expected, atol=1e-6)
        shuffled = patch_view(x, grid, size, torch.Generator().manual_seed(3))
        assert not torch.equal(shuffled, cells)
        assert torch.equal(shuffled.sort(1).values, cells.sort(1).values)  # a permutation per image
    from vision.backbones import build_backbone

    net = PatchHeads(build_backbone("convnet:8", 1, 10, 32, 0), 10, "cross")
    images = torch.rand(9, 1, 32, 32, generator=gen)
    first = multi_scores(net, images, PATConfig(), seed=0)["pat"]
    assert np.allclose(multi_scores(net, images, PATConfig(), seed=5)["pat"], first, atol=1e-5)
    with torch.no_grad():
        glob, pooled = pat_logits(net, images, 2, None)
    assert np.allclose(combine(glob, pooled).numpy(), first, atol=1e-5)


class _Spy(nn.Module):
    def __init__(self):
        super().__init__()
        self.feature_dim, self.calls = 4, []
        self.body, self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16, 4), nn.BatchNorm1d(4)), nn.Linear(4, 3)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(x))
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def test_the_whole_image_and_its_patches_share_one_forward_pass_by_default():
    # Kills a joint_forward flag that is ignored: the code's concatenation (BatchNorm statistics
    # of both views mixed) is the default; separate passes give other train-mode logits.
    assert PATConfig().joint_forward is True
    net = PatchHeads(_Spy(), 3, "cross")
    x = torch.rand(5, 1, 4, 4)
    patches = patch_view(x, 2)
    joint = net.views(x, patches, joint=True)
    assert net.backbone.calls == [5 + 20]
    separate = net.views(x, patches, joint=False)
    assert net.backbone.calls[1:] == [5, 20]
    assert not torch.allclose(joint[0], separate[0])


# -- the loss --------------------------------------------------------------------------------------

def test_pat_t_trains_the_global_and_the_pivot_patch_logits():
    # Kills a PAT-T loss on the global logit alone (the selection and value heads would never learn)
    # or on the patch logit alone.
    from vision.backbones import build_backbone
    from vision.multilabel.pat import criterion, pat_t_loss

    net = PatchHeads(build_backbone("convnet:8", 1, 10, 32, 0), 10, "cross")
    x, y = torch.rand(6, 1, 32, 32, generator=torch.Generator().manual_seed(0)), torch.eye(10)[[3, 8, 1, 7, 0, 2]]
    options = PATConfig(loss="bce")
    loss = pat_t_loss(net, x, y, options, torch.Generator().manual_seed(4))
    glob, pooled = pat_logits(net, x, 2, torch.Generator().manual_seed(4))
    assert torch.allclose(loss, criterion(glob, y, options) + criterion(pooled, y, options))
    loss.backward()
    for head in (net.select, net.value, net.backbone.classifier):
        assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


def test_asl_shifts_negatives_and_its_focusing_weight_has_no_gradient():
    # Kills a focusing weight that is differentiated through (the code computes it without grad)
    # and a clip applied to the positives.
    logits = torch.tensor([[1.5, -0.5, 0.2]], requires_grad=True)
    y = torch.tensor([[1.0, 0.0, 0.0]])
    loss = asymmetric_loss(logits, y, gamma_neg=4, gamma_pos=0, clip=0.05)
    p = torch.sigmoid(logits.detach())
    p_neg = (1 - p + 0.05).clamp(max=1)
    terms = torch.stack([p[0, 0].log(), *(p_neg[0, 1:].log() * (1 - p_neg[0, 1:]) ** 4)])
    assert torch.allclose(loss, -terms.sum(), atol=1e-6)
    loss.backward()
    # d/dz of -w log(1 - p + clip) with w constant: w * p (1 - p) / (1 - p + clip)
    w = (1 - p_neg) ** 4
    expected = torch.stack([-(1 - p[0, 0]), *(w[0, 1:] * p[0, 1:] * (1 - p[0, 1:]) / p_neg[0, 1:])])
    assert torch.allclose(logits.grad[0], expected, atol=1e-6)


# -- the confounded mosaics -----------------------------------------------------------------------

def test_mosaics_have_the_configured_co_occurrence_and_clean_shift_splits():
    # Kills an "both" probability r = p (P(c | t) would be 2p / (1 + p)), splits that leave the
    # target in its context-only split, and a grid-aligned layout (no digit cut by the 2x2 grid).
    config = ConfoundedConfig()
    sets = draw_sets(config, 6000, np.random.default_rng(0))
    for t, c, p in zip(config.targets, config.contexts, config.pair_probs):
        assert abs(sets[sets[:, t] == 1, c].mean() - p) < 0.03 and abs(sets[sets[:, c] == 1, t].mean() - p) < 0.03
        context_only = draw_sets(config, 500, np.random.default_rng(1), (config.targets.index(t), "context"))
        assert context_only[:, c].all() and not context_only[:, t].any()
        target_only = draw_sets(config, 500, np.random.default_rng(1), (config.targets.index(t), "target"))
        assert target_only[:, t].all() and not target_only[:, c].any()
    assert sets.sum(1).min() >= 1
    one = np.zeros((200, 10), dtype=np.int64)
    one[:, 5] = 1
    glyph = np.ones((1, 8, 8), dtype=np.float32)
    canvas = render(one, np.repeat(glyph, 10, 0), np.arange(10), config, np.random.default_rng(2))
    assert canvas.shape == (200, 1, 32, 32) and torch.all(canvas.sum((1, 2, 3)) == 64)
    half = config.image_size // 2
    cut = (canvas[:, 0, :, half - 1] * canvas[:, 0, :, half]).sum((1,)) > 0  # ink on both sides of the cut
    assert cut.any() and not cut.all()
    scaled = ConfoundedConfig(scales=(1, 2))  # slots fit a 16 px digit; both sizes are drawn
    ink = render(one, np.repeat(glyph, 10, 0), np.arange(10), scaled, np.random.default_rng(2)).sum((1, 2, 3))
    assert scaled.image_size == 56 and set(ink.tolist()) == {64.0, 256.0}


def test_confounding_metrics_read_the_right_splits():
    # Kills an FPR read on the i.i.d. split (or on the target-only one) and a TPR on the wrong class.
    config = ConfoundedConfig(targets=(3,), contexts=(8,), pair_probs=(0.9,))
    targets = {"iid": np.eye(10, dtype=int)[[3, 8, 3, 0]], "context_only_3": np.eye(10, dtype=int)[[8, 8, 8, 8]],
               "target_only_3": np.eye(10, dtype=int)[[3, 3]]}
    targets["iid"][0, 8] = 1  # both 3 and 8
    scores = {name: np.zeros((len(t), 10)) for name, t in targets.items()}
    scores["context_only_3"][[0, 1, 2], 3] = 0.9  # 3 of 4 context-only images: a false 3
    scores["target_only_3"][0, 3] = 0.7  # 1 of 2 target-only images found
    scores["iid"][0, 3] = 0.8
    got = confounding_metrics(targets, scores, config, 0.5)["3"]
    assert got == {"context": 8, "fpr_context_only": 0.75, "tpr_target_only": 0.5, "tpr_with_context": 1.0}


# -- the run -----------------------------------------------------------------------------------------

def test_pat_i_with_zero_patch_weight_is_the_baseline_it_reports():
    # Kills a PAT-I whose model is not the baseline it reports, or whose patch weight is ignored.
    result = run_experiment("pat", _tiny(mode="inference", patch_weight=0.0, loss="bce"))
    assert result["final"] == result["global_only"]
    baseline = run_experiment("det_baseline", _tiny(loss="bce"))
    strip = lambda epochs: [{k: v for k, v in e.items() if k != "seconds"} for e in epochs]  # noqa: E731
    assert baseline["final"] == result["global_only"] and strip(baseline["epochs"]) == strip(result["epochs"])
    assert set(result["final"]) >= {"map", "cf1", "of1", "class_f1", "confounding"}
    assert set(result["final"]["confounding"]) == {"3", "1"}
    assert "FPR(3|8 only)" in result["summary"]


def test_an_int_model_reads_its_own_label_only():
    # Kills an InT (independent training) whose per-class model also learns from the other labels:
    # then it would be one more shared (dependent) model.
    from vision.multilabel.pat import DeTBaseline, BaselineConfig, PATExperimentConfig
    from vision.multilabel.pat_experiment import train_net
    from vision.run import build_config

    config = build_config(_tiny(loss="bce", independent=True), "det_baseline")
    assert isinstance(config, PATExperimentConfig)
    gen = np.random.default_rng(0)
    x, y = torch.rand(80, 1, 32, 32, generator=torch.Generator().manual_seed(0)), gen.integers(0, 2, (80, 10))
    other = y.copy()
    other[:, [0, 1, 2, 4]] = gen.integers(0, 2, (80, 4))  # every label but 3 redrawn
    method = DeTBaseline(BaselineConfig(loss="bce", independent=True))
    runs = [train_net(method, config, x[:60], labels[:60], x[60:], labels[60:], [3]) for labels in (y, other)]
    strip = lambda epochs: [{k: v for k, v in e.items() if k != "seconds"} for e in epochs]  # noqa: E731
    assert strip(runs[0][1]) == strip(runs[1][1])
    assert torch.equal(runs[0][0](x)[:, 3], runs[1][0](x)[:, 3])
    shared = train_net(DeTBaseline(BaselineConfig(loss="bce")), config, x[:60], other[:60], x[60:], other[60:])
    assert not torch.equal(shared[0](x)[:, 3], runs[1][0](x)[:, 3])


def _pat_child(folder, kill_after):
    os.environ.pop(KILL_AFTER_EPOCH, None)
    if kill_after is not None:
        os.environ[KILL_AFTER_EPOCH] = str(kill_after)
    config = _tiny(mode="train")
    config["train"] = {**config["train"], "epochs": 3, "checkpoint_dir": str(folder / "ckpt")}
    config["ema_decay"] = 0.9  # a long memory: a lost EMA shows in the last epoch's EMA val_bce
    result = run_experiment("pat", config)
    keep = {"final": result["final"], "chosen": result["chosen"],
            "epochs": [{k: v for k, v in e.items() if k != "seconds"} for e in result["epochs"]]}
    (folder / "result.json").write_text(json.dumps(keep))


def test_a_killed_pat_t_run_resumes_to_the_identical_result(tmp_path):
    # Kills a checkpoint without the EMA weights, the patch-order generator or the best-so-far
    # choice: the resumed run would end elsewhere.
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    whole.mkdir()
    resumed.mkdir()
    assert run_forked(_pat_child, whole, None) == 0
    assert run_forked(_pat_child, resumed, 2) == -9
    assert not (resumed / "result.json").exists()
    assert run_forked(_pat_child, resumed, None) == 0
    assert json.loads((whole / "result.json").read_text()) == json.loads((resumed / "result.json").read_text())


@pytest.fixture
def no_data(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("data loaded before the config was checked")
    monkeypatch.setattr("vision.data.load_images", refuse)


@pytest.mark.parametrize("method, section, bad, message", [
    ("pat", "method", {"mode": "both"}, "method: mode must be train or inference, got 'both'"),
    ("pat", "method", {"patch_weight": 1.5}, "method: patch_weight must be in [0, 1], got 1.5"),
    ("pat", "mosaic", {"pair_probs": [0.9, 1.2]}, "mosaic: pair_probs must lie in (0, 1], got (0.9, 1.2)"),
    ("det_baseline", "method", {"los": "bce"}, "unknown field 'method.los' (did you mean 'method.loss'?)"),
    ("det_baseline", None, {"ema_decay": 1.0}, "ema_decay must be in [0, 1), got 1.0"),
])
def test_bad_input_is_one_line_and_exit_2_before_any_work(tmp_path, capsys, no_data, method, section, bad, message):
    from pathlib import Path

    recipe = yaml.safe_load((Path(__file__).resolve().parents[1] / "recipes" / "vision" / f"{method}.yaml").read_text())
    if section is None:
        recipe.update(bad)
    else:
        recipe[section] = {**recipe[section], **bad}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "out" / "r.json"
    assert curate_main(["vision", method, "--config", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and message in err, err
    assert not (tmp_path / "out").exists()

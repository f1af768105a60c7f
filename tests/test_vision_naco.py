"""NACO and the video family: the spec's property tests (order sensitivity, no leak from masked
frames in SPM, a frozen detection stage, no collapse), the procedural face videos, the AUC report,
resume after SIGKILL, bad input.

Wrong implementations killed (tests/mutants.py, block "naco (video)"): no position embeddings, the
shuffle applied after pooling, the TCM positive itself reordered, the SPM mask applied after the
Transformer, the SPM target computed from the masked sequence, the SPM loss over every frame, a
mask count rounded down, masked frames in the CNN's context pass (BatchNorm batch statistics leak),
BatchNorm left in train mode while fine-tuning the head, the backbone left trainable, forgeries
that are real clips, a resume without the random states."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch.nn import functional as F

from forked import run_forked
from curate.cli import main as curate_main
from vision.registry import build_method
from vision.run import build_config, run_experiment
from vision.train import KILL_AFTER_EPOCH
from vision.video.experiment import auc_by_kind, train_stages
from vision.video.faces import KINDS, ClipsConfig, face_videos, fake_clip, real_clip
from vision.video.naco import augment_clips, info_nce, reorder, shuffled_orders, spm_loss, spm_mask, tcm_views

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "vision"
SIZE, FRAMES = 16, 8
TINY = {"image_size": SIZE, "clips": {"frames": FRAMES, "real_train": 12, "fake_train": 6, "test": 6},
        "train": {"pretrain_epochs": 1, "finetune_epochs": 1, "batch_size": 6, "progress": False, "device": "cpu"}}


def _naco(**options):
    return build_method("naco", options)


def _clips(n: int = 4, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.as_tensor(np.stack([real_clip(rng, FRAMES, SIZE) for _ in range(n)]), dtype=torch.float32)


def _far_orders(n: int, generator: torch.Generator) -> torch.Tensor:
    """Random orders that move every frame by at least 2 positions."""
    orders: list[torch.Tensor] = []
    while len(orders) < n:
        order = torch.randperm(FRAMES, generator=generator)
        if ((order - torch.arange(FRAMES)).abs() >= 2).all():
            orders.append(order)
    return torch.stack(orders)


def _pretrain(epochs: int):
    torch.manual_seed(0)
    config = build_config({**TINY, "clips": {"frames": FRAMES, "real_train": 64, "fake_train": 8, "test": 32},
                           "train": {**TINY["train"], "pretrain_epochs": epochs, "finetune_epochs": 2, "batch_size": 8,
                                     "lr": 1e-2, "head_lr": 1e-2}}, "naco")
    method = build_method("naco", config.method)
    data = face_videos(config.clips, SIZE, config.seed)
    model = method.build(0)
    stages = method.stages(config.train)
    train_stages(method, model, stages[:1], data, config, torch.device("cpu"))
    return method, model, stages, data, config


@pytest.fixture(scope="module")
def pretrained():
    """NACO pre-trained on real clips only (the SPM + TCM stage, 30 epochs), with its data."""
    return _pretrain(30)


@pytest.fixture(scope="module")
def warm():
    """The same after 2 epochs: BatchNorm statistics of real clips, for the tests that need no learned features
    (the mutation check runs them often)."""
    return _pretrain(2)


# -- 1. order sensitivity ------------------------------------------------------------------------
def test_the_representation_depends_on_frame_order_through_the_position_embeddings():
    method = _naco()
    model = method.build(0).eval().double()  # float64: "identical" is not float32 summation-order noise
    clips = _clips().double()
    rolled = clips.roll(FRAMES // 2, dims=1)  # every frame moves by T/2 >= 2 positions
    with torch.no_grad():
        assert (model.backbone(clips) - model.backbone(rolled)).abs().max() > 1e-3
        model.backbone.position.zero_()  # the test's control: without positions, order is invisible
        assert torch.allclose(model.backbone(clips), model.backbone(rolled), atol=1e-5)


def test_tcm_views_positive_in_natural_order_negative_shuffled_augmentation_clip_consistent():
    clips = _clips()
    plain = _naco(brightness=0.0, saturation=0.0, shift=0, flip=False).config
    anchor, positive, negative, orders = tcm_views(clips, plain, torch.Generator().manual_seed(0))
    assert torch.equal(anchor, clips) and torch.equal(positive, clips)  # the positive is NOT reordered
    assert torch.equal(negative, reorder(anchor, orders))
    assert not (orders == torch.arange(FRAMES)).all(1).any()
    many = shuffled_orders(500, 4, torch.Generator().manual_seed(1))
    assert not (many == torch.arange(4)).all(1).any() and len({tuple(o) for o in many.tolist()}) == 23
    # one set of parameters per clip: a static clip stays static; two draws differ
    static = clips[:, :1].expand(-1, FRAMES, -1, -1, -1).contiguous()
    config = _naco().config
    out = augment_clips(static, config, torch.Generator().manual_seed(2))
    assert torch.equal(out, out[:, :1].expand_as(out)) and not torch.equal(out, static)
    again = augment_clips(static, config, torch.Generator().manual_seed(3))
    assert not torch.equal(out, again)


def test_tcm_contrasts_the_natural_clip_with_its_own_frames_shuffled_before_encoding():
    # the loss is InfoNCE of z(anchor) against z(positive) and z(anchor reordered BEFORE the
    # encoder); a shuffle after pooling (z- = z) gives another value
    method = _naco()
    model = method.build(0).eval()
    clips = _clips(6)
    with torch.no_grad():
        loss = method.tcm(model, clips, torch.Generator().manual_seed(4))
        anchor, positive, negative, orders = tcm_views(clips, method.config, torch.Generator().manual_seed(4))
        z, zp, zn = (method.embed(model, x) for x in (anchor, positive, reorder(anchor, orders)))
        after_pooling = info_nce(z, zp, z, method.config.temperature)
    assert torch.allclose(loss, info_nce(z, zp, zn, method.config.temperature), atol=1e-5)
    assert abs(float(loss) - float(after_pooling)) > 1e-3


def test_after_pretraining_a_shuffled_clip_is_farther_than_an_augmented_one(pretrained):
    method, model, _, data, _ = pretrained
    model.eval()
    clips = data.test_clips[[i for i, k in enumerate(data.test_kinds) if k == "real"]]  # held out
    generator = torch.Generator().manual_seed(7)
    distance = lambda a, b: 1 - F.cosine_similarity(a, b, dim=1)  # noqa: E731
    with torch.no_grad():
        z = method.embed(model, clips)
        augmented = method.embed(model, augment_clips(clips, method.config, generator))
        shuffled = method.embed(model, reorder(clips, _far_orders(len(clips), generator)))
    assert float((distance(z, shuffled) > distance(z, augmented)).float().mean()) >= 0.9


# -- 2. SPM does not leak ------------------------------------------------------------------------
@pytest.mark.parametrize("ratio, count", [(0.5, 4), (0.45, 4), (0.3, 2), (0.05, 1), (0.99, 7)])
def test_the_mask_has_round_ratio_n_frames_per_clip(ratio, count):
    masked = spm_mask(64, FRAMES, ratio, torch.Generator().manual_seed(0))
    assert (masked.sum(1) == count).all()
    assert len({tuple(m) for m in masked.tolist()}) > 1  # drawn per clip


def test_spm_predictions_never_see_the_masked_frames():
    method = _naco()
    model = method.build(0).eval()
    clips = _clips().requires_grad_(True)
    masked = spm_mask(len(clips), FRAMES, 0.5, torch.Generator().manual_seed(0))
    predicted = method.spm_predictions(model, clips, masked)
    (grad,) = torch.autograd.grad(predicted[masked].sum(), clips)
    assert grad[masked].abs().max() == 0  # d f_hat_M / d x_M is exactly 0
    assert grad[~masked].abs().max() > 0  # the context does reach the prediction
    noisy = clips.detach().clone()
    noisy[masked] = torch.rand_like(noisy[masked])
    with torch.no_grad():
        again = method.spm_predictions(model, noisy, masked)
    assert torch.allclose(predicted[masked].detach(), again[masked], atol=1e-5)


def test_no_leak_through_batch_statistics_in_train_mode():
    method = _naco(dropout=0.0)
    model = method.build(0).train()  # BatchNorm on batch statistics
    clips = _clips()
    masked = spm_mask(len(clips), FRAMES, 0.5, torch.Generator().manual_seed(0))
    noisy = clips.clone()
    noisy[masked] = torch.rand_like(noisy[masked])
    with torch.no_grad():
        assert torch.allclose(method.spm_predictions(model, clips, masked),
                              method.spm_predictions(model, noisy, masked), atol=1e-5)


def test_the_spm_target_comes_from_the_true_frames_and_the_loss_from_masked_ones(warm):
    method, model, _, data, _ = warm  # BatchNorm statistics of real clips: unit-scale features
    model.eval()
    clips = data.real_train[:8]
    masked = spm_mask(len(clips), FRAMES, 0.5, torch.Generator().manual_seed(0))
    noisy = clips.clone()
    noisy[masked] = torch.rand_like(noisy[masked])
    with torch.no_grad():
        loss, loss_noisy = float(method.spm(model, clips, masked)), float(method.spm(model, noisy, masked))
    assert abs(loss - loss_noisy) > 0.1 * loss  # the target sg(CNN(x_i)) comes from the true frame
    predicted, target = torch.randn(8, FRAMES, 5), torch.randn(8, FRAMES, 5)
    moved = predicted.clone()
    moved[~masked] += 100.0  # unmasked predictions do not count
    assert torch.equal(spm_loss(moved, target, masked), spm_loss(predicted, target, masked))
    expected = ((predicted - target) ** 2).mean(-1)[masked].mean()
    assert torch.allclose(spm_loss(predicted, target, masked), expected)


# -- 3. the frozen detection stage ---------------------------------------------------------------
def test_fine_tuning_changes_only_the_head(warm):
    method, model, stages, data, config = warm
    before = {k: v.clone() for k, v in model.state_dict().items()}
    buffers = [k for k in before if "running_" in k or "num_batches" in k]
    assert buffers and any(k.startswith("backbone.") for k in buffers)
    train_stages(method, model, stages[1:], data, config, torch.device("cpu"))
    after = model.state_dict()
    for key, value in before.items():
        if key.startswith("head."):
            continue
        assert torch.equal(value, after[key]), key  # bit-identical, BatchNorm statistics included
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("head."))


# -- 4. no collapse ------------------------------------------------------------------------------
def test_pretrained_features_do_not_collapse(pretrained):
    method, model, _, data, _ = pretrained
    model.eval()
    clips = data.test_clips[[i for i, k in enumerate(data.test_kinds) if k == "real"]]
    with torch.no_grad():
        f = model.backbone.encode_frames(clips).flatten(0, 1)
        z = method.embed(model, clips)
    assert float(f.std(0).median()) > 1e-3 and float(z.std(0).median()) > 1e-3
    # nor into one direction (what matching latents without negatives does: every z parallel)
    unit = F.normalize(z, dim=1)
    cosine = unit @ unit.T
    assert float((cosine.sum() - cosine.diag().sum()) / (len(z) * (len(z) - 1))) < 0.9


# -- data, metrics, the experiment -----------------------------------------------------------------
def test_face_videos_are_seeded_and_each_forgery_breaks_consistency_its_own_way():
    config = ClipsConfig(frames=FRAMES, real_train=4, fake_train=3, test=3)
    first, again, other = face_videos(config, SIZE, 0), face_videos(config, SIZE, 0), face_videos(config, SIZE, 1)
    assert torch.equal(first.test_clips, again.test_clips) and not torch.equal(first.test_clips, other.test_clips)
    assert first.train_kinds.count("real") == 4 and set(first.test_kinds) == {"real", *KINDS}
    assert first.train_labels.tolist() == [0.0] * 4 + [1.0] * 6
    assert not set(first.train_kinds) & {"flicker", "temporal"}  # unseen kinds are test only

    def roughness(clips):  # mean absolute second difference over time: temporal inconsistency
        return float((clips[:, 2:] - 2 * clips[:, 1:-1] + clips[:, :-2]).abs().mean())

    rng = np.random.default_rng(0)
    real = torch.as_tensor(np.stack([real_clip(rng, 16, 32) for _ in range(8)]))
    fakes = {k: torch.as_tensor(np.stack([fake_clip(rng, k, 16, 32) for _ in range(8)])) for k in KINDS}
    for kind in ("swap", "flicker", "temporal"):
        assert roughness(fakes[kind]) > 1.2 * roughness(real), kind
    # reenact: the mouth no longer follows the jaw, each frame is still smooth in time
    assert (fakes["reenact"] - real).abs().mean() > 0.01


def test_auc_is_real_against_each_kind():
    kinds = ["real"] * 4 + ["a"] * 2 + ["b"] * 2
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    scores = [0.1, 0.2, 0.3, 0.4, 0.9, 0.8, 0.0, 0.25]
    auc = auc_by_kind(scores, labels, kinds, ("a",), ("b",))
    assert auc["per_kind"] == {"a": 1.0, "b": 0.25}  # b: 0.25 beats 0.1 and 0.2 of the 4 reals; 0.0 none
    assert auc["seen"] == 1.0 and auc["unseen"] == 0.25 and auc["unseen_pooled"] == 0.25


def test_the_experiment_reports_seen_and_unseen_auc_and_is_seeded():
    result = run_experiment("naco", TINY)
    final = result["final"]
    assert result["stages"] == ["pretrain", "finetune"] and set(final["auc_per_kind"]) == set(KINDS)
    assert "unseen AUC" in result["summary"] and 0 <= final["auc_unseen"] <= 1
    assert run_experiment("naco", TINY)["final"] == final
    supervised = run_experiment("supervised", TINY)
    assert supervised["stages"] == ["supervised"] and len(supervised["epochs"]) == 1


def _child(folder, kill_after):
    os.environ.pop(KILL_AFTER_EPOCH, None)
    if kill_after is not None:
        os.environ[KILL_AFTER_EPOCH] = str(kill_after)
    config = {**TINY, "train": {**TINY["train"], "pretrain_epochs": 2, "finetune_epochs": 2,
                                "checkpoint_dir": str(folder / "ckpt")}}
    result = run_experiment("naco", config)
    epochs = [{k: v for k, v in e.items() if k != "seconds"} for e in result["epochs"]]
    (folder / "result.json").write_text(json.dumps({"epochs": epochs, "final": result["final"]}))


@pytest.mark.parametrize("kill_after", [1, 3])  # inside pre-training; inside fine-tuning
def test_a_killed_run_resumes_to_the_identical_result(tmp_path, kill_after):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    whole.mkdir()
    resumed.mkdir()
    assert run_forked(_child, whole, None) == 0
    assert run_forked(_child, resumed, kill_after) == -9
    assert not (resumed / "result.json").exists()
    assert run_forked(_child, resumed, None) == 0
    assert json.loads((whole / "result.json").read_text()) == json.loads((resumed / "result.json").read_text())


@pytest.mark.parametrize("bad, message", [
    ({"method": {"mask_ratio": 1.5}}, "method: mask_ratio must be in (0, 1), got 1.5"),
    ({"method": {"tcm_loss": "mse"}}, "tcm_loss must be one of infonce, triplet, got 'mse'"),
    ({"clips": {"unseen": ["blur"]}}, "unknown forgery kind 'blur'"),
    ({"clips": {"seen": ["swap"], "unseen": ["swap"]}}, "seen and unseen share ['swap']"),
    ({"train": {"pretrain_epoch": 3}}, "unknown field 'train.pretrain_epoch' (did you mean 'train.pretrain_epochs'?)"),
    ({"dataset": "digits"}, "dataset must be 'faces'"),
])
def test_bad_input_is_one_line_before_any_work(tmp_path, capsys, monkeypatch, bad, message):
    def refuse(*args, **kwargs):
        raise AssertionError("clips generated before the config was checked")

    monkeypatch.setattr("vision.video.faces.face_videos", refuse)
    path = tmp_path / "bad.yaml"
    recipe = yaml.safe_load((RECIPES / "naco.yaml").read_text())
    for key, value in bad.items():
        recipe[key] = {**recipe[key], **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "out" / "r.json"
    assert curate_main(["vision", "naco", "--config", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out").exists()

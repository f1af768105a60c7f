"""BUAL (open-set active learning, ECCV 2024): the spec's property tests, a SIGKILL resume test of
a short run and the bad-input CLI path.

Plausible wrong implementations killed (tests/mutants.py, block ``# bual``): a complementary label
that may equal the true one (U{0..K-1} offset), unlabelled images given a fixed base class, one
complementary label per image for the whole fine-tuning, NL as cross-entropy on ybar, the log
unclamped, the snapshots summed, f_p fine-tuned in place, the negative backbone trained from
scratch, swapped BU weights, confidence/uncertainty sign flipped, no zero-range guard, predicted
unknowns kept in the pool, a generator living across rounds (resume differs), a config check
missing.

The spec's integration check (paper Fig. 1: after RLNL the unlabelled *unknown* images have a
higher mean max-probability than the unlabelled known ones) does not hold on digits here; see
NOTES-bual.md for the numbers; it is not asserted.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy import stats

from forked import run_forked
from vision.active import bual
from vision.active.base import RoundState, Strategy, top
from vision.active.baselines import MEASURES, uncertainty
from vision.active.bual import BUAL, RLNL, BUALConfig, bu_scores, complementary_labels, minmax, nl_loss
from vision.active.experiment import ActiveTrainConfig
from vision.active.pool import OpenSetConfig, open_set_pool
from vision.data import load_images
from vision.train import KILL_AFTER_EPOCH

K = 6


# -- 1. the complementary-label sampler -------------------------------------------------------------

def test_complementary_labels_avoid_the_label_and_are_uniform():
    generator = torch.Generator().manual_seed(0)
    labelled = complementary_labels(torch.full((20000,), 2), K, generator)
    assert not (labelled == 2).any()
    counts = np.bincount(labelled.numpy(), minlength=K)
    assert stats.chisquare(np.delete(counts, 2)).pvalue > 0.01  # uniform over the K-1 others
    unlabelled = complementary_labels(torch.full((20000,), -1), K, generator)
    assert stats.chisquare(np.bincount(unlabelled.numpy(), minlength=K)).pvalue > 0.01  # uniform over all K
    mixed = torch.tensor([0, -1, 5, -1])
    assert complementary_labels(mixed, K, torch.Generator().manual_seed(1)).tolist() == \
        complementary_labels(mixed, K, torch.Generator().manual_seed(1)).tolist()  # seeded


@pytest.fixture(scope="module")
def small_round() -> tuple[RoundState, object, np.ndarray]:
    """A round on a 300-image digits pool (6 known digits): its state, f_p, and which are known."""
    torch.set_num_threads(1)
    data = load_images("digits", seed=0)
    data.train_images, data.train_labels = data.train_images[:300], data.train_labels[:300]
    pool = open_set_pool(data, OpenSetConfig(known=K, initial=0.2, seed=0))
    remap = {c: i for i, c in enumerate(pool.known_classes)}
    labeled = pool.initial
    labels = np.array([remap[int(c)] for c in pool.classes[labeled]])
    unlabeled = np.setdiff1d(np.arange(300), labeled)
    train = ActiveTrainConfig(epochs=3, batch_size=32, device="cpu", progress=False, seed=4)
    state = RoundState(0, pool.images, K, labeled, labels, np.zeros(0, np.int64), unlabeled, [], train, 4)
    return state, Strategy().train(state), pool.is_known(unlabeled)


def test_a_fresh_complementary_label_every_epoch(small_round, monkeypatch):
    """What the loss uses, per image and epoch: labelled ybar != y, and between two epochs it changes
    for about (K-1)/K of the unlabelled images ((K-2)/(K-1) of the labelled ones)."""
    state, target, _ = small_round
    used: dict[int, dict[int, int]] = {}
    loss = RLNL.loss

    def recording(self, model, batch):
        for i, y in zip(batch.index.tolist(), self.complementary[batch.index].tolist()):
            used.setdefault(batch.epoch, {})[i] = y
        return loss(self, model, batch)

    monkeypatch.setattr(RLNL, "loss", recording)
    bual.negative_probabilities(target, state, BUALConfig(nl_epochs=2, snapshot_every=1, subset=200))
    n = len(state.labeled)
    rows = sorted(used[0])
    assert rows == sorted(used[1]) and len(rows) == n + 200
    first, second = (np.array([used[e][i] for i in rows]) for e in (0, 1))
    assert not (first[:n] == state.labels).any() and not (second[:n] == state.labels).any()
    assert abs((first[n:] != second[n:]).mean() - (K - 1) / K) < 0.1
    assert abs((first[:n] != second[:n]).mean() - (K - 2) / (K - 1)) < 0.2


# -- 2. the NL loss ---------------------------------------------------------------------------------

def test_nl_loss_is_minus_log_one_minus_p_and_finite_at_p_one():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]])
    ybar = torch.tensor([0, 2])
    p = torch.softmax(logits, 1)
    expected = -(torch.log(1 - p[0, 0]) + torch.log(1 - p[1, 2])) / 2
    assert torch.allclose(nl_loss(logits, ybar), expected)
    saturated = torch.tensor([[80.0, 0.0, 0.0]], requires_grad=True)  # p_ybar == 1 in float32
    value = nl_loss(saturated, torch.tensor([0]))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(saturated.grad).all()


def test_one_sgd_step_lowers_p_ybar():
    torch.manual_seed(0)
    layer = torch.nn.Linear(5, 4)
    x, ybar = torch.randn(1, 5), torch.tensor([1])
    with torch.no_grad():
        layer.bias[1] += 2.0  # ybar is the most likely class
    before = torch.softmax(layer(x), 1)
    nl_loss(layer(x), ybar).backward()
    with torch.no_grad():
        for param in layer.parameters():
            param -= 0.5 * param.grad
    after = torch.softmax(layer(x), 1)
    assert after[0, 1] < before[0, 1] - 1e-3
    assert torch.allclose(after.sum(1), torch.ones(1))


# -- RLNL: f_p kept, the backbone copied, the snapshots averaged ------------------------------------

def test_rlnl_starts_from_a_copy_of_fp_and_leaves_fp_untouched(small_round):
    state, target, _ = small_round
    before = {k: v.clone() for k, v in target.model.state_dict().items()}
    method = RLNL(target.model, K, state.images[state.unlabeled], 1, seed=0)
    fresh = type(target.model)(1, K, 8, 32)  # a new network of the same shape
    method.modules(fresh, None)
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, before[key]), key
    negative = bual.negative_probabilities(target, state, BUALConfig(nl_epochs=2, snapshot_every=1, subset=100))
    for key, value in target.model.state_dict().items():
        assert torch.equal(value, before[key]), f"f_p changed by the fine-tuning: {key}"
    assert negative.shape == (len(state.unlabeled), K)
    assert torch.allclose(negative.sum(1), torch.ones(len(negative)), atol=1e-5)  # an average, not a sum


# -- 3. the BU score --------------------------------------------------------------------------------

@pytest.mark.parametrize("score", bual.SCORES)
@pytest.mark.parametrize("measure", MEASURES)
def test_bu_reduces_to_the_plain_criterion_on_either_head(measure, score):
    rng = np.random.default_rng(3)
    positive = torch.as_tensor(rng.dirichlet(np.full(K, 0.5), 300))
    negative = torch.as_tensor(rng.dirichlet(np.full(K, 0.5), 300))
    rows = np.arange(300)

    def chosen(scores):
        assert np.isfinite(scores).all()
        return set(top(scores, rows, 30, 0).tolist())

    plain_p = chosen(uncertainty(positive, measure).numpy())
    plain_n = chosen(uncertainty(negative, measure).numpy())
    assert plain_p != plain_n
    assert chosen(bu_scores(positive, negative, np.zeros(300), 1.0, measure, score)) == plain_p
    assert chosen(bu_scores(positive, negative, np.ones(300), 1.0, measure, score)) == plain_n
    # no unknown labelled yet: the code's c~n + r*c~p (r0 = 0: the negative head alone), the paper's p_aux = 0
    assert chosen(bu_scores(positive, negative, None, 0.0, measure, score, "code")) == plain_n
    assert chosen(bu_scores(positive, negative, None, 1.0, measure, score, "paper")) == plain_p


def test_minmax_guards_a_zero_range():
    assert minmax(np.array([0.3, 0.3]), constant_keeps=True).tolist() == [0.3, 0.3]
    assert minmax(np.array([0.3, 0.3])).tolist() == [0.0, 0.0]
    assert minmax(np.array([1.0, 3.0, 2.0])).tolist() == [0.0, 1.0, 0.5]


def test_predicted_unknowns_leave_the_query_pool(small_round, monkeypatch):
    state, target, _ = small_round
    n = len(state.unlabeled)
    aux = torch.full((n, K + 1), 0.1)
    aux[: n // 2, K] = 0.9  # the first half predicted unknown
    aux[n // 2:, 0] = 0.5 + torch.linspace(0, 0.3, n - n // 2)
    monkeypatch.setattr(BUAL, "detector", lambda self, s: aux / aux.sum(1, keepdim=True))
    monkeypatch.setattr(bual, "negative_probabilities",
                        lambda t, s, c: torch.softmax(torch.randn(n, K, generator=torch.Generator().manual_seed(0)), 1))
    state = RoundState(1, state.images, K, state.labeled, state.labels, np.array([state.unlabeled[0]]),
                       state.unlabeled, [0.5], state.train, state.seed)
    strategy = BUAL(BUALConfig(nl_epochs=1, snapshot_every=1))
    chosen = strategy.query(state, target, 40)
    assert len(set(chosen.tolist())) == 40 and not set(chosen.tolist()) & set(state.unlabeled[: n // 2].tolist())
    assert strategy.round_metrics()["predicted_unknown"] == n // 2
    everything = strategy.query(state, target, n - 10)  # more than remain: filled from the removed
    assert len(set(everything.tolist())) == n - 10


# -- resumption and bad input -----------------------------------------------------------------------

CONFIG = {"dataset": "digits", "seed": 0, "openset": {"known": 6, "initial": 0.05, "budget": 20, "rounds": 2, "seed": 0},
          "train": {"backbone": "convnet:8", "epochs": 3, "batch_size": 64, "lr": 0.05, "device": "cpu",
                    "progress": False, "seed": 1},
          "method": {"nl_epochs": 2, "snapshot_every": 1, "subset": 150}}


def _run(folder: Path, kill_after: int | None) -> None:
    from vision.run import run_experiment

    torch.set_num_threads(1)
    if kill_after is not None:
        os.environ[KILL_AFTER_EPOCH] = str(kill_after)
    config = {**CONFIG, "train": {**CONFIG["train"], "checkpoint_dir": str(folder)}}
    result = run_experiment("bual", config)
    for entry in result["rounds"]:
        entry.pop("seconds")
    (folder / "result.json").write_text(json.dumps([result["rounds"], result["final"]]))


def test_bual_resumes_after_sigkill_to_the_identical_result(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    whole.mkdir(), killed.mkdir()
    assert run_forked(_run, whole, None) == 0
    assert run_forked(_run, killed, 1) == -9  # SIGKILLed after round 0's checkpoint
    assert not (killed / "result.json").exists()
    assert run_forked(_run, killed, None) == 0
    expected = json.loads((whole / "result.json").read_text())
    assert json.loads((killed / "result.json").read_text()) == expected
    assert expected[0][1]["unknown"] > 0 and "predicted_unknown" in expected[0][1]  # round 1 used the detector


@pytest.mark.parametrize("bad, field", [({"measure": "lc"}, "method.measure"),
                                         ({"nl_epochs": 4, "snapshot_every": 5}, "method.snapshot_every"),
                                         ({"r0": 1.5}, "method.r0")])
def test_bad_options_exit_2_with_one_line_before_any_work(tmp_path, capsys, monkeypatch, bad, field):
    from curate.cli import main as curate_main

    def refuse(*args, **kwargs):
        raise AssertionError("data loaded before the config was checked")

    monkeypatch.setattr("vision.data.load_images", refuse)
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "recipes" / "vision" / "bual.yaml").read_text())
    config["method"].update(bad)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "out" / "r.json"
    assert curate_main(["vision", "bual", "--config", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and field in err and str(list(bad.values())[-1]) in err, err
    assert not (tmp_path / "out").exists()

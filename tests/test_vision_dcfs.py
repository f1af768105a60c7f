"""DCFS (open-set active learning, vision/active/dcfs.py): the spec's property tests.

1. Translation invariance is broken: adding c to every logit leaves softmax unchanged but changes
   the Dirichlet's p̄ and S; vacuity and the mutual information fall (K/S = 0.40, 0.083, 0.0045).
   Kills: softmax-shaped evidence, logits normalised (max subtracted) inside α.
2. The uncertainty decomposition: closed-form U_data against a Dirichlet Monte-Carlo estimate
   (1.0055 vs 1.0062), U_dist ≥ 0, the MI falls as all evidence scales up. Kills: the "+1" dropped
   in the digammas (1.390), U_data taken as the entropy of p̄ (MI ≡ 0).
3. The discrepancy terms' signs on one small step each (alleviation does not raise D,
   amplification raises it below the hinge bound and does nothing above it); identical heads
   never separate (D ≡ 0); the query lies in the coarse set C of the lowest "unknownness", has b
   distinct indices, |C| = κ b. Kills: a flipped sign, an unbounded amplification, a second head
   copied from the first, the heads compared on different views, the fine stage over the whole
   pool, a coarse stage keeping the most uncertain images.
Plus: a short DCFS run SIGKILLed after round 1 resumes to the identical result (kills a second
head carried across rounds outside the checkpoint), and bad options are one line, exit 2.
"""
from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from forked import run_forked
from vision.active.base import RoundState, top, train_classifier
from vision.active.dcfs import DCFS, DCFSConfig, EvidentialTwoHead, combined, decompose, per_class_rank, pool_scores
from vision.backbones import build_backbone
from vision.data import ImageData
from vision.train import KILL_AFTER_EPOCH, Batch

ROOT = Path(__file__).resolve().parents[1]


# -- 1. translation invariance ---------------------------------------------------------------------
def test_adding_a_constant_to_the_logits_changes_the_dirichlet_but_not_softmax():
    o = torch.tensor([[1.0, -2.0, 0.5]])
    rows = [pool_scores(o + c, o + c, gamma=1.0) for c in (0.0, 2.0, 5.0)]
    softmax = [torch.softmax(o + c, 1) for c in (0.0, 2.0, 5.0)]
    torch.testing.assert_close(softmax[0], softmax[2])  # softmax cannot tell the three apart
    vacuity = [float(r["vacuity"]) for r in rows]  # K γ / S = K / S at γ = 1
    assert vacuity == pytest.approx([0.40, 0.083, 0.0045], abs=5e-4)
    mi = [float(r["dist"]) for r in rows]
    assert mi[0] > mi[1] > mi[2] > 0
    assert not torch.allclose(rows[0]["p"], rows[2]["p"], atol=1e-2)  # p̄ moves towards softmax as S grows
    torch.testing.assert_close(rows[2]["p"], softmax[2], atol=2e-3, rtol=0)


# -- 2. the decomposition --------------------------------------------------------------------------
def test_closed_form_data_uncertainty_matches_a_dirichlet_monte_carlo_estimate():
    alpha = torch.tensor([[2.0, 0.5, 1.3, 4.0]])
    closed = float(decompose(alpha)["data"])
    assert closed == pytest.approx(1.0055, abs=1e-3)  # dropping the "+1" in the digammas gives 1.390
    torch.manual_seed(0)
    p = torch.distributions.Dirichlet(alpha[0].double()).sample((200_000,))
    monte_carlo = float(-(p * p.clamp_min(1e-300).log()).sum(1).mean())
    assert abs(closed - monte_carlo) < 1e-2


def test_distribution_uncertainty_is_non_negative_and_falls_as_evidence_grows():
    g = torch.Generator().manual_seed(0)
    alpha = torch.rand(500, 6, generator=g) * 20 + 0.05
    assert (decompose(alpha)["dist"] >= -1e-6).all()
    evidence = torch.exp(torch.randn(4, 5, generator=g))
    mi = torch.stack([decompose(s * evidence + 1.0)["dist"] for s in (0.5, 1.0, 2.0, 4.0, 8.0)])
    assert (mi[1:] < mi[:-1]).all()  # strictly, every row


# -- 3. the discrepancy terms -----------------------------------------------------------------------
def _network(config: DCFSConfig, k: int = 3, seed: int = 0) -> tuple[EvidentialTwoHead, torch.nn.Module]:
    torch.manual_seed(seed)
    model = build_backbone("mlp:16", 1, k, 8, seed)
    net = EvidentialTwoHead(config)
    data = ImageData(torch.zeros(1, 1, 8, 8), torch.zeros(1, dtype=torch.long), torch.zeros(1, 1, 8, 8),
                     torch.zeros(1, dtype=torch.long), k)
    net.modules(model, data)
    return net, model


def _batch(n: int = 24, k: int = 3, unknown: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = torch.full((n,), k) if unknown else torch.randint(0, k, (n,), generator=g)
    return x, y


def _discrepancy(net: EvidentialTwoHead, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return pool_scores(*net.logits(model, x), net.gamma)["discrepancy"]


def _step(net, model, x, y, part: int | None, lr: float = 0.05) -> None:
    """One SGD step on one loss part (0 EDL, 1 alleviation, 2 amplification) or their sum."""
    params = [*model.parameters(), *net.head2.parameters()]
    parts = net.parts(model, x, y, epoch=5)
    loss = sum(parts) if part is None else parts[part]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    with torch.no_grad():
        for p, grad in zip(params, grads):
            if grad is not None:
                p -= lr * grad


def test_the_second_head_starts_independent_of_the_first():
    net, model = _network(DCFSConfig())
    assert _discrepancy(net, model, _batch()[0]).min() > 0


def test_one_alleviation_step_does_not_increase_the_discrepancy():
    net, model = _network(DCFSConfig(lambda_known=1.0))
    x, y = _batch()
    before = _discrepancy(net, model, x).mean()
    _step(net, model, x, y, part=1)
    assert _discrepancy(net, model, x).mean() < before


def test_one_amplification_step_increases_the_discrepancy_up_to_the_bound():
    x, y = _batch(unknown=True)
    net, model = _network(DCFSConfig(lambda_unknown=1.0, bound=2.0))
    before = _discrepancy(net, model, x).mean()
    _step(net, model, x, y, part=2)
    assert _discrepancy(net, model, x).mean() > before
    # with the bound below every row's D the hinge is flat: the step changes nothing
    net, model = _network(DCFSConfig(lambda_unknown=1.0, bound=1e-4))
    before = _discrepancy(net, model, x)
    assert before.min() > 1e-4
    _step(net, model, x, y, part=2)
    torch.testing.assert_close(_discrepancy(net, model, x), before, rtol=0, atol=0)


def test_the_edl_part_ignores_the_unknown_marker_and_the_amplification_the_known_rows():
    net, model = _network(DCFSConfig())
    x, y = _batch()
    _, _, amplify = net.parts(model, x, y, epoch=5)
    assert float(amplify.detach()) == 0.0
    xu, yu = _batch(unknown=True)
    edl, alleviate, _ = net.parts(model, xu, yu, epoch=5)
    assert float(edl.detach()) == 0.0 and float(alleviate.detach()) == 0.0


def test_identical_heads_never_separate():
    net, model = _network(DCFSConfig(lambda_unknown=1.0, lambda_known=1.0))
    with torch.no_grad():
        net.head2.load_state_dict(model.classifier.state_dict())
    (xk, yk), (xu, yu) = _batch(), _batch(unknown=True)
    x, y = torch.cat([xk, xu]), torch.cat([yk, yu])
    for _ in range(3):  # the full loss, through the training loop's entry point
        batch = Batch(torch.arange(len(y)), y, x, x + 0.1, torch.ones(len(y), dtype=torch.bool), 5)
        parts = net.loss(model, batch)
        params = [*model.parameters(), *net.head2.parameters()]
        grads = torch.autograd.grad(sum(parts), params, allow_unused=True)
        with torch.no_grad():
            for p, grad in zip(params, grads):
                if grad is not None:
                    p -= 0.05 * grad
    assert float(_discrepancy(net, model, x).abs().max()) == 0.0


# -- 3. the two-stage selection ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def round_state() -> RoundState:
    from vision.active.experiment import ActiveTrainConfig
    from vision.active.pool import OpenSetConfig, open_set_pool
    from vision.data import load_images

    pool = open_set_pool(load_images("digits", seed=0), OpenSetConfig(known=6, initial=0.05, seed=0))
    labels = pool.answers()[pool.initial]
    unlabeled = np.setdiff1d(np.arange(len(pool.classes)), pool.initial)
    config = ActiveTrainConfig(backbone="mlp:32", epochs=3, batch_size=32, device="cpu", progress=False, seed=4)
    return RoundState(0, pool.images, pool.num_known, pool.initial, labels, np.zeros(0, np.int64), unlabeled, [],
                      config, 4)


def test_the_query_is_b_distinct_images_of_the_coarse_set_of_the_lowest_unknownness(round_state):
    strategy = DCFS(DCFSConfig(kappa=3.0, coarse="dist", balance=False))
    target = strategy.train(round_state)
    budget = 20
    chosen = strategy.query(round_state, target, budget)
    assert len(chosen) == budget and len(np.unique(chosen)) == budget
    assert np.isin(chosen, round_state.unlabeled).all()
    scores = strategy.scores(target, round_state.images[round_state.unlabeled])
    unknownness = combined(scores, "dist").numpy()
    size = strategy.round_metrics()["candidates"]
    assert size == math.ceil(3.0 * budget)
    coarse = np.flatnonzero(unknownness <= np.sort(unknownness)[size - 1])  # C (and its ties at the cut)
    assert size < len(coarse) + 3 and len(coarse) < len(unknownness) / 2
    positions = np.flatnonzero(np.isin(round_state.unlabeled, chosen))
    assert set(positions.tolist()) <= set(coarse.tolist())
    d = scores["discrepancy"].numpy()
    inside = coarse[unknownness[coarse] < np.sort(unknownness)[size - 1]]  # surely in C
    rest = np.setdiff1d(inside, positions)
    assert d[positions].min() >= d[rest].max()  # the fine stage: the largest D within C
    assert strategy.round_metrics()["query_discrepancy_mean"] == pytest.approx(float(d[positions].mean()), abs=1e-4)


def test_the_balanced_coarse_set_takes_each_predicted_classs_most_likely_known_in_turn():
    # 70% of the pool predicted class 0: a plain lowest-unknownness set would be mostly class 0
    rng = np.random.default_rng(0)
    predicted = rng.choice(3, size=200, p=[0.7, 0.2, 0.1])
    key = rng.random(200) + 0.5 * (predicted != 0)  # class 0 also looks the most known
    chosen = top(-per_class_rank(key, predicted), np.arange(200), 12, seed=0)
    assert np.bincount(predicted[chosen], minlength=3).tolist() == [4, 4, 4]
    for c in range(3):  # each class's share is its lowest-key prefix
        rows = np.flatnonzero(predicted == c)
        assert set(chosen[predicted[chosen] == c]) == set(rows[np.argsort(key[rows])[:4]])
    assert np.bincount(predicted[top(-key, np.arange(200), 12, seed=0)], minlength=3)[0] == 12


def test_the_target_model_trains_on_known_images_and_queried_unknowns(round_state):
    # the unknowns join the training set under the marker label K (the amplification's rows)
    state = copy.copy(round_state)
    state.unknown = round_state.unlabeled[:5]
    state.unlabeled = round_state.unlabeled[5:]
    seen = {}

    class Spy(EvidentialTwoHead):
        def parts(self, model, images, labels, epoch):
            seen.setdefault("labels", []).append(labels.clone())
            return super().parts(model, images, labels, epoch)

    strategy = DCFS()
    strategy.network = Spy(strategy.config)
    strategy.train(state)
    labels = torch.cat(seen["labels"])
    assert int((labels == state.num_known).sum()) == 5 * state.train.epochs
    assert int((labels < state.num_known).sum()) == len(state.labeled) * state.train.epochs
    p = train_classifier(strategy.network, state, state.labeled, state.labels, state.num_known).predict(
        state.images[:7])
    torch.testing.assert_close(p.sum(1), torch.ones(7))  # the test-time output is the heads' mean p̄


# -- resume after SIGKILL ------------------------------------------------------------------------------
def _experiment(checkpoint_dir: Path, kill_after: int | None) -> None:
    from vision.run import run_experiment

    torch.set_num_threads(1)
    if kill_after is not None:
        os.environ[KILL_AFTER_EPOCH] = str(kill_after)
    config = {"dataset": "digits", "openset": {"known": 6, "initial": 0.03, "budget": 15, "rounds": 3, "seed": 1},
              "train": {"backbone": "mlp:32", "epochs": 3, "batch_size": 32, "device": "cpu", "progress": False,
                        "seed": 1, "checkpoint_dir": str(checkpoint_dir)},
              "method": {"kappa": 2.0}}
    result = run_experiment("dcfs", config)
    rounds = [{k: v for k, v in r.items() if k != "seconds"} for r in result["rounds"]]
    (checkpoint_dir / "result.json").write_text(json.dumps(rounds))


def test_a_dcfs_run_killed_after_round_one_resumes_to_the_uninterrupted_result(tmp_path):
    assert run_forked(_experiment, tmp_path / "straight", None) == 0
    assert run_forked(_experiment, tmp_path / "killed", 1) == -9
    assert not (tmp_path / "killed" / "result.json").exists()
    assert run_forked(_experiment, tmp_path / "killed", None) == 0
    straight, resumed = (json.loads((tmp_path / name / "result.json").read_text()) for name in ("straight", "killed"))
    assert len(straight) == 4 and all("candidates" in r for r in straight[:-1])
    assert resumed == straight


# -- bad input -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad, message", [
    ({"kappa": 0.5}, "method: method.kappa must be at least 1, got 0.5"),
    ({"coarse": "entropy"}, "method.coarse must be one of data+dist, dist, vacuity, total, got 'entropy'"),
    ({"bound": 3.0}, "method.bound must be in (0, 2]"),
], ids=["kappa", "coarse", "bound"])
def test_bad_options_are_one_line_exit_2_and_nothing_written(tmp_path, capsys, monkeypatch, bad, message):
    from curate.cli import main as curate_main

    def refuse(*args, **kwargs):
        raise AssertionError("data loaded before the config was checked")

    monkeypatch.setattr("vision.data.load_images", refuse)
    config = yaml.safe_load((ROOT / "recipes" / "vision" / "dcfs.yaml").read_text())
    config["method"] = {**config["method"], **bad}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "out" / "r.json"
    assert curate_main(["vision", "dcfs", "--config", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err and str(path) in err, err
    assert not (tmp_path / "out").exists()


def test_the_recipe_loads_into_the_active_family_config():
    from vision.active.experiment import ActiveExperimentConfig
    from vision.run import load_config

    config = load_config(ROOT / "recipes" / "vision" / "dcfs.yaml", "dcfs")
    assert isinstance(config, ActiveExperimentConfig) and config.openset.budget == 50
    assert DCFSConfig(**config.method) == DCFSConfig(gamma=0.3)  # the defaults but the tuned γ
    assert type(config.method["kappa"]) is float

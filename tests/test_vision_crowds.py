"""Learning from crowds: the simulator, the masked CrowdLayer loss, CCC's correction (scale,
groups, coupling, descent) and CCC's recovery on digits. Each test names the wrong implementation
it catches (see tests/mutants.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vision.crowds.annotators import MISSING, AnnotatorConfig, crowd_loss, majority_vote, simulate
from vision.crowds.ccc import CCC, CCCConfig, correction, lookahead
from vision.data import from_tensors
from vision.run import run_experiment


def test_crowd_loss_is_a_mean_over_the_observed_pairs_only():
    # Kills a loss averaged over B x R entries, or one that reads "not labelled" (-1) as class 0.
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, generator=g)
    weight = (torch.eye(3).repeat(5, 1, 1) + 0.3 * torch.randn(5, 3, 3, generator=g)).requires_grad_()
    labels = torch.full((4, 5), MISSING)
    labels[0, 0], labels[0, 1], labels[1, 3], labels[2, 0], labels[3, 4] = 2, 0, 1, 1, 0  # annotator 2: none
    loss = crowd_loss(logits, weight, labels)
    p = logits.softmax(-1)
    by_hand = [-torch.log((p[i] @ weight[r]).softmax(-1)[labels[i, r]] + 1e-5)
               for i in range(4) for r in range(5) if labels[i, r] != MISSING]
    assert torch.allclose(loss, torch.stack(by_hand).mean(), atol=1e-6)
    loss.backward()
    assert torch.count_nonzero(weight.grad[2]) == 0 and torch.count_nonzero(weight.grad[0]) > 0


def test_beta_sparse_crowd_has_a_long_tail_and_the_asked_mean():
    # Kills a uniform assignment (activity ignored): then no annotator has < 10% of the mean count.
    truth = np.random.default_rng(0).integers(0, 10, 1500)
    for regime in ("ind", "corr"):
        for seed in range(3):
            crowd = simulate(truth, 10, AnnotatorConfig(regime=regime, annotators=100, mean_labels=2.5, seed=seed))
            per_instance = (crowd.labels != MISSING).sum(1)
            assert per_instance.min() >= 1
            assert abs(per_instance.mean() - 2.5) <= 0.05 * 2.5
            counts = crowd.counts()
            assert (counts < 0.1 * counts.mean()).mean() >= 0.10
            assert 0.55 <= crowd.accuracy(truth) <= 0.75
            assert np.allclose(crowd.transitions.sum(-1), 1)
    again = simulate(truth, 10, AnnotatorConfig(seed=2))
    assert np.array_equal(again.labels, simulate(truth, 10, AnnotatorConfig(seed=2)).labels)  # seeded


def test_uniform_assignment_has_no_sparse_annotators():
    # Kills a uniform option that still weights annotators by their Beta activity (a long tail).
    truth = np.random.default_rng(0).integers(0, 10, 1500)
    crowd = simulate(truth, 10, AnnotatorConfig(annotators=100, mean_labels=2.5, assignment="uniform", seed=0))
    counts = crowd.counts()
    assert abs((crowd.labels != MISSING).sum(1).mean() - 2.5) <= 0.05 * 2.5
    assert counts.min() >= 0.3 * counts.mean() and counts.max() <= 2 * counts.mean()  # Poisson-like, mean 37.5


def test_majority_vote_counts_and_breaks_ties_by_seed():
    labels = np.array([[1, 1, 2], [0, MISSING, MISSING], [MISSING] * 3, [3, 4, MISSING]])
    vote = majority_vote(labels, 5, seed=0)
    assert list(vote[:3]) == [1, 0, MISSING] and vote[3] in (3, 4)
    assert {int(majority_vote(labels, 5, seed=s)[3]) for s in range(20)} == {3, 4}


def _toy_ccc(groups: list[int]) -> tuple[CCC, torch.Tensor, torch.Tensor]:
    """A CCC on a 2-layer MLP (K=3, R=6), past warm-up, with fixed groups and meta sets."""
    g = torch.Generator().manual_seed(1)
    data = from_tensors(torch.rand(24, 1, 2, 2, generator=g), torch.randint(0, 3, (24,), generator=g), num_classes=3)
    torch.manual_seed(0)
    from vision.backbones import build_backbone

    model = build_backbone("mlp", 1, 3, 2)
    method = CCC(CCCConfig(groups=3, meta_batch=8))
    method.num_annotators = 6
    method.modules(model, data)
    with torch.no_grad():
        for c in method.confusions:
            c.weight.add_(0.2 * torch.randn(c.weight.shape, generator=g))
    method.groups = [torch.tensor(groups), torch.tensor(groups)]
    labels = torch.randint(0, 3, (24, 6), generator=g)
    labels[torch.rand(24, 6, generator=g) < 0.5] = MISSING
    method.meta = [(data.train_images[:8], data.train_labels[:8], torch.arange(8)),
                   (data.train_images[8:16], data.train_labels[8:16], torch.arange(8, 16))]
    return method, model, labels


def _fixes(method: CCC, model, x, labels) -> list[torch.Tensor]:
    method.generator.manual_seed(0)
    return method.corrections(model, x, labels, lr=0.5)


def test_correction_scale_groups_and_coupling():
    # Kills per-annotator (ungrouped) corrections, self-coupling (a model's own distilled set),
    # and a scale taken from W instead of the pseudo-updated W'.
    method, model, labels = _toy_ccc([0, 0, 1, 1, 2, 2])
    x = torch.rand(24, 1, 2, 2, generator=torch.Generator().manual_seed(3))
    first, second = _fixes(method, model, x, labels)
    weight = method.confusions[0].weight
    grad_w = torch.autograd.grad(crowd_loss(model(x), weight, labels), weight)[0]
    pseudo = weight.detach() - 0.5 * grad_w
    assert torch.isclose(first.abs().max(), 0.5 * pseudo.max(), atol=1e-6)  # (a)
    for a, b in ((0, 1), (2, 3), (4, 5)):  # (b) one group, one correction
        assert torch.equal(first[a], first[b])
    assert not torch.equal(first[0], first[2])
    own = method.meta[0]
    method.meta[0] = (own[0].flip(0) * 0.5, (own[1] + 1) % 3, own[2])  # (c) model 1's own set changes
    assert torch.allclose(_fixes(method, model, x, labels)[0], first)
    peer = method.meta[1]
    method.meta[1] = (peer[0] * 0.5, (peer[1] + 1) % 3, peer[2])  # the peer's set changes
    assert not torch.allclose(_fixes(method, model, x, labels)[0], first)


def test_correction_decreases_the_meta_loss():
    # Kills a sign error: a step along eps* must lower the look-ahead meta loss (finite difference).
    method, model, labels = _toy_ccc([0, 1, 2, 0, 1, 2])
    x = torch.rand(24, 1, 2, 2, generator=torch.Generator().manual_seed(4))
    meta_x, meta_y = method.meta[1][:2]
    weight = method.confusions[0].weight
    objective = lookahead(model, weight, x, labels, method.groups[0], meta_x, meta_y, 0.5, 2)
    eps = correction(objective, 3, weight, 0.5)
    zero = objective(torch.zeros_like(eps))[0].item()
    for t in (1e-3, 1e-2):
        assert objective(t * eps / eps.norm())[0].item() < zero


def test_ccc_recovers_on_digits_with_a_correlated_crowd():
    # Kills a distilled set that keeps the largest losses (its labels would be mostly wrong) and a
    # correction that hurts the CrowdLayer warm-up. The confusion error is reported, not gated.
    distilled, ccc, warm, l1 = [], [], [], []
    for seed in range(3):
        config = {"dataset": "digits", "seed": seed,
                  "annotators": {"regime": "corr", "annotators": 100, "mean_labels": 2.5, "seed": seed},
                  "train": {"backbone": "mlp", "epochs": 8, "warmup_epochs": 5, "batch_size": 32, "lr": 0.1,
                            "augment": False, "seed": seed, "progress": False, "device": "cpu"},
                  "method": {"meta_size": 200}}
        result = run_experiment("ccc", config)
        assert 0.55 <= result["annotators"]["annotation_accuracy"] <= 0.75
        distilled += result["crowd_metrics"]["distilled_label_accuracy"]
        ccc.append(result["final"]["test_accuracy"])
        warm.append(result["epochs"][4]["test_accuracy"])  # the ensemble of the two CrowdLayers
        l1.append(result["crowd_metrics"].get("confusion_row_l1_busy", float("nan")))
    print(f"row-L1(T̂, T) on annotators with >= 100 labels: {np.nanmean(l1):.3f}")
    assert min(distilled) >= 0.95
    assert np.mean(ccc) >= np.mean(warm)


@pytest.mark.parametrize("field, value, message", [
    ("regime", "mixed", "regime must be one of ind, corr, idn, got 'mixed'"),
    ("mean_labels", 0.5, "mean_labels must be in [1, annotators], got 0.5"),
    ("alpha", 0, "alpha and beta must be positive"),
    ("assignment", "zipf", "assignment must be one of beta, uniform, got 'zipf'"),
])
def test_bad_annotator_settings_are_refused(field, value, message):
    from curate.core.errors import BadInputError

    with pytest.raises(BadInputError, match=message.replace("[", r"\[").replace("(", r"\(")):
        AnnotatorConfig(**{field: value})


def test_instance_dependent_crowd_follows_the_features():
    # Kills an idn regime whose wrong-label distribution ignores the instance (one per class), and
    # one that skips the normalisation (raw features: the softmax is one-hot, every error the same class).
    from sklearn.datasets import load_digits

    from curate.core.errors import BadInputError
    from vision.crowds.annotators import _instance_noise

    digits = load_digits()
    x, y = digits.data[:600] * 16.0, digits.target[:600]  # raw 0-255-like pixels, as in the code
    rng = np.random.default_rng(0)
    p = _instance_noise(y, 10, x, 0.4, rng)
    assert np.allclose(p.sum(1), 1) and np.all(p[np.arange(600), y] >= 0.4 - 1e-9)
    wrong = p.copy()
    wrong[np.arange(600), y] = 0
    wrong /= wrong.sum(1, keepdims=True)
    zeros = wrong[y == 0]
    assert zeros.std(0).max() > 0.05  # instances of one class err differently
    assert np.median(wrong.max(1)) < 0.9  # not one-hot: the features are normalised
    crowd = simulate(y, 10, AnnotatorConfig(regime="idn", annotators=30, groups=3, seed=0), features=x)
    assert (crowd.labels != MISSING).sum(1).min() >= 1 and 0.55 <= crowd.accuracy(y) <= 0.7
    with pytest.raises(BadInputError, match="needs one feature row per instance"):
        simulate(y, 10, AnnotatorConfig(regime="idn"))


def test_finetune_trains_each_model_on_its_peers_distilled_set(monkeypatch):
    # Kills a fine-tune on the model's OWN distilled set (no coupling), one that never runs or does
    # not reach the reported final accuracy, and a default that is not off (the code's epoch_ft -1).
    import vision.crowds.ccc as ccc_module

    calls = []
    original = ccc_module.finetune

    def spy(net, x, y, epochs, lr, batch_size, generator):
        calls.append((net, x.clone()))
        before = [p.detach().clone() for p in net.parameters()]
        original(net, x, y, epochs, lr, batch_size, generator)
        assert any(not torch.equal(a, p) for a, p in zip(before, net.parameters()))  # it trained

    monkeypatch.setattr(ccc_module, "finetune", spy)
    config = {"dataset": "digits", "seed": 0,
              "annotators": {"regime": "corr", "annotators": 50, "mean_labels": 2.5, "seed": 0},
              "train": {"backbone": "mlp", "epochs": 3, "warmup_epochs": 2, "batch_size": 32, "lr": 0.1,
                        "augment": False, "seed": 0, "progress": False, "device": "cpu"},
              "method": {"meta_size": 200}}
    assert "finetune" not in run_experiment("ccc", config) and not calls  # off by default
    captured = {}
    original_select = ccc_module.CCC.select

    def select(self, model, images, labels, epoch):
        original_select(self, model, images, labels, epoch)
        captured["meta"] = [x.clone() for x, _, _ in self.meta]
        captured["method"] = self

    monkeypatch.setattr(ccc_module.CCC, "select", select)
    result = run_experiment("ccc", {**config, "method": {"meta_size": 200, "finetune_epochs": 2, "finetune_lr": 0.01}})
    method = captured["method"]
    assert [net for net, _ in calls] == [method.model, method.peer]
    assert torch.equal(calls[0][1], captured["meta"][1]) and torch.equal(calls[1][1], captured["meta"][0])
    assert not torch.equal(captured["meta"][0], captured["meta"][1])  # two different sets: coupling shows
    assert result["final"]["test_accuracy"] == result["finetune"]["test_accuracy"]
    assert result["finetune"]["epochs"] == 2

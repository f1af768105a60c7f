"""DPC's two-network stage (the DPC module docstring): co-divide (each network trains on the other's
selection), per-class balanced selection, MixMatch (co-guessed and refined labels, λ' mixup), the
uniform-prior penalty, the two-network ensemble at test, and a short end-to-end run on digits."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vision.data import load_images
from vision.noise import NoiseConfig, inject
from vision.noisy.dpc import (DPC, DPCConfig, balance_per_class, co_guess, mix_lambda, mixup, prior_penalty, refine,
                              select_by_margin, sharpen)
from vision.train import Batch, TrainConfig, fit, predict


@pytest.fixture(scope="module")
def small():
    data = load_images("digits", seed=0)
    data.train_images, data.train_labels = data.train_images[:300], data.train_labels[:300]
    data.test_images, data.test_labels = data.test_images[:60], data.test_labels[:60]
    return data


def _method(data, **options) -> tuple[DPC, torch.nn.Module]:
    from vision.backbones import build_backbone

    model = build_backbone("convnet", data.channels, data.num_classes, data.image_size, 0)
    method = DPC(DPCConfig(**options))
    method.modules(model, data)
    return method, model


def _batch(data, rows: torch.Tensor, epoch: int = 6) -> Batch:
    x = data.train_images[rows]
    return Batch(rows, data.train_labels[rows], x, x.flip(-1), torch.ones(len(rows), dtype=torch.bool), epoch)


# Wrong implementation killed: self-selection (each network trains on its own GMM split).
def test_each_network_trains_on_the_other_networks_selection(small, monkeypatch):
    method, model = _method(small)
    n = len(small.train_labels)
    own = [torch.arange(n) % 2 == 0, torch.arange(n) % 3 == 0]  # model's and net2's selections
    method.masks, method.clean = own, [torch.full((n,), 0.9), torch.full((n,), 0.8)]
    seen = []
    monkeypatch.setattr(method, "_mixmatch", lambda net, head, batch, chosen, clean, *_: seen.append(
        (net, chosen.clone(), clean.clone())) or torch.zeros(()))
    rows = torch.arange(40)
    method.loss(model, _batch(small, rows))
    (net_a, chosen_a, clean_a), (net_b, chosen_b, clean_b) = seen
    assert net_a is model and net_b is method.net2
    assert torch.equal(chosen_a, own[1][rows]) and torch.allclose(clean_a, torch.full((40,), 0.8))
    assert torch.equal(chosen_b, own[0][rows]) and torch.allclose(clean_b, torch.full((40,), 0.9))


# Wrong implementation killed: plain (unbalanced) GMM selection, which leaves class 3 empty here.
def test_balanced_selection_leaves_no_class_empty_where_plain_gmm_does():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 100)
    margins = rng.normal(1.0, 0.1, 1000)
    margins[labels == 3] = rng.normal(0.0, 0.1, 100)  # a class the network has not learnt yet
    margins[rng.random(1000) < 0.3] -= 1.0  # flipped labels everywhere
    plain = select_by_margin(margins)
    assert (np.bincount(labels[plain], minlength=10) == 0).any()
    balanced = balance_per_class(plain, margins, labels, 10, 0.5)
    counts = np.bincount(labels[balanced], minlength=10)
    assert counts.min() >= math.ceil(0.5 * plain.sum() / 10) and (balanced >= plain).all()
    chosen3 = np.flatnonzero(balanced & (labels == 3))  # class 3's largest margins
    rest3 = np.flatnonzero(~balanced & (labels == 3))
    assert margins[chosen3].min() >= margins[rest3].max()


# Wrong implementations killed: λ not folded to max(λ, 1 - λ); targets mixed with 1 - λ'.
def test_mixup_lambda_is_at_least_half_and_mixes_inputs_and_targets_alike():
    lams = [mix_lambda(u, 4.0) for u in np.linspace(0.001, 0.999, 999)]
    assert min(lams) >= 0.5 and max(lams) > 0.8
    # E[max(λ, 1 - λ)] for Beta(4, 4) = 1/2 + E|λ - 1/2| ≈ 0.6367 (numerically: 0.63672).
    assert abs(np.mean(lams) - 0.6367) < 0.005
    x, t = torch.randn(6, 3), torch.softmax(torch.randn(6, 4), 1)
    perm = torch.tensor([3, 0, 5, 1, 2, 4])
    mixed_x, mixed_t = mixup(x, t, 0.7, perm)
    torch.testing.assert_close(mixed_x, 0.7 * x + 0.3 * x[perm])
    torch.testing.assert_close(mixed_t, 0.7 * t + 0.3 * t[perm])


# Wrong implementation killed: labels guessed by one network (the one being trained) only.
def test_guessed_labels_are_the_sharpened_mean_of_both_networks_over_both_views(small, monkeypatch):
    method, model = _method(small, temperature=0.5)
    n = len(small.train_labels)
    method.masks, method.clean = [torch.zeros(n, dtype=torch.bool)] * 2, [torch.zeros(n)] * 2
    with torch.no_grad():  # make the networks disagree
        method.net2.classifier.bias += torch.arange(10.0)
    guesses = []
    monkeypatch.setattr(method, "_mixmatch", lambda *args: guesses.append(args[-1]) or torch.zeros(()))
    batch = _batch(small, torch.arange(32))
    method.loss(model, batch)
    from vision.noisy.dpc import calibrated_softmax

    with torch.no_grad():
        views = [calibrated_softmax(net(v), method.constant) for net in (model, method.net2)
                 for v in (batch.weak, batch.strong)]
    expected = sharpen((views[0] + views[1] + views[2] + views[3]) / 4, 0.5)
    torch.testing.assert_close(guesses[0], expected)
    torch.testing.assert_close(guesses[0], co_guess(views, 0.5))
    assert not torch.allclose(expected, sharpen((views[0] + views[1]) / 2, 0.5), atol=1e-3)


# Wrong implementation killed: refinement weighting the prediction by w instead of the label.
def test_refined_labels_weight_the_given_label_by_the_clean_posterior():
    onehot, own = torch.eye(3)[[0, 1]], torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.2, 0.2]])
    torch.testing.assert_close(refine(onehot, torch.ones(2), own, 0.5), onehot)
    torch.testing.assert_close(refine(onehot, torch.zeros(2), own, 0.5), sharpen(own, 0.5))
    half = refine(onehot, torch.full((2,), 0.5), own, 0.5)
    torch.testing.assert_close(half, sharpen(0.5 * onehot + 0.5 * own, 0.5))


# Wrong implementation killed: a penalty that is not zero at a uniform mean prediction (e.g. an entropy
# of each row) or not positive away from it.
def test_prior_penalty_is_zero_at_a_uniform_mean_and_positive_otherwise():
    assert abs(float(prior_penalty(torch.eye(4)[[0, 1, 2, 3]] * 0.96 + 0.01))) < 1e-6
    assert abs(float(prior_penalty(torch.full((5, 4), 0.25)))) < 1e-6
    skewed = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.6, 0.2, 0.1, 0.1]])
    assert float(prior_penalty(skewed)) > 0.05


# Wrong implementation killed: testing with the first network alone.
def test_the_ensemble_predicts_from_both_networks(small):
    method, model = _method(small)
    images = small.test_images
    torch.testing.assert_close(method.predict(model, images), predict(model, images) + predict(method.net2, images))
    assert not torch.allclose(predict(model, images), predict(method.net2, images))  # two initialisations
    assert {"net2", "head1", "head2"} <= set(method.modules(model, small))  # checkpointed with the model


def test_a_short_run_leaves_no_class_without_selected_samples(small):
    noisy = inject(small.train_labels.numpy(), 10, NoiseConfig("asymmetric", 0.4, seed=0))
    method = DPC(DPCConfig(lambda_u=25.0, rampup_start=1, rampup_epochs=1))  # the unlabelled head runs too
    result = fit(method, small, noisy.labels, TrainConfig(epochs=3, warmup_epochs=1, device="cpu", progress=False),
                 clean=noisy.is_clean)
    assert all(np.isfinite(e["loss"]) for e in result["epochs"])
    for mask in method.masks:  # both networks' selections at the last epoch
        assert np.bincount(noisy.labels[mask.numpy()], minlength=10).min() > 0
    assert result["final"]["selection"]["selected"] < len(noisy.labels)  # a split, not everything


def test_the_recipe_keeps_every_class_alive_through_warmup():
    # Kills the recipe's former lr 0.02: the exponential evidence lets one SGD step push a class's
    # logits so low that exp(z) << K and its gradient (about exp(z) / K) vanishes for good; at seed 0
    # under symmetric noise both networks then predict one class for under 3% of the training set.
    from pathlib import Path

    import yaml

    from vision.run import build_config

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "recipes" / "vision" / "dpc.yaml").read_text())
    config = build_config(raw, "dpc")
    data = load_images("digits", seed=0)
    noisy = inject(data.train_labels.numpy(), 10, NoiseConfig("symmetric", 0.4, seed=0))
    train = TrainConfig(**{**config.train.__dict__, "epochs": 10, "warmup_epochs": 10, "device": "cpu",
                           "progress": False})
    model_box = {}
    method = DPC(DPCConfig(**config.method))
    original = method.modules
    method.modules = lambda model, d: (model_box.setdefault("model", model), original(model, d))[1]
    fit(method, data, noisy.labels, train)
    for net in (model_box["model"], method.net2):
        share = np.bincount(predict(net, data.train_images).argmax(1).numpy(), minlength=10) / len(noisy.labels)
        assert share.min() >= 0.03, share.round(3)

"""Properties the papers define: DPC's calibrated softmax is not translation invariant (softmax is),
its evidential loss pushes the labelled logit up and the others down, and its large-margin
selection separates clean from flipped labels; Sel-CL's kNN selection keeps far more clean
examples than the noise base rate, its pairs are mostly true pairs, and its loss is SupCon."""
from __future__ import annotations

import numpy as np
import torch

from vision.noisy.dpc import calibrated_softmax, edl_loss, logit_margins, select_by_margin
from vision.noisy.selcl import (confident_pairs, knn_votes, pair_threshold, select_examples,
                                  supervised_contrastive)
from vision.noise import NoiseConfig, inject


def test_calibrated_softmax_breaks_translation_invariance():
    z = torch.tensor([[2.0, -1.0, 0.5, 0.0]])
    shifted = z + 3.0
    assert torch.allclose(torch.softmax(z, 1), torch.softmax(shifted, 1))
    p, q = calibrated_softmax(z, 10 / 4), calibrated_softmax(shifted, 10 / 4)
    assert torch.allclose(p.sum(1), torch.ones(1)) and not torch.allclose(p, q, atol=1e-3)
    assert q[0, 0] > p[0, 0]  # larger evidence: a more confident prediction


def test_evidential_loss_pushes_the_labelled_logit_up_and_the_others_down():
    z = torch.zeros(1, 5, requires_grad=True)
    edl_loss(z, torch.tensor([2]), constant=2.0).sum().backward()
    assert z.grad[0, 2] < 0 and torch.all(z.grad[0, [0, 1, 3, 4]] > 0)
    good = torch.tensor([[-4.0, -4.0, 6.0, -4.0, -4.0]])
    bad = torch.tensor([[6.0, -4.0, -4.0, -4.0, -4.0]])
    assert edl_loss(good, torch.tensor([2]), 2.0) < edl_loss(torch.zeros(1, 5), torch.tensor([2]), 2.0) \
        < edl_loss(bad, torch.tensor([2]), 2.0)


def test_large_margin_selection_separates_clean_from_flipped():
    rng = np.random.default_rng(0)
    true = torch.as_tensor(rng.integers(0, 10, 2000))
    noisy = inject(true.numpy(), 10, NoiseConfig("symmetric", 0.4, seed=1))
    # A network that learnt the clean signal: the true class's logit stands out, with noise.
    logits = torch.as_tensor(rng.normal(0, 1, (2000, 10)), dtype=torch.float32)
    logits[torch.arange(2000), true] += 4.0
    margins = logit_margins(logits, torch.as_tensor(noisy.labels))
    chosen = select_by_margin(margins)
    precision = noisy.is_clean[chosen].mean()
    recall = chosen[noisy.is_clean].mean()
    assert precision > 0.95 and recall > 0.9, (precision, recall)


def _blobs(n_per_class=60, classes=10, dim=32, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (classes, dim))
    y = np.repeat(np.arange(classes), n_per_class)
    x = centres[y] + rng.normal(0, 0.35, (len(y), dim))
    return torch.as_tensor(x, dtype=torch.float32), y


def test_selcl_selects_clean_examples_well_above_the_base_rate():
    x, y = _blobs()
    for kind in ("symmetric", "asymmetric"):
        noisy = inject(y, 10, NoiseConfig(kind, 0.4, seed=2))
        labels = torch.as_tensor(noisy.labels)
        chosen = select_examples(x, labels, 10, k=20).numpy()
        base = noisy.is_clean.mean()
        precision = noisy.is_clean[chosen].mean()
        assert base < 0.65 and precision > 0.9 and chosen.sum() > 0.3 * len(y), (kind, precision, chosen.sum())
        # Confident pairs: same given label, and (both confident or similar enough): mostly true pairs.
        threshold = pair_threshold(x, labels, torch.as_tensor(chosen))
        pairs = confident_pairs(x, labels, torch.as_tensor(chosen), threshold)
        pairs.fill_diagonal_(False)
        same_true = torch.as_tensor(y[:, None] == y[None, :])
        assert float(same_true[pairs].float().mean()) > 0.9


def test_knn_votes_are_shares_of_the_neighbours_labels():
    x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    votes = knn_votes(x, torch.tensor([0, 0, 1, 1]), 2, k=1)
    assert torch.equal(votes, torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]))


def test_supervised_contrastive_matches_its_definition():
    torch.manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(6, 4), dim=1)
    positives = torch.zeros(6, 6, dtype=torch.bool)
    positives[0, 3] = positives[3, 0] = positives[0, 1] = positives[1, 0] = True
    positives[2, 5] = positives[5, 2] = positives[4, 1] = positives[1, 4] = True
    expected = 0.0
    for a in range(6):
        others = [k for k in range(6) if k != a]
        denominator = torch.logsumexp(torch.stack([z[a] @ z[k] / 0.1 for k in others]), 0)
        pos = [p for p in range(6) if positives[a, p]]
        expected += -sum((z[a] @ z[p] / 0.1 - denominator) for p in pos) / len(pos)
    torch.testing.assert_close(supervised_contrastive(z, positives, 0.1), expected / 6)

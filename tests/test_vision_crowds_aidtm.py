"""AIDTM: the corrected likelihood's algebra, recovery of a shared transition matrix by the global
stage, the annotator graph, and a short run on digits. Each test names the wrong implementation it
catches (see tests/mutants.py)."""
from __future__ import annotations

import numpy as np
import torch

from vision.crowds.aidtm import (AIDTMConfig, TransitionNet, annotator_graph, corrected_nll, fit_global, normalise,
                                 pairs, transitions)
from vision.crowds.annotators import MISSING


def test_transitions_are_row_stochastic_and_the_likelihood_reads_the_true_class_row():
    # Kills a column softmax (rows would not sum to 1) and a transposed einsum (with p = e_y the
    # likelihood would read T[:, y] instead of T[y, :]).
    g = torch.Generator().manual_seed(0)
    h, weight, bias = torch.randn(6, 4, generator=g), torch.randn(6, 9, 4, generator=g), torch.randn(6, 9, generator=g)
    t = transitions(h, weight, bias)
    assert torch.allclose(t.sum(-1), torch.ones(6, 3), atol=1e-6)
    assert not torch.allclose(t.sum(-2), torch.ones(6, 3), atol=1e-3)
    y, noisy = torch.tensor([0, 1, 2, 2, 1, 0]), torch.tensor([1, 1, 0, 2, 0, 2])
    onehot = torch.nn.functional.one_hot(y, 3).float()
    expected = -torch.log(t[torch.arange(6), y, noisy]).mean()
    assert torch.allclose(corrected_nll(onehot, t, noisy), expected, atol=1e-6)


def test_identity_transitions_give_the_masked_cross_entropy():
    # Kills a loss that averages over unobserved (i, r) entries (reading -1 as class 0).
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 4, generator=g)
    labels = torch.full((5, 3), MISSING)
    labels[0, 1], labels[1, 0], labels[1, 2], labels[3, 1], labels[4, 0] = 3, 1, 2, 0, 3  # row 2: none
    rows, who, noisy = pairs(labels)
    identity = torch.eye(4).expand(len(rows), 4, 4)
    by_hand = [-logits.log_softmax(1)[i, labels[i, r]] for i in range(5) for r in range(3) if labels[i, r] != MISSING]
    assert torch.allclose(corrected_nll(logits.softmax(1)[rows], identity, noisy), torch.stack(by_hand).mean(), atol=1e-6)


def test_hold_out_partitions_the_observed_pairs_and_is_scored_per_annotator():
    # Kills a hold-out that leaks held pairs into training or draws unobserved entries, and a
    # per-annotator score averaged over the wrong annotator's pairs.
    import pytest

    from curate.core.errors import BadInputError
    from vision.crowds.aidtm import heldout_nll, hold_out

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(-1, 3, (40, 4), generator=g)
    labels[:, 3] = MISSING  # annotator 3 labels nothing
    kept, held = hold_out(labels, 0.25, torch.Generator().manual_seed(1))
    seen = labels != MISSING
    assert not ((kept != MISSING) & (held != MISSING)).any()
    assert torch.equal(torch.where(held != MISSING, held, kept), labels)
    assert (held != MISSING).sum() == round(0.25 * int(seen.sum()))
    h, weight, bias = torch.randn(40, 2, generator=g), torch.randn(4, 9, 2, generator=g), torch.randn(4, 9, generator=g)
    probs = torch.randn(40, 3, generator=g).softmax(1)
    scores = heldout_nll(probs, h, (weight, bias), held)
    t = transitions(h, weight[0].expand(40, -1, -1), bias[0].expand(40, -1))
    mine = (held[:, 0] != MISSING).nonzero(as_tuple=True)[0]
    by_hand = -torch.log((probs[mine, :, None] * t[mine]).sum(1)[torch.arange(len(mine)), held[mine, 0]]).mean()
    assert np.isclose(scores[0], float(by_hand), atol=1e-5) and np.isnan(scores[3])
    with pytest.raises(BadInputError, match=r"holdout must be in \[0, 1\), got 1"):
        AIDTMConfig(holdout=1)


def test_residual_gcn_heads_start_at_the_global_head():
    # Kills a gcn_residual option that is parsed but not applied (the heads would start near 0).
    torch.manual_seed(0)
    net = TransitionNet(8, 3, 5, AIDTMConfig(width=8, feature_dim=4, hidden=2, gcn_residual=True))
    with torch.no_grad():
        net.theta2.zero_()
    u, b = net.gcn_heads()
    assert torch.equal(u, net.head.weight.expand(5, -1, -1)) and torch.equal(b, net.head.bias.expand(5, -1))


def test_the_global_stage_recovers_a_shared_transition_matrix():
    # Kills swapped roles (fitting T[y~, y^] instead of T[y^, y~]): T is asymmetric, so the
    # recovered matrix would be off by far more than 0.05 per row.
    from sklearn.datasets import make_blobs

    rng = np.random.default_rng(0)
    k, n, r = 5, 4000, 5
    x, y = make_blobs(n, 8, centers=k, cluster_std=1.0, random_state=0)
    true = np.zeros((k, k))
    for i in range(k):
        true[i, i] = rng.uniform(0.6, 0.8)
        true[i, (i + 1) % k] = 1 - true[i, i]  # pair flip: asymmetric
    noisy = np.stack([[rng.choice(k, p=true[c]) for c in y] for _ in range(r)], 1)
    torch.manual_seed(0)
    net = TransitionNet(8, k, r, AIDTMConfig(width=32, feature_dim=16, hidden=4))
    xt = torch.as_tensor((x - x.mean(0)) / x.std(0), dtype=torch.float32)  # standardised features
    fit_global(net, xt, torch.as_tensor(y), torch.as_tensor(noisy), epochs=30, lr=0.1, batch=2048,
               generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        t = transitions(net.body(xt), *net.global_heads(n)).numpy()
    # row i is fitted on the instances of class i only, so average T(x)[i, :] over those
    estimate = np.stack([t[y == i, i].mean(0) for i in range(k)])
    assert np.abs(estimate - true).sum(1).max() <= 0.05, np.abs(estimate - true).sum(1)


def test_annotator_graph_links_annotators_that_moved_alike():
    # Kills a graph without the self loops or the S x S block of skipped annotators.
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(3, 20))
    types = np.repeat(np.arange(3), 10)
    deltas = directions[types] + 0.1 * rng.normal(size=(30, 20))
    skipped = np.zeros(30, bool)
    skipped[[0, 15]] = True
    graph = annotator_graph(deltas, k=5, rank=3, skipped=skipped)
    assert np.all(np.diag(graph) == 1) and graph[0, 15] == 1 and graph.min() >= 0 and graph.max() <= 1
    off = graph.copy()
    np.fill_diagonal(off, 0)
    off[0, 15] = off[15, 0] = 0
    same = types[:, None] == types[None, :]
    assert off[same].sum() / off.sum() >= 0.8  # edges mostly within a type (chance: 0.31)
    a_hat = normalise(graph)
    assert np.allclose(a_hat, a_hat.T) == np.allclose(graph, graph.T)


def test_aidtm_runs_on_digits_and_distils_clean_labels():
    # Kills a calibration stage that never runs (the corrected loss would not be used) and a
    # distillation that keeps unconfident samples.
    from vision.run import run_experiment

    config = {"dataset": "digits", "annotators": {"regime": "corr", "annotators": 40, "mean_labels": 2.5},
              "train": {"backbone": "mlp", "epochs": 5, "warmup_epochs": 3, "batch_size": 32, "lr": 0.1,
                        "augment": False, "progress": False, "device": "cpu"},
              "method": {"tm_epochs": 2, "individual_epochs": 1, "gcn_epochs": 2, "neighbours": 10}}
    result = run_experiment("aidtm", config)
    metrics = result["crowd_metrics"]
    assert metrics["distilled"] > 100 and metrics["distilled_label_accuracy"][0] >= 0.95
    assert result["final"]["test_accuracy"] >= 0.85


def _typed_crowd(truth: np.ndarray, k: int, per_type: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """3 annotator types, each a distinct pair flip (class c -> c + t + 1, rate 0.4); the code's
    assignment: one random annotator per instance plus each other w.p. 1/R (about 2 labels each)."""
    rng = np.random.default_rng(seed)
    types = np.repeat(np.arange(3), per_type)
    r = len(types)
    labels = np.full((len(truth), r), MISSING)
    for i, c in enumerate(truth):
        who = set(np.flatnonzero(rng.random(r) < 1 / r)) | {int(rng.integers(r))}
        for a in who:
            labels[i, a] = (c + types[a] + 1) % k if rng.random() < 0.4 else c
    return labels, types


def _edge_precision(graph: np.ndarray, types: np.ndarray) -> float:
    off = graph * (1 - np.eye(len(graph)))
    return float(off[types[:, None] == types[None, :]].sum() / off.sum())


def test_heads_moved_alike_for_annotators_of_one_type():
    # Kills untrained heads (no transfer, no individual stage: every move is 0, precision near
    # chance, 0.33). A graph on the raw heads (global + move) is NOT caught: the cosine between
    # g + d_u and g + d_v still orders annotators by their moves here, against the spec's expectation.
    from vision.crowds.aidtm import AIDTM
    from vision.data import load_images

    data = load_images("digits")
    truth = data.train_labels.numpy()
    labels, types = _typed_crowd(truth, 10, 20, seed=0)
    torch.manual_seed(0)
    method = AIDTM(AIDTMConfig(tm_epochs=2, transfer_epochs=2, individual_epochs=3, gcn_epochs=1, neighbours=10,
                               rank=3, min_labels=20))
    method.num_annotators = len(types)
    method.modules(torch.nn.Linear(1, 1), data)
    probs = torch.nn.functional.one_hot(data.train_labels, 10).float()  # a perfect classifier: D~ = truth
    deltas = method.calibrate(probs, data.train_images, torch.as_tensor(labels))["deltas"]
    none = np.zeros(len(types), bool)
    knn = annotator_graph(deltas, k=10, rank=len(types), skipped=none)  # full rank: the kNN graph itself
    denoised = annotator_graph(deltas, k=10, rank=3, skipped=none)
    print(f"same-type edge precision: kNN {_edge_precision(knn, types):.3f}, rank-3 {_edge_precision(denoised, types):.3f}")
    assert _edge_precision(knn, types) >= 0.8
    assert _edge_precision(denoised, types) >= _edge_precision(knn, types) - 1e-9


def test_gcn_heads_beat_individual_heads_on_held_out_labels_of_sparse_annotators():
    # Kills a GCN that does not transfer over the annotator graph: with an identity adjacency
    # (tests/mutants.py: aidtm-gcn-identity-adjacency) each sparse annotator's head is fitted on its
    # own few labels and loses to the individual head (held-out NLL, seed 0: 2.80 vs 2.50, seed 1:
    # 2.60 vs 2.17; with the graph 1.97 and 1.62). The GCN stage is run longer and faster than the
    # code's default (gcn_epochs 10, lr 0.01), where it stays near one shared head and the graph
    # does not matter (see NOTES-aidtm.md).
    from vision.crowds.aidtm import AIDTM
    from vision.crowds.annotators import AnnotatorConfig, simulate
    from vision.data import load_images

    data = load_images("digits")
    probs = torch.nn.functional.one_hot(data.train_labels, 10).float()  # a perfect classifier: D~ = truth
    for seed in (0, 1):
        crowd = simulate(data.train_labels.numpy(), 10, AnnotatorConfig(regime="corr", annotators=120, groups=3,
                                                                         mean_labels=2.5, seed=seed))
        torch.manual_seed(seed)
        method = AIDTM(AIDTMConfig(tm_epochs=2, transfer_epochs=2, individual_epochs=3, gcn_epochs=40, gcn_lr=0.05,
                                   neighbours=10, rank=3, min_labels=3, holdout=0.2))
        method.num_annotators = 120
        method.modules(torch.nn.Linear(1, 1), data)
        held = method.calibrate(probs, data.train_images, torch.as_tensor(crowd.labels))["heldout"]
        print(seed, held)
        assert held["sparse_annotators"] >= 10  # Beta-sparse: many annotators with <= 10 training labels
        assert held["sparse_gcn"] < held["sparse_individual"] - 0.2

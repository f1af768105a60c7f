"""Sel-CL's parts against their definitions (the paper and the authors' code): the momentum encoder,
the FIFO queue, the label-free warmup, mixup's targets, the mixup contrastive loss and the
similarity loss. Each test names the wrong implementation it kills."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vision.backbones import ConvNet
from vision.data import load_images
from vision.noisy.selcl import (Queue, SelCL, SelCLConfig, mixup_contrastive, similarity_loss)
from vision.train import Batch, TrainConfig, fit


class _Data:  # what SelCL.modules reads of an ImageData
    train_images = torch.zeros(100, 1, 8, 8)
    num_classes = 3


def _method(**options) -> tuple[SelCL, ConvNet]:
    torch.manual_seed(0)
    model = ConvNet(1, 3, 8, width=8)
    method = SelCL(SelCLConfig(**options))
    method.modules(model, _Data())
    return method, model


def test_momentum_encoder_is_the_moving_average_and_gets_no_gradient():
    # Kills: copying the online weights (m ignored), swapping m and 1 - m, and an encoder whose
    # parameters are trainable (gradient flows into it, the optimiser would move it).
    method, model = _method(momentum=0.9)
    online = [*model.parameters(), *method.head.parameters()]
    with torch.no_grad():
        for p in online:
            p.add_(torch.randn_like(p))
    old = [p.detach().clone() for p in method.ema.parameters()]
    method.after_step(model)
    for before, after, p in zip(old, method.ema.parameters(), online):
        torch.testing.assert_close(after, 0.9 * before + 0.1 * p.detach())
    assert not any(p.requires_grad for p in method.ema.parameters())
    _, key = method.encode(method.ema["backbone"], method.ema["head"], torch.randn(4, 1, 8, 8))
    assert not key.requires_grad


def test_queue_is_fifo_with_labels_and_indices_and_overwrites_the_oldest():
    # Kills: a pointer that does not advance or wrap (the newest rows overwritten, or writes past
    # the end), and labels or indices written to other slots than their embeddings.
    queue = Queue(5, 2, 3)
    feats = torch.arange(16.0).view(8, 2)
    assert queue.push(feats[:3], torch.eye(3), torch.tensor([10, 11, 12]), torch.tensor([0, 1, 2])).tolist() == [0, 1, 2]
    assert (queue.index == -1).sum() == 2  # empty slots
    assert queue.push(feats[3:6], torch.eye(3), torch.tensor([13, 14, 15]), torch.tensor([2, 0, 1])).tolist() == [3, 4, 0]
    assert int(queue.ptr) == 1  # the oldest entry left (index 11) is next
    assert queue.index.tolist() == [15, 11, 12, 13, 14] and queue.labels.tolist() == [1, 1, 2, 2, 0]
    torch.testing.assert_close(queue.feats[0], feats[5])
    torch.testing.assert_close(queue.feats[1], feats[1])
    assert {n for n, _ in queue.named_buffers()} >= {"feats", "probs", "index", "labels", "ptr"}  # checkpointed


def test_warmup_uses_no_label():
    # Kills: a warmup with cross-entropy or supervised positives (the earlier variant): other labels
    # would change the loss and the weights.
    data = load_images("digits", seed=0)
    data.train_images, data.train_labels = data.train_images[:128], data.train_labels[:128]
    data.test_images, data.test_labels = data.test_images[:20], data.test_labels[:20]
    config = TrainConfig(epochs=1, warmup_epochs=1, device="cpu", seed=0, progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = []
        for labels in (data.train_labels.numpy(), (data.train_labels.numpy() + 3) % 10):
            method = SelCL()
            runs.append((fit(method, data, labels, config)["epochs"][0]["loss"],
                         [p.detach().clone() for p in method.ema.parameters()]))
    finally:
        torch.set_num_threads(threads)
    assert runs[0][0] == runs[1][0]
    for a, b in zip(runs[0][1], runs[1][1]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_mixup_cross_entropy_is_the_lambda_mix_of_both_labels():
    # Kills: unmixed targets (only the first label), unmixed inputs, or the mix on all samples
    # instead of the confident ones.
    method, model = _method()
    x = torch.randn(6, 1, 8, 8)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    chosen = torch.tensor([True, True, False, True, True, True])
    perm = torch.tensor([2, 0, 4, 1, 3])
    method.mix = lambda n, device: (0.7, perm)
    batch = Batch(torch.arange(6), y, x, x, chosen, 5)
    xs, ys = x[chosen], y[chosen]
    logits = model(0.7 * xs + 0.3 * xs[perm])
    ce = torch.nn.functional.cross_entropy
    expected = 0.7 * ce(logits, ys) + 0.3 * ce(logits, ys[perm])
    torch.testing.assert_close(method.mixup_ce(model, batch), expected)


def test_mixup_contrastive_matches_its_definition():
    # Kills: the minor sample's positives ignored, λ on the wrong term, or the masked-out keys (the
    # anchor's own entry, empty queue slots) left in the denominator.
    torch.manual_seed(1)
    z = torch.nn.functional.normalize(torch.randn(3, 4), dim=1)
    keys = torch.nn.functional.normalize(torch.randn(5, 4), dim=1)
    major = torch.rand(3, 5) > 0.5
    minor = torch.rand(3, 5) > 0.5
    contrast = torch.rand(3, 5) > 0.2
    lam = torch.tensor([0.9, 0.6, 0.75])
    got = mixup_contrastive(z, keys, major, minor, contrast, lam, 0.1)
    for a in range(3):
        allowed = [k for k in range(5) if contrast[a, k]]
        log_den = torch.logsumexp(torch.stack([z[a] @ keys[k] / 0.1 for k in allowed]), 0)

        def mean_log_prob(pos):
            ks = [k for k in allowed if pos[a, k]]
            return sum(z[a] @ keys[k] / 0.1 - log_den for k in ks) / max(len(ks), 1)

        expected = -(lam[a] * mean_log_prob(major) + (1 - lam[a]) * mean_log_prob(minor))
        torch.testing.assert_close(got[a], torch.as_tensor(expected, dtype=torch.float32))


def test_similarity_loss_matches_its_definition():
    # The code's Simi_loss: s_ab = p_a . p_b; -[t log s + (1-t) log(1-s)] with t the pair mask,
    # λ-mixed between the major and minor sample's masks, summed where contrasted, over all entries.
    # Kills: a flipped target, a missing λ-mix, or the self/empty entries counted.
    torch.manual_seed(2)
    probs = torch.softmax(torch.randn(4, 3), 1)
    keys = torch.softmax(torch.randn(6, 3), 1)
    major, minor = torch.rand(4, 6) > 0.5, torch.rand(4, 6) > 0.5
    contrast = torch.rand(4, 6) > 0.3
    lam = torch.tensor([0.8, 0.5, 0.95, 0.6])
    total = 0.0
    for a in range(4):
        for b in range(6):
            if not contrast[a, b]:
                continue
            s = float(probs[a] @ keys[b])
            bce = [-(np.log(s + 1e-7) if t else np.log(1 - s + 1e-7)) for t in (major[a, b], minor[a, b])]
            total += float(lam[a]) * bce[0] + (1 - float(lam[a])) * bce[1]
    got = similarity_loss(probs, keys, major, minor, contrast, lam)
    assert float(got) == pytest.approx(total / 24, rel=1e-5)

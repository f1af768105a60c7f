"""DPC's evidential loss against values worked out by hand from the paper's formula (the DPC module
docstring): with evidence e = exp(z) and constant K, α = e + K, p = α / Σα (the calibrated softmax),
loss = -log p_ỹ + kl_weight / C · KL(Dir(α̃) || Dir(1)) with α̃ = y + (1 - y) α / K.

The calibrated-softmax property: adding one constant s to every logit multiplies the evidence by
e^s while K stays, so p (and the loss) change; the plain softmax e / Σe does not change at all.
Plausible wrong implementation killed: the loss's -log p_ỹ taken from the plain softmax (or
calibrated_softmax returning the plain softmax), which gives other values here and no change
under the shift.
"""
from __future__ import annotations

import math

import torch

from vision.noisy.dpc import calibrated_softmax, edl_loss


def test_two_class_loss_equals_the_hand_computed_value():
    # z = (ln 3, 0), K = 1, label 0, kl_weight 0.5, C = 2.
    # e = (3, 1); α = (4, 2); p = α / 6 = (2/3, 1/3)  [plain softmax: (3/4, 1/4)]; -log p_0 = ln 1.5.
    # α̃ = (1, 2 / K) = (1, 2): Dir(1, 2) is Beta(1, 2), density 2(1 - x) on [0, 1], so
    # KL(Beta(1, 2) || U(0, 1)) = E[ln 2(1 - x)] = ln 2 + E[ln u] with u = 1 - x ~ density 2u:
    # ∫ 2u ln u du over [0, 1] = -1/2, so KL = ln 2 - 1/2.
    # loss = ln 1.5 + 0.5 / 2 · (ln 2 - 1/2) ≈ 0.453752.
    z, label = torch.tensor([[math.log(3.0), 0.0]]), torch.tensor([0])
    expected = math.log(1.5) + 0.25 * (math.log(2.0) - 0.5)
    torch.testing.assert_close(calibrated_softmax(z, 1.0), torch.tensor([[2 / 3, 1 / 3]]))
    torch.testing.assert_close(edl_loss(z, label, constant=1.0, kl_weight=0.5), torch.tensor([expected]))


def test_three_class_loss_equals_the_hand_computed_value():
    # z = (ln 2, 0, ln 2), K = 1, label 0, kl_weight 0.5, C = 3.
    # e = (2, 1, 2); α = (3, 2, 3); p_0 = 3 / 8  [plain softmax: 2 / 5]; -log p_0 = ln(8 / 3).
    # α̃ = (1, 2, 3), S = 6. KL(Dir(a) || Dir(1)) = lnΓ(S) - lnΓ(C) - Σ lnΓ(a_k) + Σ (a_k - 1)(ψ(a_k) - ψ(S))
    #   lnΓ(6) - lnΓ(3) - (lnΓ(1) + lnΓ(2) + lnΓ(3)) = ln 120 - ln 2 - ln 2 = ln 30
    #   ψ(6) - ψ(2) = 1/2 + 1/3 + 1/4 + 1/5 = 77/60;  ψ(6) - ψ(3) = 1/3 + 1/4 + 1/5 = 47/60
    #   Σ (a_k - 1)(ψ(a_k) - ψ(6)) = 0 - 1 · 77/60 - 2 · 47/60 = -171/60
    # KL = ln 30 - 2.85; loss = ln(8/3) + 0.5 / 3 · (ln 30 - 2.85) ≈ 1.072695.
    z, label = torch.tensor([[math.log(2.0), 0.0, math.log(2.0)]]), torch.tensor([0])
    expected = math.log(8 / 3) + 0.5 / 3 * (math.log(30.0) - 171 / 60)
    torch.testing.assert_close(edl_loss(z, label, constant=1.0, kl_weight=0.5), torch.tensor([expected]))


def test_a_constant_logit_shift_changes_the_loss_as_the_calibrated_softmax_says():
    # Shift z = (ln 3, 0) by s = ln 2: e = (6, 2), α = (7, 3), p_0 = 7/10 (plain softmax: still 3/4),
    # -log p_0 = ln(10/7). α̃ = (1, 3): Beta(1, 3), density 3(1 - x)^2, KL = ln 3 + 2 E[ln u] with
    # u ~ density 3u^2, E[ln u] = -1/3, so KL = ln 3 - 2/3. loss = ln(10/7) + 0.25 (ln 3 - 2/3).
    z, label = torch.tensor([[math.log(3.0), 0.0]]), torch.tensor([0])
    before = edl_loss(z, label, constant=1.0, kl_weight=0.5)
    after = edl_loss(z + math.log(2.0), label, constant=1.0, kl_weight=0.5)
    expected = math.log(10 / 7) + 0.25 * (math.log(3.0) - 2 / 3)
    torch.testing.assert_close(after, torch.tensor([expected]))
    # The negative log-likelihood part alone (kl_weight 0): plain softmax would leave it at ln(4/3).
    nll_before = edl_loss(z, label, constant=1.0, kl_weight=0.0)
    nll_after = edl_loss(z + math.log(2.0), label, constant=1.0, kl_weight=0.0)
    torch.testing.assert_close(nll_before - nll_after, torch.tensor([math.log(1.5) - math.log(10 / 7)]))
    assert float(after) != float(before)

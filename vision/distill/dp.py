"""Differential privacy for a teacher-to-student signal (DPDFD, :mod:`vision.distill.dpdfd`): the
output-gradient sanitiser and the privacy ledger (Opacus's RDP accountant and a release counter).

Sanitiser: per sample i, the distillation loss's gradient w.r.t. the student's logits g_i (one
autograd call of sum_i l_i; row i depends only on sample i) is NORMALISED to norm C (not clipped;
a zero gradient stays 0), then Gaussian noise N(0, (2 C sigma)^2 I_K) is added to each row, drawn
independently per sample: 2C is the L2 sensitivity of a normalised vector under replace-one (the
GS-WGAN convention). The student back-propagates the noised rows (``s.backward(g_tilde / B)``);
the parameter gradient is post-processing.

Ledger: every noised row is one Gaussian-mechanism release on the teacher's private training set,
which the teacher "sees" whole on every query, so no amplification by subsampling: the accountant
is stepped ``releases_per_step`` (= B) times per iteration at ``sample_rate`` (= 1). sigma = 0 is
non-private: the counter still counts, epsilon is inf.
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from curate.core.errors import BadInputError


def sanitise(grad: torch.Tensor, bound: float, sigma: float,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(noised, normalised) output gradients, both (B, K): each row of ``grad`` scaled to norm
    ``bound`` (0 stays 0), plus independent N(0, (2 * bound * sigma)^2) noise per entry."""
    norms = grad.norm(dim=1, keepdim=True)
    normalised = bound * grad / norms.clamp_min(torch.finfo(grad.dtype).tiny)
    if sigma == 0:
        return normalised, normalised
    noise = torch.randn(grad.shape, generator=generator, dtype=grad.dtype).to(grad.device)
    return normalised + noise * (2 * bound * sigma), normalised


def planned_epsilon(sigma: float, releases: int, sample_rate: float, delta: float) -> float:
    """epsilon(delta) of ``releases`` Gaussian releases at noise multiplier ``sigma``, by Opacus's
    RDP analysis (the accountant's own computation for one merged history entry); inf at sigma 0."""
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis import rdp

    if sigma == 0:
        return math.inf
    if releases == 0:
        return 0.0
    orders = RDPAccountant.DEFAULT_ALPHAS
    spent = rdp.compute_rdp(q=sample_rate, noise_multiplier=sigma, steps=releases, orders=orders)
    with warnings.catch_warnings():  # "optimal order is the smallest alpha": the bound is still valid
        warnings.simplefilter("ignore")
        return float(rdp.get_privacy_spent(orders=orders, rdp=spent, delta=delta)[0])


def plan_sigma(target_epsilon: float, delta: float, releases: int, sample_rate: float) -> float:
    """The noise multiplier that keeps ``releases`` releases within (target_epsilon, delta)
    (Opacus ``get_noise_multiplier``, tolerance 0.01)."""
    from opacus.accountants.utils import get_noise_multiplier

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta,
                                              sample_rate=sample_rate, steps=releases, accountant="rdp"))
    except ValueError as err:  # "The privacy budget is too low."
        raise BadInputError(f"target_epsilon: {target_epsilon} at delta {delta} over {releases} releases "
                            f"is out of reach ({err})") from err


class PrivacyLedger:
    """Opacus's RDP accountant, stepped once per release, and the toolkit's own release counter."""

    def __init__(self, sigma: float, sample_rate: float, releases_per_step: int):
        from opacus.accountants import RDPAccountant

        self.sigma, self.sample_rate, self.releases_per_step = sigma, sample_rate, releases_per_step
        self.accountant = RDPAccountant()
        self.releases = 0

    def step(self) -> None:
        """One iteration: ``releases_per_step`` sanitised rows were released."""
        self.releases += self.releases_per_step
        if self.sigma > 0:
            for _ in range(self.releases_per_step):
                self.accountant.step(noise_multiplier=self.sigma, sample_rate=self.sample_rate)

    def epsilon(self, delta: float) -> float:
        if self.sigma == 0:
            return math.inf if self.releases else 0.0
        if not self.releases:
            return 0.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(self.accountant.get_epsilon(delta=delta))

    def state_dict(self) -> dict[str, Any]:
        return {"releases": self.releases, "accountant": self.accountant.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.releases = int(state["releases"])
        self.accountant.load_state_dict(state["accountant"])

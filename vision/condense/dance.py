"""DANCE: dual-view distribution alignment for dataset condensation (Zhang et al., IJCAI 2024,
arXiv 2406.01063; authors' code github.com/Hansong-Zhang/DANCE, read, not copied).

DANCE is distribution matching (DM) with a bank of pre-trained *experts* in place of DM's random
networks:

- **pre-training** (:func:`pretrain_experts`, once): N ConvNets trained from scratch on the real
  training split; each expert's initial weights θ0 and final weights θT are kept (cached on disk,
  keyed by the data, the training settings and the seed);
- **inner-class view** (:func:`inner_loss`): per class c, ``‖mean φ(A(R_c); θ_mid) − mean
  φ(A(S_c); θ_mid)‖²`` (sum over feature dimensions, the real side under ``no_grad``) under a
  *middle encoder* ``θ_mid = λ θ0 + (1 − λ) θT`` (:func:`middle_encoder`, parameters only), with an
  expert i ~ U{0..N−1} and λ ~ U(0, 1) drawn per iteration from a seeded generator (:func:`draw_expert`);
  A is the family's differentiable augmentation with ONE draw on the concatenated batch [R_c; S_c];
- **inter-class view** (:func:`calibration_loss`): ``CE(f(A(S_c); θT), c)`` under the *trained*
  expert, ``iter_calib`` rounds of one step per class, after all inner steps of the iteration.
  The two losses are separate optimiser steps sharing one SGD pixel optimiser (and its momentum);
  there is no weight between them (as in the code). :func:`dance_iteration` is one outer iteration.

Choices and omissions (the paper/code vs this module):
- θ_mid's buffers are the trained expert's (a copy of θT, its parameters then overwritten); the
  authors leave them at a fresh model's values. The family's ConvNet (instance norm) has none.
- experts are trained with the toolkit's loop (:func:`vision.train.fit`): SGD lr 0.01, momentum
  0.9, wd 5e-4, batch 64, but a cosine schedule and random-crop augmentation in place of the
  authors' MultiStepLR (×0.2 at 2/3, 5/6), DSA and CutMix [deviation].
- ``num_experts`` experts are pre-trained and all are drawn from (the authors pre-train 20 and draw
  from the first ``num_premodel`` = 5; here both are ``num_experts``, default 5).
- no ``batch_syn_max`` subsampling of the synthetic class batch (it only binds with
  multi-formation or IPC > 200).
- left out: multi-formation (``factor`` > 1, IDC's decode) and CutMix at evaluation; the
  ``num_premodel = 0`` branch of the code (calibration only, no inner view).
"""
from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from curate.core.cache import derive_seed, digest
from curate.core.errors import BadInputError
from vision.backbones import build_backbone
from vision.train import Method, TrainConfig, fit, save_checkpoint


@dataclass
class DanceConfig:
    num_experts: int = 5  # N pre-trained experts (the code's num_premodel)
    expert_epochs: int = 60  # pre-training epochs per expert (reproduce_pretrain: 60)
    expert_lr: float = 0.01
    expert_batch_size: int = 64
    iter_calib: int = 1  # rounds of the inter-class calibration per iteration (0: DM with middle encoders)

    def __post_init__(self) -> None:
        for name in ("num_experts", "expert_epochs", "expert_batch_size"):
            if getattr(self, name) < 1:
                raise BadInputError(f"method.{name} must be at least 1, got {getattr(self, name)}")
        if self.iter_calib < 0:
            raise BadInputError(f"method.iter_calib must be at least 0, got {self.iter_calib}")
        if not self.expert_lr > 0:
            raise BadInputError(f"method.expert_lr must be positive, got {self.expert_lr}")


@dataclass
class Expert:
    """One pre-trained expert: its initial (θ0) and final (θT) networks, frozen."""
    init: nn.Module
    final: nn.Module


# -- pre-training --------------------------------------------------------------------------------

def expert_seed(seed: int, index: int) -> int:
    return derive_seed(seed, "dance-expert", index)


def _data_digest(data) -> str:
    h = hashlib.sha256()
    h.update(data.train_images.contiguous().numpy().tobytes())
    h.update(data.train_labels.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _frozen(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class _KeepWeights(Method):
    """Cross-entropy training that keeps the network and a copy of its initial weights."""

    name = "dance-expert"

    def modules(self, model, data) -> dict:
        self.model = model
        # clone: state_dict() shares storage with the parameters that training updates in place
        self.initial = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
        return {}


def pretrain_experts(data, backbone: str, config: DanceConfig, seed: int,
                     cache_dir: str | Path | None = None, device: str = "auto") -> list[Expert]:
    """``config.num_experts`` experts trained by cross-entropy on ``data``'s training split, expert i
    from seed ``expert_seed(seed, i)``; each (θ0, θT) pair is saved to ``cache_dir`` (when given)
    under a key of the data, the settings and the seed, and loaded from there on a later call."""
    experts = []
    for i in range(config.num_experts):
        train = TrainConfig(backbone=backbone, epochs=config.expert_epochs, warmup_epochs=0,
                            batch_size=config.expert_batch_size, lr=config.expert_lr, momentum=0.9,
                            weight_decay=5e-4, seed=expert_seed(seed, i), device=device, progress=False)
        settings = {k: v for k, v in asdict(train).items() if k not in ("device", "progress", "checkpoint_dir")}
        key = digest(json.dumps([1, data.name, _data_digest(data), settings], sort_keys=True))
        path = Path(cache_dir) / f"dance-expert-{key}.pt" if cache_dir else None
        if path is not None and path.exists():
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            keeper = _KeepWeights()
            fit(keeper, data, data.train_labels, train)
            state = {"init": keeper.initial,
                     "final": {k: v.detach().clone().cpu() for k, v in keeper.model.state_dict().items()}}
            if path is not None:
                save_checkpoint(path, state)
        nets = []
        for which in ("init", "final"):
            net = build_backbone(backbone, data.channels, data.num_classes, data.image_size)
            net.load_state_dict(state[which])
            nets.append(_frozen(net))
        experts.append(Expert(*nets))
    return experts


# -- middle encoder ------------------------------------------------------------------------------

def draw_expert(generator: torch.Generator, num_experts: int) -> tuple[int, float]:
    """(expert index i ~ U{0..N-1}, λ ~ U(0, 1)), both from ``generator``."""
    index = int(torch.randint(num_experts, (1,), generator=generator))
    lam = float(torch.rand(1, generator=generator))
    return index, lam


@torch.no_grad()
def middle_encoder(init: nn.Module, final: nn.Module, lam: float, out: nn.Module | None = None) -> nn.Module:
    """θ_mid = λ·θ0 + (1 − λ)·θT over the *parameters* (λ = 0: the trained expert, λ = 1: its
    initialisation); buffers are θT's, not interpolated. Written into ``out`` (reused across
    iterations) or a new frozen copy of ``final``; ``init`` and ``final`` are not modified."""
    if out is None:
        out = _frozen(copy.deepcopy(final))
    else:
        for b_out, b_final in zip(out.buffers(), final.buffers()):
            b_out.copy_(b_final)
    for p_mid, p0, p_t in zip(out.parameters(), init.parameters(), final.parameters()):
        p_mid.copy_(lam * p0 + (1 - lam) * p_t)
    return out


# -- the two views -------------------------------------------------------------------------------

def inner_loss(real: torch.Tensor, synthetic: torch.Tensor, encoder: nn.Module) -> torch.Tensor:
    """‖mean φ(real) − mean φ(synthetic)‖² under ``encoder`` (sum over features); no gradient
    flows into the real side."""
    with torch.no_grad():
        target = encoder.features(real).mean(0)
    return ((encoder.features(synthetic).mean(0) - target) ** 2).sum()


def calibration_loss(synthetic: torch.Tensor, labels: torch.Tensor, expert: nn.Module) -> torch.Tensor:
    """CE of the trained expert's logits on the (augmented) synthetic images against their labels."""
    return nn.functional.cross_entropy(expert(synthetic), labels)


def dance_iteration(images: torch.Tensor, labels: torch.Tensor, sample_real: Callable[[int], torch.Tensor],
                    augment: Callable[[torch.Tensor], torch.Tensor], experts: Sequence[Expert],
                    optimizer: torch.optim.Optimizer, generator: torch.Generator, iter_calib: int,
                    mid: nn.Module | None = None, classes: Sequence[int] | None = None) -> dict[str, Any]:
    """One outer iteration on the learnable ``images`` (a leaf the ``optimizer`` owns; ``labels`` its
    classes): draw (i, λ), build θ_mid, clamp the pixels to [0, 1], one inner step per class (real
    and synthetic augmented with one draw), then ``iter_calib`` rounds of one calibration step per
    class under θT^i. ``augment`` applies one random draw to a whole batch; ``sample_real(c)``
    returns a batch of real images of class c. Returns the draw and the per-step losses."""
    index, lam = draw_expert(generator, len(experts))
    expert = experts[index]
    mid = middle_encoder(expert.init, expert.final, lam, mid)
    classes = list(classes) if classes is not None else sorted(set(labels.tolist()))
    with torch.no_grad():
        images.clamp_(0, 1)
    inner, calib = [], []
    for c in classes:
        real = sample_real(c)
        rows = (labels == c).nonzero().squeeze(1)
        batch = augment(torch.cat([real.to(images.device), images[rows]]))
        loss = inner_loss(batch[:len(real)], batch[len(real):], mid)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        inner.append(float(loss.detach()))
    for _ in range(iter_calib):
        for c in classes:
            rows = (labels == c).nonzero().squeeze(1)
            loss = calibration_loss(augment(images[rows]), labels[rows], expert.final)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            calib.append(float(loss.detach()))
    return {"expert": index, "lambda": lam, "inner": inner, "calibration": calib}

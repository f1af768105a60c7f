"""DANCE: dual-view distribution alignment for dataset condensation (Zhang et al., IJCAI 2024,
arXiv 2406.01063; authors' code github.com/Hansong-Zhang/DANCE, read, not copied).

DANCE is distribution matching (DM) with a bank of pre-trained *experts* in place of DM's random
networks; :class:`DANCE` plugs into the condensation family's loop
(:func:`vision.condense.experiment.condense`):

- **pre-training** (:func:`pretrain_experts`, in ``prepare``, once): N ConvNets of the loop's width
  trained from scratch on the real training split; each expert's initial weights θ0 and final
  weights θT are kept, cached on disk keyed by the data, the training settings and the seed;
- **inner-class view** (``network`` + the loop): each iteration draws an expert i ~ U{0..N−1} and
  λ ~ U(0, 1) from a seeded generator (:func:`draw_expert`) and returns the *middle encoder*
  ``θ_mid = λ θ0 + (1 − λ) θT`` (:func:`middle_encoder`, parameters only); the loop then takes, per
  class c, one step on ``‖mean φ(A(R_c); θ_mid) − mean φ(A(S_c); θ_mid)‖²`` (DM's loss, sum over
  features, the real side under ``no_grad``, ONE augmentation draw on [R_c; S_c]);
- **inter-class view** (``after_matching``, :func:`calibrate`): ``iter_calib`` rounds of one step
  per class on ``CE(f(A(S_c); θT), c)`` under the *trained* expert of the iteration.
  The two losses are separate optimiser steps sharing the loop's SGD pixel optimiser (and its
  momentum), inner steps first; no weight between them (as in the code).

Choices and omissions (the paper/code vs this module):
- θ_mid's buffers are the trained expert's (a copy of θT, its parameters then overwritten); the
  authors leave them at a fresh model's values. The family's ConvNet (instance norm) has none.
- experts are trained with the toolkit's loop (:func:`vision.train.fit`) and the family's DSA
  (``expert_augment``, default the matching strategy ``color_crop_cutout``): SGD lr 0.01, momentum
  0.9, wd 5e-4, batch 64, but a cosine schedule in place of the authors' MultiStepLR (×0.2 at 2/3,
  5/6), and no CutMix, flip or rotate [deviation].
- ``num_experts`` experts are pre-trained and all are drawn from (the authors pre-train 20 and draw
  from the first ``num_premodel`` = 5; here both are ``num_experts``, default 5).
- ``train.depth`` must be the ConvNet's default for the image size (the experts are built by name).
- the paper's Fig. 3(c) diagnostic (expert accuracy on the synthetic set) is not reported.
- left out: multi-formation (``factor`` > 1, IDC's decode) and CutMix at evaluation; the
  ``num_premodel = 0`` branch of the code (calibration only, no inner view).
"""
from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from curate.core.cache import default_cache_dir, derive_seed, digest
from curate.core.device import resolve_device
from curate.core.errors import BadInputError
from vision.backbones import ConvNet, build_backbone
from vision.condense.base import Condenser, Step
from vision.condense.augment import parse_strategy
from vision.condense.dm import dm_loss
from vision.condense.evaluate import _DSATraining as DSATraining
from vision.distill.base import freeze, weights_digest
from vision.train import TrainConfig, fit, save_checkpoint


@dataclass
class DanceConfig:
    num_experts: int = 5  # N pre-trained experts (the code's num_premodel)
    expert_epochs: int = 60  # pre-training epochs per expert (reproduce_pretrain: 60)
    expert_lr: float = 0.01
    expert_batch_size: int = 64
    expert_augment: str = "color_crop_cutout"  # DSA strategy of the experts' training ('none': none)
    iter_calib: int = 1  # rounds of the inter-class calibration per iteration (0: DM with middle encoders)
    expert_dir: str | None = None  # the experts' cache; None: train.checkpoint_dir, else ~/.cache/curatekit/dance-experts

    def __post_init__(self) -> None:
        for name in ("num_experts", "expert_epochs", "expert_batch_size"):
            if getattr(self, name) < 1:
                raise BadInputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.iter_calib < 0:
            raise BadInputError(f"iter_calib must be at least 0, got {self.iter_calib}")
        if not self.expert_lr > 0:
            raise BadInputError(f"expert_lr must be positive, got {self.expert_lr}")
        parse_strategy(self.expert_augment, "expert_augment")


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


class _KeepWeights(DSATraining):
    """Cross-entropy on DSA-augmented batches that keeps the network and a copy of its initial weights."""

    name = "dance-expert"

    def modules(self, model, data) -> dict:
        self.model = model
        # clone: state_dict() shares storage with the parameters that training updates in place
        self.initial = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
        return super().modules(model, data)


def pretrain_experts(data, backbone: str, config: DanceConfig, seed: int,
                     cache_dir: str | Path | None = None, device: str = "auto") -> list[Expert]:
    """``config.num_experts`` experts trained by cross-entropy on ``data``'s training split, expert i
    from seed ``expert_seed(seed, i)``; each (θ0, θT) pair is saved to ``cache_dir`` (when given)
    under a key of the data, the settings and the seed, and loaded from there on a later call."""
    experts = []
    for i in range(config.num_experts):
        train = TrainConfig(backbone=backbone, epochs=config.expert_epochs, warmup_epochs=0,
                            batch_size=config.expert_batch_size, lr=config.expert_lr, momentum=0.9,
                            weight_decay=5e-4, augment=False, seed=expert_seed(seed, i), device=device,
                            progress=False)
        settings = {k: v for k, v in asdict(train).items() if k not in ("device", "progress", "checkpoint_dir")}
        key = digest(json.dumps([1, data.name, _data_digest(data), settings, config.expert_augment], sort_keys=True))
        path = Path(cache_dir) / f"dance-expert-{key}.pt" if cache_dir else None
        if path is not None and path.exists():
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            keeper = _KeepWeights(config.expert_augment, train.seed)
            fit(keeper, data, data.train_labels, train)
            state = {"init": keeper.initial,
                     "final": {k: v.detach().clone().cpu() for k, v in keeper.model.state_dict().items()}}
            if path is not None:
                save_checkpoint(path, state)
        nets = []
        for which in ("init", "final"):
            net = build_backbone(backbone, data.channels, data.num_classes, data.image_size)
            net.load_state_dict(state[which])
            nets.append(freeze(net))
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
        out = freeze(copy.deepcopy(final))
    else:
        for b_out, b_final in zip(out.buffers(), final.buffers()):
            b_out.copy_(b_final)
    for p_mid, p0, p_t in zip(out.parameters(), init.parameters(), final.parameters()):
        p_mid.copy_(lam * p0 + (1 - lam) * p_t)
    return out


# -- the two views in the family's loop ----------------------------------------------------------

def calibration_loss(synthetic: torch.Tensor, labels: torch.Tensor, expert: nn.Module) -> torch.Tensor:
    """CE of the trained expert's logits on the (augmented) synthetic images against their labels."""
    return nn.functional.cross_entropy(expert(synthetic), labels)


def calibrate(step: Step, expert: nn.Module, rounds: int, generator: torch.Generator) -> list[float]:
    """``rounds`` x (one optimiser step per class c on ``CE(expert(A(S_c)), c)``), on the loop's
    optimiser and augmentation; a class batch above ``batch_syn_max`` is subsampled from ``generator``.
    Returns the losses before each step."""
    losses = []
    for _ in range(rounds):
        for c in range(step.synthetic.num_classes):
            synthetic = step.synthetic.of_class(c)
            if len(synthetic) > step.batch_syn_max:
                synthetic = synthetic[torch.randperm(len(synthetic), generator=generator)[:step.batch_syn_max]]
            labels = torch.full((len(synthetic),), c, dtype=torch.long, device=synthetic.device)
            loss = calibration_loss(step.augment(synthetic), labels, expert)
            step.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            step.optimizer.step()
            losses.append(float(loss.detach()))
    return losses


def draw_seed(seed: int) -> int:
    """The seed of DANCE's (expert, λ) draws for a run seeded ``seed``."""
    return derive_seed(seed, "dance-draws")


class DANCE(Condenser):
    """DM's loop (per-class mean features, one augmentation draw on [R_c; S_c], the real side
    without gradients) under a middle encoder of a drawn expert, then the calibration steps."""

    name = "dance"
    config_class = DanceConfig

    def __init__(self, config: DanceConfig | None = None, experts: Sequence[Expert] | None = None):
        self.config = config or DanceConfig()
        self.given = list(experts) if experts is not None else None  # in place of pre-training (tests)

    def identity(self) -> str:
        given = "" if self.given is None else " experts=" + ",".join(weights_digest(e.final) for e in self.given)
        return repr(self.config) + given

    def prepare(self, data, config) -> None:
        """Pre-train (or load) the experts: ConvNets of the loop's width, seeded by ``train.seed``."""
        if self.given is None:
            probe = ConvNet(data.channels, data.num_classes, data.image_size, width=1)
            if config.depth is not None and config.depth != sum(isinstance(m, nn.Conv2d) for m in probe.modules()):
                raise BadInputError(f"vision method 'dance': train.depth {config.depth} is not the ConvNet's "
                                    f"default for {data.image_size}-pixel images (the experts use it); set it to null")
            cache = (self.config.expert_dir or config.checkpoint_dir
                     or default_cache_dir() / "dance-experts")
            experts = pretrain_experts(data, f"convnet:{config.width}", self.config, config.seed, cache, config.device)
        else:
            experts = self.given
        device = resolve_device(config.device)
        self.experts = [Expert(e.init.to(device), e.final.to(device)) for e in experts]
        self.generator = torch.Generator().manual_seed(draw_seed(config.seed))
        self.mid: nn.Module | None = None
        self.draw: tuple[int, float] | None = None
        self.calibration: list[float] = []

    def generators(self) -> dict[str, torch.Generator]:
        return {"draws": self.generator}

    def network(self, iteration: int, networks) -> nn.Module:
        self.draw = draw_expert(self.generator, len(self.experts))
        expert = self.experts[self.draw[0]]
        self.mid = middle_encoder(expert.init, expert.final, self.draw[1], self.mid)
        return self.mid

    def match_loss(self, real: torch.Tensor, synthetic: torch.Tensor) -> torch.Tensor:
        return dm_loss(real, synthetic)

    def after_matching(self, step: Step) -> None:
        expert = self.experts[self.draw[0]].final
        self.calibration = calibrate(step, expert, self.config.iter_calib, self.generator)

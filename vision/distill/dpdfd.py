"""DPDFD: differentially private data-free distillation (Liu, Wang, Li, Zeng, Ge, IJCAI 2023,
"Model Conversion via Differentially Private Data-Free Distillation"; spec ``specs/dpdfd.md``).

A teacher T trained on private data (the 80% training split) teaches a student S that never sees
a real training image, through synthetic inputs x = G(z) of a generator. Each iteration:

1. S step: z ~ N(0, I)^B, x = G(z) (detached), t = T(x) (eval, no grad), s = S(x); the per-sample
   distillation loss l_i(s_i, t_i) gives the output gradient g_i = dl_i/ds_i (one autograd call
   w.r.t. the logits); each row is normalised to norm C and noised with N(0, (2 C sigma)^2 I_K)
   per sample (:func:`vision.distill.dp.sanitise`); ``s.backward(g_tilde / B)``, Adam step on S.
2. G step (``generator_steps`` of them), no teacher call: the student is the fixed discriminator,
   L_G = CE(S(x'), argmax S(x')) - beta * H(mean_i softmax S(x'_i)) (DAFL's confidence and class
   balance terms; optionally DAFL's feature-activation term, - alpha * mean |f_S(x')|, with
   ``activation_weight``), Adam step on G. G, and its samples, are DP by post-processing.
3. Accounting (:class:`vision.distill.dp.PrivacyLedger`): B releases per iteration at sample rate 1
   in Opacus's RDP accountant; epsilon at delta is reported for every run. sigma is fixed
   (``noise_multiplier``) or planned from ``target_epsilon`` by Opacus ``get_noise_multiplier``
   over iterations x B releases; a fixed sigma whose planned epsilon exceeds ``max_epsilon`` (or
   ``target_epsilon``) is refused before any work. sigma = 0 is non-private (epsilon inf).

Pixels: the generator's tanh range is [-1, 1]; the teacher is trained by the distill family's
:func:`vision.distill.experiment.train_teacher` on [0, 1] images (the toolkit's range) and is
queried through a fixed affine map x -> (x + 1) / 2 (:class:`PixelRange`), so teacher and
generator agree; the student works in [-1, 1] and is tested on the real test split mapped by
2x - 1. Nothing teacher-dependent is logged unsanitised (no raw distillation loss in the history:
it would be an unaccounted release); the test split is only read for evaluation.

[assumed] (the paper's method section, theorem and tables were not available): the loss L (L1 on
logits / K by default, the DFAD precedent; ``loss: kl`` for temperature-scaled KL), the generator
objective (DAFL-style with the student, beta = 5), per-sample noise, normalisation (not
clipping) with sensitivity 2C, replace-one adjacency on the teacher's training set, sample rate 1
(no amplification), one G step per S step, Adam 1e-3 for both, B = 256, n_z = 100, G an MLP
100 -> 256 -> 64 with BatchNorm (G only) and tanh; the student has no BatchNorm. The recipe
(tuned on digits at sigma 0, seed 0) departs from the spec's defaults: batch 128 and
activation_weight 2 (the dataclass keeps B = 256 and no activation term), and a ConvNet-32 teacher.

Options beyond the method: ``sanitiser: none`` trains S by plain ``loss.backward()`` on the same
G samples (the non-private data-free baseline; epsilon inf). ``sample_rate`` < 1 is accepted but
is an amplification assumption this protocol does not justify (recorded in the result).

Omitted: the paper's exact loss, generator objective and hyperparameters (unknown); its DP and
convergence proofs; ablation mode B of the spec (per-sample parameter-gradient sanitisation with
Opacus GradSampleModule); the DPSD extension (generator pre-training, selective randomized
response); the CelebA / CIFAR-10 experiments (digits only offline).
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from curate.core.errors import BadInputError
from vision.data import DataFields
from vision.distill.experiment import TeacherTrainConfig

LOSSES = ("l1", "kl")
SANITISERS = ("normalise", "none")


@dataclass(frozen=True)
class DPDFDConfig:
    """The method's options (``method:`` in the recipe)."""
    loss: str = "l1"  # [assumed] l1: ||s - t||_1 / K on logits; kl: T^2 KL(softmax(t/T) || softmax(s/T))
    temperature: float = 4.0  # kl only
    clip_bound: float = 1.0  # C: every output-gradient row is normalised to this norm
    noise_multiplier: float | None = None  # sigma (noise std 2 C sigma); None: planned from target_epsilon
    target_epsilon: float | None = 10.0  # plans sigma; with a fixed sigma, a cap (like max_epsilon)
    max_epsilon: float | None = None  # refuse a run whose planned epsilon exceeds this
    delta: float = 1e-5
    sample_rate: float = 1.0  # q of every release; 1: the teacher sees all of D on every query
    releases_per_step: int | None = None  # None: the batch size B (one release per sanitised row)
    sanitiser: str = "normalise"  # none: plain loss.backward() (non-private baseline)
    balance_weight: float = 5.0  # beta of the generator's class-balance term
    activation_weight: float = 0.0  # DAFL's feature-activation term on the student's features (0: off)
    n_z: int = 100
    generator_hidden: int = 256

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise BadInputError(f"loss must be one of {', '.join(LOSSES)}, got '{self.loss}'")
        if self.sanitiser not in SANITISERS:
            raise BadInputError(f"sanitiser must be one of {', '.join(SANITISERS)}, got '{self.sanitiser}'")
        for name in ("temperature", "clip_bound"):
            if not getattr(self, name) > 0:
                raise BadInputError(f"{name} must be positive, got {getattr(self, name)}")
        if self.noise_multiplier is not None and not self.noise_multiplier >= 0:
            raise BadInputError(f"noise_multiplier must be >= 0 (0: non-private), got {self.noise_multiplier}")
        for name in ("target_epsilon", "max_epsilon"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise BadInputError(f"{name} must be positive or null, got {getattr(self, name)}")
        if not 0 < self.delta < 1:
            raise BadInputError(f"delta must be in (0, 1), got {self.delta}")
        if not 0 < self.sample_rate <= 1:
            raise BadInputError(f"sample_rate must be in (0, 1], got {self.sample_rate}")
        if self.releases_per_step is not None and self.releases_per_step < 1:
            raise BadInputError(f"releases_per_step must be at least 1 or null, got {self.releases_per_step}")
        for name in ("balance_weight", "activation_weight"):
            if getattr(self, name) < 0:
                raise BadInputError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("n_z", "generator_hidden"):
            if getattr(self, name) < 1:
                raise BadInputError(f"{name} must be at least 1, got {getattr(self, name)}")


@dataclass
class DPDFDTrainConfig:
    """The alternating loop's settings (``train:`` in the recipe)."""
    backbone: str = "convnet:32"  # the student: no BatchNorm (GroupNorm per sample; BatchNorm would couple a batch)
    iterations: int = 2000
    batch_size: int = 256
    lr: float = 1e-3  # Adam, the student
    generator_lr: float = 1e-3  # Adam, the generator
    generator_steps: int = 1  # G steps per S step
    eval_every: int = 200  # test accuracy (and epsilon) recorded every this many iterations
    checkpoint_every: int = 200
    seed: int = 0
    device: str = "auto"
    checkpoint_dir: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("iterations", "batch_size", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise BadInputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.generator_steps < 0:
            raise BadInputError(f"generator_steps must be >= 0, got {self.generator_steps}")
        for name in ("lr", "generator_lr"):
            if not getattr(self, name) > 0:
                raise BadInputError(f"{name} must be positive, got {getattr(self, name)}")


@dataclass
class DPDFDExperimentConfig(DataFields):
    teacher: TeacherTrainConfig = field(default_factory=TeacherTrainConfig)  # a partial section keeps its defaults
    teacher_weights: str | None = None  # a saved state_dict of the teacher backbone (trained on [0, 1] pixels)
    train: DPDFDTrainConfig = field(default_factory=DPDFDTrainConfig)
    method: dict[str, Any] = field(default_factory=dict)


class DPDFD:
    name = "dpdfd"
    config_class = DPDFDConfig

    def __init__(self, config: DPDFDConfig | None = None):
        self.config = config or DPDFDConfig()


class PixelRange(nn.Module):
    """A [0, 1]-pixel network queried with [-1, 1] pixels: net((x + 1) / 2), a fixed affine map."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x + 1) / 2)


class Generator(nn.Module):
    """z (n_z) -> Linear -> BatchNorm -> ReLU -> Linear -> tanh, reshaped to ``shape`` (C, H, W)."""

    def __init__(self, n_z: int, hidden: int, shape: tuple[int, ...]):
        super().__init__()
        self.n_z, self.shape = n_z, tuple(shape)
        self.net = nn.Sequential(nn.Linear(n_z, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                                 nn.Linear(hidden, math.prod(shape)), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(len(z), *self.shape)


def per_sample_loss(student: torch.Tensor, teacher: torch.Tensor, loss: str, temperature: float) -> torch.Tensor:
    """l_i(s_i, t_i) for every row, (B,): L1 on logits / K, or T^2 KL(softmax(t/T) || softmax(s/T))."""
    if loss == "l1":
        return (student - teacher).abs().sum(1) / student.shape[1]
    log_p_t = (teacher / temperature).log_softmax(1)
    return temperature ** 2 * (log_p_t.exp() * (log_p_t - (student / temperature).log_softmax(1))).sum(1)


def generator_loss(student: nn.Module, x: torch.Tensor, balance_weight: float,
                   activation_weight: float = 0.0) -> torch.Tensor:
    """DAFL's terms with the student as the network: CE(logits, argmax) - beta * H(mean softmax)
    - alpha * mean |features| (the activation term, when alpha > 0)."""
    features = student.features(x)
    logits = student.classifier(features)
    confidence = nn.functional.cross_entropy(logits, logits.argmax(1))
    mean = logits.softmax(1).mean(0)
    loss = confidence + balance_weight * (mean * mean.clamp_min(1e-12).log()).sum()
    return loss - activation_weight * features.abs().mean() if activation_weight else loss


@torch.no_grad()
def query_teacher(teacher: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The teacher's logits: eval mode (its buffers fixed), no gradient."""
    teacher.eval()
    return teacher(x).float()


@contextlib.contextmanager
def frozen(model: nn.Module):
    """``model``'s parameters take no gradient inside the block (the student as a fixed discriminator)."""
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


class DPDFDTrainer:
    """The alternating S / G loop on one device, its random generators and its privacy ledger."""

    def __init__(self, teacher: nn.Module, student: nn.Module, generator: Generator, options: DPDFDConfig,
                 train: DPDFDTrainConfig, sigma: float, device: torch.device | str = "cpu"):
        from vision.distill.dp import PrivacyLedger

        self.teacher, self.student, self.generator = teacher, student, generator
        self.options, self.train, self.sigma, self.device = options, train, sigma, torch.device(device)
        self.student_optimizer = torch.optim.Adam(student.parameters(), lr=train.lr)
        self.generator_optimizer = torch.optim.Adam(generator.parameters(), lr=train.generator_lr)
        self.latent = torch.Generator().manual_seed(2 * train.seed + 1)  # z draws
        self.noise = torch.Generator().manual_seed(2 * train.seed + 2)  # the sanitiser's noise
        self.ledger = PrivacyLedger(sigma, options.sample_rate, releases_per_step(options, train))

    def _latent(self) -> torch.Tensor:
        return torch.randn(self.train.batch_size, self.generator.n_z, generator=self.latent).to(self.device)

    def student_step(self) -> dict[str, torch.Tensor]:
        """One sanitised S step on B fresh synthetic samples; the inputs and the upstream gradient."""
        batch, options = self.train.batch_size, self.options
        with torch.no_grad():
            x = self.generator(self._latent())
        t = query_teacher(self.teacher, x)
        s = self.student(x)
        self.student_optimizer.zero_grad(set_to_none=True)
        if options.sanitiser == "none":  # the non-private baseline
            per_sample_loss(s, t, options.loss, options.temperature).mean().backward()
            upstream = None
        else:
            from vision.distill.dp import sanitise

            (grad,) = torch.autograd.grad(per_sample_loss(s, t, options.loss, options.temperature).sum(), s,
                                          retain_graph=True)
            upstream, _ = sanitise(grad, options.clip_bound, self.sigma, self.noise)
            s.backward(upstream / batch)
        self.student_optimizer.step()
        self.ledger.step()
        return {"x": x, "upstream": upstream}

    def generator_step(self) -> float:
        """One G step with the student fixed: no teacher call."""
        with frozen(self.student):
            x = self.generator(self._latent())
            loss = generator_loss(self.student, x, self.options.balance_weight, self.options.activation_weight)
            self.generator_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.generator_optimizer.step()
        return float(loss.detach())

    def iteration(self) -> float | None:
        self.student_step()
        losses = [self.generator_step() for _ in range(self.train.generator_steps)]
        return losses[-1] if losses else None

    def random_generators(self) -> dict[str, torch.Generator]:
        return {"latent": self.latent, "noise": self.noise}

    def state_dict(self) -> dict[str, Any]:
        return {"student": self.student.state_dict(), "generator": self.generator.state_dict(),
                "student_optimizer": self.student_optimizer.state_dict(),
                "generator_optimizer": self.generator_optimizer.state_dict(), "ledger": self.ledger.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.student.load_state_dict(state["student"])
        self.generator.load_state_dict(state["generator"])
        self.student_optimizer.load_state_dict(state["student_optimizer"])
        self.generator_optimizer.load_state_dict(state["generator_optimizer"])
        self.ledger.load_state_dict(state["ledger"])


def releases_per_step(options: DPDFDConfig, train: DPDFDTrainConfig) -> int:
    return train.batch_size if options.releases_per_step is None else options.releases_per_step


def privacy_plan(options: DPDFDConfig, train: DPDFDTrainConfig) -> dict[str, Any]:
    """sigma and the planned epsilon of the whole run, checked before any work: a config whose
    fixed sigma exceeds the epsilon cap, or that under-counts releases, is refused."""
    from vision.distill.dp import plan_sigma, planned_epsilon

    per_step = releases_per_step(options, train)
    if per_step < train.batch_size:
        raise BadInputError(f"method.releases_per_step: {per_step} is below train.batch_size {train.batch_size}; "
                            "every sanitised row is one release")
    releases = train.iterations * per_step
    cap = min((c for c in (options.target_epsilon, options.max_epsilon) if c is not None), default=None)
    if options.sanitiser == "none":
        if options.noise_multiplier or cap is not None:
            raise BadInputError("method.sanitiser: 'none' is the non-private baseline; set noise_multiplier: 0, "
                                "target_epsilon: null and max_epsilon: null")
        sigma, source = 0.0, "none (non-private baseline)"
    elif options.noise_multiplier is None:
        if options.target_epsilon is None:
            raise BadInputError("method.noise_multiplier: null needs a method.target_epsilon to plan sigma "
                                "(noise_multiplier: 0 and target_epsilon: null for a non-private run)")
        sigma = plan_sigma(options.target_epsilon, options.delta, releases, options.sample_rate)
        source = "get_noise_multiplier(target_epsilon)"
    else:
        sigma, source = options.noise_multiplier, "fixed"
    epsilon = planned_epsilon(sigma, releases, options.sample_rate, options.delta)
    if cap is not None and epsilon > cap:
        raise BadInputError(f"method.noise_multiplier: sigma {sigma} over train.iterations {train.iterations} x "
                            f"{per_step} releases gives epsilon {epsilon:.4g} at delta {options.delta}, above the "
                            f"cap {cap} (max_epsilon/target_epsilon); raise sigma or lower the iterations")
    return {"sigma": sigma, "sigma_source": source, "planned_epsilon": epsilon, "releases_planned": releases,
            "releases_per_step": per_step, "sample_rate": options.sample_rate, "delta": options.delta,
            "noise_std": 2 * options.clip_bound * sigma, "clip_bound": options.clip_bound,
            "epsilon_cap": cap, "accountant": "opacus.accountants.RDPAccountant",
            "adjacency": "replace one record of the teacher's training set (sensitivity 2C per row)",
            "amplification": "none (sample_rate 1)" if options.sample_rate == 1 else
                             f"ASSUMED sample_rate {options.sample_rate} (not justified by this protocol)"}


CHECKPOINT_FORMAT = 1


def checkpoint_path(config: DPDFDExperimentConfig, options: DPDFDConfig, teacher_digest: str) -> Path | None:
    """``train.checkpoint_dir``/dpdfd-<key>.pt, the key a digest of every setting that changes the run."""
    from curate.core.cache import digest

    if not config.train.checkpoint_dir:
        return None
    settings = asdict(config)
    settings["train"] = {k: v for k, v in settings["train"].items() if k not in ("checkpoint_dir", "progress", "device")}
    key = digest(json.dumps([CHECKPOINT_FORMAT, asdict(options), settings, teacher_digest], sort_keys=True, default=str))
    return Path(config.train.checkpoint_dir) / f"dpdfd-{key}.pt"


def run_dpdfd_experiment(method: DPDFD, config: DPDFDExperimentConfig) -> dict[str, Any]:
    """Plan the privacy budget (refusing an over-budget config), train (or load) the teacher on the
    training split, run the alternating loop, test the student on the test split: the result JSON."""
    from tqdm.auto import tqdm

    from curate.core.device import resolve_device
    from vision import rng
    from vision.backbones import build_backbone
    from vision.data import load_images
    from vision.distill.base import weights_digest
    from vision.distill.experiment import train_teacher
    from vision.train import kill_hook, predict, save_checkpoint

    options, train = method.config, config.train
    privacy = privacy_plan(options, train)  # before any data is loaded
    data = load_images(config.dataset, root=config.root, seed=config.seed, image_size=config.image_size)
    teacher, teacher_summary = train_teacher(data, config)  # trained on the training split only
    device = resolve_device(train.device)
    rng.seed_globals(train.seed)
    student = build_backbone(train.backbone, data.channels, data.num_classes, data.image_size, train.seed).to(device)
    torch.manual_seed(train.seed + 1)
    generator = Generator(options.n_z, options.generator_hidden,
                          (data.channels, data.image_size, data.image_size)).to(device)
    trainer = DPDFDTrainer(PixelRange(teacher).to(device), student, generator, options, train,
                           privacy["sigma"], device)
    test_images = data.test_images * 2 - 1  # the student's (and generator's) pixel range

    def accuracy() -> float:
        return float((predict(student, test_images).argmax(1).cpu() == data.test_labels).float().mean())

    initial = accuracy()  # the random-init student
    history: list[dict[str, Any]] = []
    start = 0
    checkpoint = checkpoint_path(config, options, weights_digest(teacher))
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        trainer.load_state_dict(state["trainer"])
        rng.restore(state["rng"], trainer.random_generators())
        history, start = state["history"], state["iteration"]
    started = time.monotonic()
    bar = tqdm(range(start, train.iterations), desc=f"dpdfd ({data.name})", unit="it", disable=not train.progress)
    student.train()
    generator.train()
    for it in bar:
        generator_loss_value = trainer.iteration()
        done = it + 1
        if done % train.eval_every == 0 or done == train.iterations:
            history.append({"iteration": done, "generator_loss": generator_loss_value, "test_accuracy": accuracy(),
                            "epsilon": finite_or_none(trainer.ledger.epsilon(options.delta))})
            bar.set_postfix(acc=f"{history[-1]['test_accuracy']:.3f}")
        if checkpoint is not None and (done % train.checkpoint_every == 0 or done == train.iterations):
            save_checkpoint(checkpoint, {"trainer": trainer.state_dict(), "rng": rng.capture(trainer.random_generators()),
                                         "history": history, "iteration": done})
            kill_hook(done)
    final_accuracy = accuracy()
    epsilon = trainer.ledger.epsilon(options.delta)
    privacy.update(epsilon=finite_or_none(epsilon), planned_epsilon=finite_or_none(privacy["planned_epsilon"]),
                   releases=trainer.ledger.releases)
    eps_text = "inf (non-private)" if math.isinf(epsilon) else f"{epsilon:.3g}"
    summary = (f"student ({train.backbone}) test accuracy {100 * final_accuracy:.1f}% on {data.name} at epsilon "
               f"{eps_text} (delta {options.delta:g}, sigma {privacy['sigma']:.4g}, {trainer.ledger.releases} "
               f"releases, q={options.sample_rate:g}); teacher ({teacher_summary['backbone']}) "
               f"{100 * teacher_summary['test_accuracy']:.1f}%; random-init student {100 * initial:.1f}%")
    return {"method": method.name, "dataset": data.name, "config": asdict(train), "options": asdict(options),
            "teacher": teacher_summary, "privacy": privacy,
            "metadata": {"loss": options.loss, "generator_loss": "dafl (student as fixed discriminator)",
                         "sanitiser": options.sanitiser, "noise": "per sample, N(0, (2 C sigma)^2) per logit",
                         "pixel_range": "[-1, 1]; the teacher (trained on [0, 1]) sees (x + 1) / 2",
                         "teacher_calls_per_iteration": 1, "teacher_rows_per_iteration": train.batch_size},
            "history": history, "seconds": round(time.monotonic() - started, 3),
            "final": {"test_accuracy": final_accuracy, "initial_test_accuracy": initial,
                      "epsilon": finite_or_none(epsilon)},
            "summary": summary}


def finite_or_none(epsilon: float) -> float | None:
    """epsilon for the result JSON: None (null) for an infinite, non-private one (JSON has no inf)."""
    return None if math.isinf(epsilon) else epsilon

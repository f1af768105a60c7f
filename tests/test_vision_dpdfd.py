"""DPDFD (:mod:`vision.distill.dpdfd`, :mod:`vision.distill.dp`): the spec's three property tests
(sanitiser; isolation / post-processing; accountant), bad input, the CLI's one-line summary, and
resume after SIGKILL.

Plausible wrong implementations killed (each a mutant in tests/mutants.py): clipping instead of
normalising; noise std sigma or sigma*C instead of 2*C*sigma; one noise draw for the whole batch;
noise added to the parameter gradients after back-propagating the clean rows; a generator loss that
queries the teacher (DAFL with the teacher: an unaccounted leak); plain ``loss.backward()`` on the
student; a teacher queried in train mode (its BatchNorm buffers move); one release per iteration;
silent subsampling amplification (q = B/|D|); a resume that drops the accountant or the sanitiser's
random state.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from curate.cli import main as curate_main
from curate.core.errors import BadInputError
from forked import run_forked
from vision.distill.dp import PrivacyLedger, plan_sigma, planned_epsilon, sanitise
from vision.distill.dpdfd import (DPDFDConfig, DPDFDTrainConfig, DPDFDTrainer, Generator, PixelRange,
                                  per_sample_loss, privacy_plan)
from vision.run import build_config
from vision.train import KILL_AFTER_EPOCH

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "vision" / "dpdfd.yaml"
FEATURES, CLASSES = 20, 5  # the spec's CPU unit-test setting: make_classification vectors, an MLP G


class CountingTeacher(nn.Module):
    """A teacher with BatchNorm that counts its forward calls and rows (in train mode, not frozen:
    the loop itself must query it in eval mode without gradients)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(11)
        self.net = nn.Sequential(nn.Linear(FEATURES, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, CLASSES))
        with torch.no_grad():  # non-trivial running statistics
            self.net[1].running_mean.uniform_(-1, 1)
            self.net[1].running_var.uniform_(0.5, 2)
        self.calls, self.rows = 0, 0

    def forward(self, x):
        self.calls, self.rows = self.calls + 1, self.rows + len(x)
        return self.net(x)


class LinearStudent(nn.Module):
    """s = W x + b, with the backbone interface (features, classifier)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(12)
        self.classifier = nn.Linear(FEATURES, CLASSES)

    def features(self, x):
        return x

    def forward(self, x):
        return self.classifier(x)


def _trainer(sigma: float = 0.0, batch: int = 64, loss: str = "l1", clip_bound: float = 1.0,
             student: nn.Module | None = None) -> tuple[DPDFDTrainer, CountingTeacher]:
    teacher = CountingTeacher()
    torch.manual_seed(13)
    generator = Generator(16, 32, (FEATURES,))
    options = DPDFDConfig(loss=loss, clip_bound=clip_bound, noise_multiplier=sigma, target_epsilon=None)
    train = DPDFDTrainConfig(backbone="mlp:8", iterations=10, batch_size=batch, seed=5, device="cpu", progress=False)
    return DPDFDTrainer(teacher, student or LinearStudent(), generator, options, train, sigma), teacher


# -- 1. sanitiser --------------------------------------------------------------------------------

def test_sanitiser_normalises_every_row_to_norm_c_and_scales_small_gradients_up():
    # Kills clipping (min(C/||g||, 1)): the 0.01 C row would stay at 0.01 C.
    bound = 2.0
    grad = torch.randn(50, CLASSES, generator=torch.Generator().manual_seed(0)) * 5
    grad[0] = grad[0] / grad[0].norm() * 0.01 * bound  # a tiny true gradient
    grad[1] = 0.0
    noised, normalised = sanitise(grad, bound, sigma=0.0)
    torch.testing.assert_close(noised, normalised)
    norms = normalised.norm(dim=1)
    assert torch.equal(normalised[1], torch.zeros(CLASSES))  # a zero gradient stays 0
    torch.testing.assert_close(norms[[0, *range(2, 50)]], torch.full((49,), bound), rtol=0, atol=1e-5)
    torch.testing.assert_close(normalised[0], grad[0] / (0.01))  # scaled UP by 100, same direction


def test_sanitiser_noise_is_per_sample_with_std_two_c_sigma():
    # Kills noise std sigma or sigma*C (C = 2 tells 2C sigma = 2.8 from sigma = 0.7 and C sigma = 1.4),
    # and one noise draw shared by the batch (zero spread across rows, correlation 1).
    bound, sigma = 2.0, 0.7
    grad = torch.randn(10_000, CLASSES, generator=torch.Generator().manual_seed(1))
    noised, normalised = sanitise(grad, bound, sigma, torch.Generator().manual_seed(2))
    noise = (noised - normalised).numpy()
    std = noise.std(axis=0)
    assert np.all(np.abs(std / (2 * bound * sigma) - 1) < 0.03), std
    corr = np.corrcoef(noise[0::2].ravel(), noise[1::2].ravel())[0, 1]
    assert abs(corr) < 0.05  # independent across samples
    assert abs(np.corrcoef(noise[:, 0], noise[:, 1])[0, 1]) < 0.05  # and across logits


def test_the_student_takes_exactly_the_sanitised_rows_as_its_upstream_gradient():
    # Kills noising after back-propagation (clean rows into S, noise on the parameter gradients):
    # the parameter gradient must be J^T g_tilde / B for the noised rows the sanitiser released.
    trainer, _ = _trainer(sigma=0.5, batch=64)
    weight = trainer.student.classifier.weight
    out = trainer.student_step()
    upstream, x = out["upstream"], out["x"]
    assert upstream is not None and upstream.shape == (64, CLASSES)
    assert float((upstream.norm(dim=1) - 1).abs().max()) > 0.1  # noised: rows are no longer of norm C
    torch.testing.assert_close(weight.grad, upstream.T @ x / 64, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(trainer.student.classifier.bias.grad, upstream.sum(0) / 64, rtol=1e-5, atol=1e-6)


# -- 2. isolation / post-processing --------------------------------------------------------------

def test_generator_step_makes_no_teacher_call_and_student_step_one_on_b_rows():
    # Kills a generator loss that queries the teacher (DAFL with T as the discriminator: a leak the
    # accountant does not count) and a student step that queries it more than once.
    trainer, teacher = _trainer(batch=32)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    generator_before = [p.clone() for p in trainer.generator.parameters()]
    trainer.generator_step()
    assert (teacher.calls, teacher.rows) == (0, 0)
    assert any(not torch.equal(a, b) for a, b in zip(generator_before, trainer.generator.parameters()))
    assert all(p.grad is None for p in trainer.student.parameters())  # S fixed in the G step
    trainer.student_step()
    assert (teacher.calls, teacher.rows) == (1, 32)
    trainer.iteration()
    assert (teacher.calls, teacher.rows) == (2, 64)
    # The teacher is untouched: parameters, BatchNorm buffers (eval mode), no gradient.
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in teacher.parameters())


def test_linear_student_gradient_is_the_mean_of_normalised_rows_times_inputs():
    # Kills plain loss.backward() on S (the raw L1 gradient sign(s - t)/K, not of norm C) and a
    # teacher queried in train mode (other targets t). sigma = 0, by hand: dW = (1/B) sum_i gbar_i x_i^T.
    for loss in ("l1", "kl"):
        trainer, teacher = _trainer(sigma=0.0, batch=48, loss=loss, clip_bound=3.0)
        w0 = trainer.student.classifier.weight.detach().clone()
        b0 = trainer.student.classifier.bias.detach().clone()
        out = trainer.student_step()
        x = out["x"]
        teacher.eval()
        with torch.no_grad():
            t = teacher(x)
        s = (x @ w0.T + b0).requires_grad_(True)
        (g,) = torch.autograd.grad(per_sample_loss(s, t, loss, 4.0).sum(), s)
        gbar = 3.0 * g / g.norm(dim=1, keepdim=True)
        torch.testing.assert_close(out["upstream"], gbar, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(trainer.student.classifier.weight.grad, gbar.T @ x / 48, rtol=1e-5, atol=1e-6)


def test_the_teacher_sees_generator_pixels_through_the_fixed_affine_map():
    # The generator's tanh range [-1, 1] is the teacher's [0, 1]: -1 -> 0, 1 -> 1, 0 -> 0.5.
    probe = nn.Identity()
    x = torch.tensor([[-1.0, 0.0, 1.0]])
    torch.testing.assert_close(PixelRange(probe)(x), torch.tensor([[0.0, 0.5, 1.0]]))


# -- 3. accountant -------------------------------------------------------------------------------

def _closed_form(releases: int, sigma: float, delta: float) -> float:
    from opacus.accountants import RDPAccountant

    return min(releases * a / (2 * sigma ** 2) - (math.log(delta) + math.log(a)) / (a - 1) + math.log((a - 1) / a)
               for a in RDPAccountant.DEFAULT_ALPHAS)


def test_after_n_iterations_the_trainer_counted_n_b_releases_and_epsilon_is_the_q1_formula():
    # Kills one release per iteration (a counter of n, or an accountant stepped once per
    # iteration) and silent amplification (the trainer's accountant at q = B/|D|).
    sigma, batch, delta = 3.0, 16, 1e-5
    trainer, _ = _trainer(sigma=sigma, batch=batch)
    epsilons = []
    for n in range(1, 4):
        trainer.iteration()
        assert trainer.ledger.releases == n * batch
        epsilons.append(trainer.ledger.epsilon(delta))
        assert abs(epsilons[-1] - _closed_form(n * batch, sigma, delta)) < 1e-6
    assert epsilons[0] < epsilons[1] < epsilons[2]  # grows with n
    from opacus.accountants import RDPAccountant

    subsampled = RDPAccountant()
    for _ in range(3 * batch):
        subsampled.step(noise_multiplier=sigma, sample_rate=batch / 1437)
    with warnings.catch_warnings():  # Opacus: "optimal order is the largest alpha" (still a valid bound)
        warnings.simplefilter("ignore")
        assert epsilons[-1] > subsampled.get_epsilon(delta)  # no amplification by subsampling


def test_ledger_matches_the_spec_numbers_falls_with_sigma_and_is_inf_without_noise():
    releases, delta = 200 * 64, 1e-5
    assert abs(planned_epsilon(55.0, releases, 1.0, delta) - 11.10) < 0.01  # the spec's Opacus values
    assert abs(planned_epsilon(60.0, releases, 1.0, delta) - 9.98) < 0.01
    ledger = PrivacyLedger(4.0, 1.0, 8)
    for _ in range(5):
        ledger.step()
    assert ledger.releases == 40 and abs(ledger.epsilon(delta) - _closed_form(40, 4.0, delta)) < 1e-6
    assert abs(ledger.epsilon(delta) - planned_epsilon(4.0, 40, 1.0, delta)) < 1e-9  # the planner agrees
    assert planned_epsilon(8.0, 40, 1.0, delta) < ledger.epsilon(delta)  # falls with sigma
    free = PrivacyLedger(0.0, 1.0, 8)
    free.step()
    assert free.releases == 8 and math.isinf(free.epsilon(delta))


@pytest.mark.parametrize("target", [1.0, 10.0])
def test_planned_sigma_reaches_the_target_epsilon(target):
    options = DPDFDConfig(target_epsilon=target)
    train = DPDFDTrainConfig(iterations=100, batch_size=64)
    plan = privacy_plan(options, train)
    assert plan["releases_planned"] == 6400 and plan["releases_per_step"] == 64 and plan["sample_rate"] == 1.0
    assert target - 0.01 <= plan["planned_epsilon"] <= target
    assert plan["sigma"] == plan_sigma(target, 1e-5, 6400, 1.0)
    assert plan["noise_std"] == 2 * plan["sigma"]


# -- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("method, train, message", [
    ({"noise_multiplier": 1.0, "max_epsilon": 5.0, "target_epsilon": None}, {}, "above the cap 5.0"),
    ({"noise_multiplier": 0.0}, {}, "epsilon inf"),  # non-private needs target_epsilon: null
    ({"noise_multiplier": None, "target_epsilon": None}, {}, "needs a method.target_epsilon"),
    ({"releases_per_step": 1}, {}, "method.releases_per_step: 1 is below train.batch_size 128"),
    ({"sanitiser": "none"}, {}, "'none' is the non-private baseline"),
    ({"loss": "mse"}, {}, "method: loss must be one of l1, kl, got 'mse'"),
    ({"los": "l1"}, {}, "unknown field 'method.los' (did you mean 'method.loss'?)"),
    ({}, {"epochs": 3}, "unknown field 'train.epochs'"),
    ({}, {"iterations": 0}, "train: iterations must be at least 1, got 0"),
    ({"delta": 2.0}, {}, "method: delta must be in (0, 1), got 2.0"),
])
def test_a_bad_config_is_one_line_exit_2_before_any_data(tmp_path, capsys, monkeypatch, method, train, message):
    def refuse(*args, **kwargs):
        raise AssertionError("data loaded before the config was checked")

    monkeypatch.setattr("vision.data.load_images", refuse)
    config = yaml.safe_load(RECIPE.read_text())
    config["method"].update(method)
    config["train"].update(train)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "out" / "r.json"
    assert curate_main(["vision", "dpdfd", "--config", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert message in err
    assert not (tmp_path / "out").exists()


def test_the_recipe_loads_into_the_methods_own_experiment_config():
    from vision.distill.dpdfd import DPDFDExperimentConfig

    config = build_config(yaml.safe_load(RECIPE.read_text()), "dpdfd")
    assert isinstance(config, DPDFDExperimentConfig) and isinstance(config.train, DPDFDTrainConfig)
    assert config.method["target_epsilon"] == 10.0 and config.method["sample_rate"] == 1.0
    with pytest.raises(BadInputError, match="noise_multiplier must be >= 0"):
        DPDFDConfig(noise_multiplier=-1.0)


# -- the CLI and resume ---------------------------------------------------------------------------

def _small(tmp_path: Path, **method) -> dict:
    """The recipe, cut to seconds: an MLP teacher for 2 epochs, 6 iterations of batch 32."""
    config = yaml.safe_load(RECIPE.read_text())
    config["teacher"] = {"backbone": "mlp:32", "epochs": 2, "warmup_epochs": 0, "progress": False, "device": "cpu"}
    config["train"].update(backbone="mlp:16", iterations=6, batch_size=32, eval_every=2, checkpoint_every=2,
                           progress=False, device="cpu")
    config["method"].update(method)
    return config


def test_the_cli_prints_a_one_line_summary_with_epsilon(tmp_path, capsys):
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(_small(tmp_path, target_epsilon=5.0)))
    out = tmp_path / "r.json"
    assert curate_main(["vision", "dpdfd", "--config", str(path), "--out", str(out)]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("dpdfd: student (mlp:16) test accuracy") and "at epsilon" in line and "192 releases" in line
    result = json.loads(out.read_text())
    privacy = result["privacy"]
    assert privacy["releases"] == 6 * 32 and privacy["releases_per_step"] == 32 and privacy["sample_rate"] == 1.0
    assert 4.99 <= privacy["epsilon"] <= 5.0 and privacy["sigma_source"].startswith("get_noise_multiplier")
    assert result["metadata"]["loss"] == "l1" and len(result["history"]) == 3


def _child(config: dict, checkpoint_dir: Path, kill_after: int | None) -> None:
    torch.set_num_threads(1)
    if kill_after is not None:
        os.environ[KILL_AFTER_EPOCH] = str(kill_after)
    from vision.run import run_experiment

    config = {**config, "train": {**config["train"], "checkpoint_dir": str(checkpoint_dir)}}
    result = run_experiment("dpdfd", config)
    (checkpoint_dir / "result.json").write_text(json.dumps({k: result[k] for k in ("history", "final", "privacy")}))


def _run(config: dict, checkpoint_dir: Path, kill_after: int | None = None) -> int:
    return run_forked(_child, config, checkpoint_dir, kill_after)


def test_a_run_killed_after_iteration_four_resumes_to_the_uninterrupted_result(tmp_path):
    # Kills a checkpoint without the accountant (epsilon and the release count restart) or without
    # the latent / noise generators (other z and other noise after the resume).
    config = _small(tmp_path, noise_multiplier=2.0, target_epsilon=None)
    assert _run(config, tmp_path / "straight") == 0
    assert _run(config, tmp_path / "killed", kill_after=4) == -9  # SIGKILL after the iteration-4 checkpoint
    assert not (tmp_path / "killed" / "result.json").exists()
    assert _run(config, tmp_path / "killed") == 0
    straight, resumed = (json.loads((tmp_path / d / "result.json").read_text()) for d in ("straight", "killed"))
    assert resumed == straight
    assert straight["privacy"]["releases"] == 6 * 32 and math.isfinite(straight["privacy"]["epsilon"])
    states = [torch.load(next((tmp_path / d).glob("dpdfd-*.pt")), weights_only=False)["trainer"]
              for d in ("straight", "killed")]
    for part in ("student", "generator"):
        for key, value in states[0][part].items():
            torch.testing.assert_close(states[1][part][key], value, rtol=0, atol=1e-6, msg=key)


def test_a_partial_teacher_section_keeps_the_teachers_defaults():
    # Kills a teacher section typed as plain TrainConfig: `teacher: {epochs: 3}` then got the
    # generic warmup_epochs 5 and was refused (warmup > epochs) instead of training a teacher.
    from vision.run import build_config

    config = build_config({"teacher": {"epochs": 3}}, "dpdfd")
    assert (config.teacher.epochs, config.teacher.warmup_epochs, config.teacher.backbone) == (3, 0, "convnet")

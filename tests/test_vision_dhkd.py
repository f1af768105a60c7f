"""DHKD (:mod:`vision.distill.dhkd`): the spec's three property tests (gradient routing through the
two heads, BinaryKL-Norm as a logit-level loss, the GA projection), the single-head ablation, the
options, resume after SIGKILL, and the command line."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from torch import nn
from torch.nn import functional as F

from curate.cli import main as curate_main
from forked import run_forked
from vision.backbones import build_backbone
from vision.distill.dhkd import DHKD, DHKDConfig, DualHead, align_gradients, aligned_backward, bkl_norm
from vision.distill.kd import softmax_kd
from vision.train import KILL_AFTER_EPOCH, Batch, TrainConfig, fit

ROOT = Path(__file__).resolve().parents[1]
DATA = SimpleNamespace(num_classes=10)


def _batch(n: int = 32, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)
    return Batch(torch.arange(n), y, x, x, torch.ones(n, dtype=torch.bool), epoch=0)


def _method(**options) -> tuple[DHKD, nn.Module]:
    """A DHKD student (mlp:16 backbone, its auxiliary head built) with a random teacher."""
    method = DHKD(DHKDConfig(**options))
    method.set_teacher(build_backbone("mlp:24", 1, 10, 8, seed=1))
    model = build_backbone("mlp:16", 1, 10, 8, seed=0)
    method.modules(model, DATA)
    model.train()
    if method.dual is not None:
        method.dual.aux.train()
    return method, model


def _grads(loss: torch.Tensor, params: list[nn.Parameter]) -> list[torch.Tensor]:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]


# -- 1. gradient routing ------------------------------------------------------------------------
def test_each_loss_reaches_its_own_head_and_both_reach_the_backbone():
    # Kills both losses on one head (BKL on z1), an auxiliary head fed a detached feature (no BKL
    # gradient in the backbone), and a loss that is not gamma * CE(z1) + alpha * BKL-Norm(z2).
    method, model = _method(gamma=0.7, alpha=1.3)
    assert isinstance(method.dual, DualHead) and method.dual.backbone is model
    batch = _batch()
    torch.manual_seed(5)  # the auxiliary head's dropout: the same mask in both forward passes
    ce, distill = method.loss(model, batch)
    torch.manual_seed(5)
    z1, z2 = method.dual.both(batch.weak)
    teacher = method.teacher_logits(batch.weak)
    assert ce.item() == pytest.approx(0.7 * F.cross_entropy(z1, batch.labels).item(), rel=1e-6)
    assert distill.item() == pytest.approx(1.3 * bkl_norm(z2, teacher, 2.0).item(), rel=1e-6)
    main, aux, body = list(model.classifier.parameters()), list(method.dual.aux.parameters()), list(model.body.parameters())
    for g in _grads(distill, main) + _grads(ce, aux):
        assert torch.count_nonzero(g) == 0  # exactly zero
    for loss in (ce, distill):
        assert all(torch.count_nonzero(g) > 0 for g in _grads(loss, body))
    assert all(torch.count_nonzero(g) > 0 for g in _grads(ce, main) + _grads(distill, aux))


def test_prediction_uses_the_main_head_only():
    # Kills inference from z2 or from z1 + z2 (the auxiliary head is for training only) and an
    # auxiliary head left in train mode at test time.
    method, model = _method()
    with torch.no_grad():
        model.classifier.weight.mul_(3)  # z1 and z2 disagree on many rows (so the test can fail)
    images = _batch(64, seed=2).weak
    model.train()
    predicted = method.predict(model, images)
    model.eval()
    method.dual.aux.eval()
    with torch.no_grad():
        z1, z2 = method.dual.both(images)
    torch.testing.assert_close(predicted, z1)
    assert (z2.argmax(1) != z1.argmax(1)).any() and ((z1 + z2).argmax(1) != z1.argmax(1)).any()
    method.dual.eval()
    assert torch.equal(method.dual(images), z1)


def test_softmax_kd_option_sits_on_the_main_head():
    # Kills a kd_weight term on the auxiliary head: softmax-KD (T = kd_temperature) is on z1.
    method, model = _method(alpha=0.0, kd_weight=0.5, kd_temperature=3.0)
    batch = _batch()
    _, distill = method.loss(model, batch)
    z1, _ = method.dual.both(batch.weak)
    assert distill.item() == pytest.approx(0.5 * softmax_kd(z1, method.teacher_logits(batch.weak), 3.0).item(), rel=1e-6)
    assert all(torch.count_nonzero(g) == 0 for g in _grads(distill, list(method.dual.aux.parameters())))
    assert all(torch.count_nonzero(g) > 0 for g in _grads(distill, list(model.classifier.parameters())))


def test_single_head_ablation_puts_both_losses_on_the_one_classifier():
    method, model = _method(heads="single")
    assert method.dual is None and method.modules(model, DATA) == {}
    ce, distill = method.loss(model, _batch())
    assert all(torch.count_nonzero(g) > 0 for g in _grads(distill, list(model.classifier.parameters())))


def test_alpha_is_zero_from_alpha_epochs_on():
    method, model = _method(alpha_epochs=3)
    batch = _batch()
    assert method.loss(model, batch)[1].item() > 0
    batch.epoch = 3
    assert method.loss(model, batch)[1].item() == 0


def test_the_linear_auxiliary_head_is_one_layer():
    method, model = _method(aux="linear")
    assert isinstance(method.dual.aux, nn.Linear) and method.dual.aux.in_features == model.feature_dim
    mlp = _method()[0].dual.aux
    assert [type(m) for m in mlp] == [nn.Linear, nn.Dropout, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert mlp[0].out_features == 200 and mlp[1].p == 0.1 and mlp[4].out_features == 10


# -- 2. BinaryKL-Norm ---------------------------------------------------------------------------
def _np_log_cosh_loss(z: np.ndarray, zt: np.ndarray, t: float) -> float:
    return t ** 2 * float(np.mean(np.sum(np.log(np.cosh((z - zt) / (2 * t))), axis=1)))


def _np_bernoulli_kl_loss(z: np.ndarray, zt: np.ndarray, t: float) -> float:
    """T^2 / B * sum KL(Bern(1/2) || Bern(sigmoid((z - zt) / T))), the code's definition."""
    s = 1 / (1 + np.exp(-(z - zt) / t))
    return t ** 2 * float(np.sum(0.5 * np.log(0.5 / s) + 0.5 * np.log(0.5 / (1 - s)))) / len(z)


def test_bkl_norm_is_t2_log_cosh_and_a_logit_level_loss():
    # Kills a softmax-based "logit" loss (shift-invariant: 0 after the shift), a mean over classes
    # in place of the sum, a missing T^2, the saturating BinaryKL (KL between the two sigmoids: not
    # a function of z - zt), and sigmoid + clamp(1e-8) (wrong once |z - zt| / T is past ~18).
    rng = np.random.default_rng(0)
    z, zt = rng.normal(0, 3, (5, 7)), rng.normal(0, 3, (5, 7))
    tz, tzt = torch.tensor(z), torch.tensor(zt)
    for t in (1.0, 2.0, 4.0):
        got = float(bkl_norm(tz, tzt, t))
        assert got == pytest.approx(_np_log_cosh_loss(z, zt, t), abs=1e-5, rel=1e-6)
        assert got == pytest.approx(_np_bernoulli_kl_loss(z, zt, t), abs=1e-5, rel=1e-6)
        assert got > 0 and float(bkl_norm(tzt, tzt, t)) == 0
        assert float(bkl_norm(tz + 5.0, tzt + 5.0, t)) == pytest.approx(got, abs=1e-5)  # shift both: unchanged
        for c in (0.5, -3.0):  # from z = zt, shift the student's logits by c: C T^2 log cosh(c / 2T) per sample
            assert float(bkl_norm(tzt + c, tzt, t)) == pytest.approx(7 * t ** 2 * math.log(math.cosh(c / (2 * t))), abs=1e-5)
            assert float(softmax_kd(tzt + c, tzt, t)) == pytest.approx(0, abs=1e-6)
    far = torch.zeros(2, 3)
    far[0, 0] = 100.0  # |u| = 25 at T = 2: log cosh 25 = 25 - log 2 to double precision
    assert float(bkl_norm(far, torch.zeros(2, 3), 2.0)) == pytest.approx(4 * (25 - math.log(2)) / 2, rel=1e-6)


def test_bkl_norm_gradient_is_bounded_and_a_function_of_the_difference():
    z = torch.tensor([[40.0, -3.0, 0.5]], requires_grad=True)
    (g,) = torch.autograd.grad(bkl_norm(z, torch.zeros(1, 3), 2.0), z)
    torch.testing.assert_close(g, (2.0 / 2) * torch.tanh(z.detach() / 4.0))


# -- 3. GA projection ---------------------------------------------------------------------------
def test_ga_keeps_agreeing_gradients_and_projects_conflicting_ones_off_ce():
    # Kills symmetric PCGrad (CE's gradient projected too) and a projection applied whatever the
    # sign of the dot product.
    rng = np.random.default_rng(0)
    g_ce = torch.tensor(rng.normal(size=50))
    agreeing = torch.tensor(rng.normal(size=50))
    agreeing = agreeing if torch.dot(agreeing, g_ce) >= 0 else -agreeing
    assert torch.equal(align_gradients(g_ce, agreeing), g_ce + agreeing)
    orthogonal = torch.tensor(rng.normal(size=50))
    orthogonal = orthogonal - torch.dot(orthogonal, g_ce) / torch.dot(g_ce, g_ce) * g_ce
    torch.testing.assert_close(align_gradients(g_ce, orthogonal), g_ce + orthogonal)
    conflicting = -agreeing
    out = align_gradients(g_ce, conflicting)
    projected = conflicting - torch.dot(conflicting, g_ce) / torch.dot(g_ce, g_ce) * g_ce
    torch.testing.assert_close(out - g_ce, projected)  # CE's gradient untouched
    assert abs(float(torch.dot(out - g_ce, g_ce))) < 1e-9 * float(g_ce.norm() * conflicting.norm())
    assert float(torch.dot(out, g_ce)) >= 0


def _linear_losses(c_ce: list[list[float]], c_kd: list[list[float]]):
    """Two parameters and two losses linear in them, so the gradients are the given vectors."""
    params = [nn.Parameter(torch.zeros(2, dtype=torch.float64)), nn.Parameter(torch.zeros(1, dtype=torch.float64))]
    loss = lambda c: sum((torch.tensor(v, dtype=torch.float64) * p).sum() for v, p in zip(c, params))  # noqa: E731
    return params, loss(c_ce), loss(c_kd)


def test_ga_projects_the_globally_flattened_gradient_not_each_layer():
    # Kills a per-layer projection: the first parameter's gradients conflict (dot -0.5), the
    # global ones agree (dot 2.5), so nothing may be projected; and, when the global ones conflict,
    # every parameter gets the global projection.
    params, ce, kd = _linear_losses([[1.0, 0.0], [1.0]], [[-0.5, 0.0], [3.0]])
    aligned_backward(ce, kd, params)
    assert torch.equal(params[0].grad, torch.tensor([0.5, 0.0], dtype=torch.float64))
    assert torch.equal(params[1].grad, torch.tensor([4.0], dtype=torch.float64))
    params, ce, kd = _linear_losses([[1.0, 0.0], [1.0]], [[-2.0, 1.0], [0.5]])  # global dot -1.5
    aligned_backward(ce, kd, params)
    g_ce, g_kd = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64), torch.tensor([-2.0, 1.0, 0.5], dtype=torch.float64)
    expected = g_ce + g_kd - torch.dot(g_kd, g_ce) / torch.dot(g_ce, g_ce) * g_ce
    torch.testing.assert_close(torch.cat([params[0].grad, params[1].grad]), expected)


def test_dhkd_backward_aligns_only_with_ga_on():
    for ga in (True, False):
        method = DHKD(DHKDConfig(ga=ga))
        params, ce, kd = _linear_losses([[1.0, 0.0], [1.0]], [[-2.0, 1.0], [0.5]])
        method.backward((ce, kd), params)
        plain = torch.tensor([-1.0, 1.0, 1.5], dtype=torch.float64)
        got = torch.cat([params[0].grad, params[1].grad])
        assert torch.equal(got, plain) != ga


def test_a_parameter_no_loss_reaches_gets_a_zero_gradient():
    params, ce, kd = _linear_losses([[1.0, 0.0], [1.0]], [[-2.0, 1.0], [0.5]])
    unused = nn.Parameter(torch.ones(3, dtype=torch.float64))
    aligned_backward(ce, kd, [*params, unused])
    assert torch.equal(unused.grad, torch.zeros(3, dtype=torch.float64))


# -- options, training, resume, command line ----------------------------------------------------
@pytest.mark.parametrize("bad, message", [
    ({"gamma": -1.0}, "gamma must be >= 0, got -1.0"), ({"temperature": 0.0}, "temperature must be positive"),
    ({"aux": "conv"}, "aux must be one of mlp, linear, got 'conv'"),
    ({"heads": "triple"}, "heads must be one of dual, single, got 'triple'"),
    ({"alpha_epochs": -2}, "alpha_epochs must be >= 0 or null, got -2"), ({"aux_hidden": 0}, "aux_hidden must be at least 1"),
])
def test_bad_options_are_refused(bad, message):
    with pytest.raises(Exception, match=message):
        DHKDConfig(**bad)


def _recipe() -> dict:
    return yaml.safe_load((ROOT / "recipes" / "vision" / "dhkd.yaml").read_text())


def test_a_bad_recipe_value_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("vision.data.load_images", lambda *a, **k: (_ for _ in ()).throw(AssertionError("data loaded")))
    for change, message in [({"heads": "triple"}, "method: heads must be one of dual, single, got 'triple'"),
                            ({"gama": 1.0}, "unknown field 'method.gama' (did you mean 'method.gamma'?)")]:
        config = _recipe()
        config["method"] = {**config["method"], **change}
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(config))
        assert curate_main(["vision", "dhkd", "--config", str(path), "--out", str(tmp_path / "out" / "r.json")]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and message in err and str(path) in err, err
        assert not (tmp_path / "out").exists()


def test_the_cli_trains_a_teacher_then_the_dual_head_student(tmp_path, capsys):
    config = _recipe()
    config["teacher"] = {**config["teacher"], "epochs": 1, "progress": False}
    config["train"] = {**config["train"], "progress": False}
    path = tmp_path / "dhkd.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "r.json"
    assert curate_main(["vision", "dhkd", "--config", str(path), "--out", str(out), "--epochs", "1", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("dhkd: student (") and "teacher (" in printed
    result = json.loads(out.read_text())
    assert result["method"] == "dhkd" and len(result["epochs"]) == 1 and result["teacher"]["epochs"] == 1


def _train(checkpoint_dir: Path, kill_after: int | None) -> None:
    """The child: DHKD with GA and the MLP auxiliary head (dropout, BatchNorm), two epochs."""
    from vision.data import load_images

    torch.set_num_threads(1)
    if kill_after is not None:
        os.environ[KILL_AFTER_EPOCH] = str(kill_after)
    data = load_images("digits", seed=0)
    data.train_images, data.train_labels = data.train_images[:200], data.train_labels[:200]
    data.test_images, data.test_labels = data.test_images[:50], data.test_labels[:50]
    method = DHKD(DHKDConfig(ga=True))
    method.set_teacher(build_backbone("mlp:24", 1, 10, 8, seed=1))
    config = TrainConfig(backbone="mlp:16", epochs=2, warmup_epochs=0, device="cpu", seed=3,
                         checkpoint_dir=str(checkpoint_dir), progress=False)
    result = fit(method, data, data.train_labels, config)
    (checkpoint_dir / "result.json").write_text(json.dumps(result["epochs"]))


def _run(checkpoint_dir: Path, kill_after: int | None = None) -> int:
    return run_forked(_train, checkpoint_dir, kill_after)


def test_a_run_killed_after_epoch_one_resumes_to_the_uninterrupted_result(tmp_path):
    # Kills an auxiliary head kept out of the loop's modules (neither trained nor checkpointed).
    assert _run(tmp_path / "straight") == 0
    assert _run(tmp_path / "killed", kill_after=1) == -9
    assert _run(tmp_path / "killed") == 0
    outcomes = []
    for folder in ("straight", "killed"):
        epochs = [{k: v for k, v in e.items() if k != "seconds"} for e in json.loads((tmp_path / folder / "result.json").read_text())]
        (path,) = (tmp_path / folder).glob("dhkd-*.pt")
        outcomes.append((epochs, torch.load(path, weights_only=False)))
    (straight, state), (resumed, resumed_state) = outcomes
    assert resumed == straight
    assert {"aux.0.weight", "aux.2.running_mean", "aux.4.bias"} <= state["heads"].keys()
    for part in ("model", "heads"):
        for key, value in state[part].items():
            torch.testing.assert_close(resumed_state[part][key], value, rtol=0, atol=1e-6, msg=key)


def test_the_loop_backpropagates_through_the_methods_backward():
    # Kills a loop that sums the parts and calls backward itself (GA would never run in training).
    from vision.data import load_images

    class Counting(DHKD):
        calls = 0

        def backward(self, parts, params):
            assert len(parts) == 2 and len(params) == len(list(self.dual.backbone.parameters())) + len(list(self.dual.aux.parameters()))
            Counting.calls += 1
            super().backward(parts, params)

    data = load_images("digits", seed=0)
    data.train_images, data.train_labels = data.train_images[:130], data.train_labels[:130]
    method = Counting()
    method.set_teacher(build_backbone("mlp:24", 1, 10, 8, seed=1))
    fit(method, data, data.train_labels, TrainConfig(backbone="mlp:16", epochs=1, warmup_epochs=0, device="cpu",
                                                     batch_size=64, progress=False))
    assert Counting.calls == 3

"""DANCE's property tests (specs/dance.md): exact, frozen middle encoders; the inner loss is DM's
under θ_mid with one augmentation draw and no gradient on the real side; the calibration uses the
trained expert and moves images into their class; iter_calib = 0 is DM with middle encoders;
experts are pre-trained once, seeded and cached."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from curate.core.errors import BadInputError
from vision.backbones import build_backbone
from forked import run_forked
from curate.cli import main as curate_main
from vision.condense import dance
from vision.condense.augment import DiffAugment
from vision.condense.base import Step, SyntheticSet, match_features
from vision.condense.dance import (DANCE, DanceConfig, Expert, draw_expert, draw_seed, middle_encoder,
                                   pretrain_experts)
from vision.condense.dm import DM, dm_loss
from vision.condense.experiment import CondenseTrainConfig, condense
from vision.data import from_tensors, load_images
from vision.train import KILL_AFTER_EPOCH


class BNNet(nn.Module):
    """A toy encoder with BatchNorm buffers (the ConvNet has none)."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.head = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Linear(4 * 16, 3)

    def features(self, x):
        return torch.relu(self.bn(self.conv(x))).flatten(1)

    def forward(self, x):
        return self.head(self.features(x))


def _bn_pair() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    init, final = BNNet(), BNNet()
    final.train()
    final(torch.randn(8, 1, 4, 4) * 3 + 1)  # moves final's running statistics away from init's
    return init.eval(), final.eval()


def _toy_data(n_per_class: int = 12, classes: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    centres = torch.rand(classes, 1, 8, 8, generator=g)
    images = (centres[labels] + 0.15 * torch.randn(len(labels), 1, 8, 8, generator=g)).clamp(0, 1)
    return from_tensors(images, labels, num_classes=classes, name="toy")


def _experts(n: int = 2, classes: int = 3) -> list[Expert]:
    out = []
    for i in range(n):
        init = dance.freeze(build_backbone("convnet:8", 1, classes, 8, seed=10 + i))
        final = dance.freeze(build_backbone("convnet:8", 1, classes, 8, seed=20 + i))
        out.append(Expert(init, final))
    return out


def _train(**overrides) -> CondenseTrainConfig:
    return CondenseTrainConfig(**{"ipc": 2, "iterations": 3, "lr_img": 0.5, "batch_real": 6, "width": 8,
                                  "augment": "color_crop_cutout", "seed": 0, **overrides})


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- 1. interpolation is exact and frozen --------------------------------------------------------

@pytest.mark.parametrize("lam", [0.0, 1.0, 0.3])
@pytest.mark.parametrize("reuse", [False, True])
def test_middle_encoder_interpolates_parameters_exactly_and_keeps_the_experts(lam, reuse):
    init, final = _bn_pair()
    before0, before_t = _state(init), _state(final)
    out = copy.deepcopy(init) if reuse else None
    mid = middle_encoder(init, final, lam, out)
    for (name, p), p0, p_t in zip(mid.named_parameters(), init.parameters(), final.parameters()):
        assert torch.equal(p, lam * p0 + (1 - lam) * p_t), name
    if lam == 0.0:
        assert _same({k: v for k, v in mid.named_parameters()}, dict(final.named_parameters()))
    if lam == 1.0:
        assert _same({k: v for k, v in mid.named_parameters()}, dict(init.named_parameters()))
    # buffers are the trained expert's, not interpolated
    for (name, b), b_t, b0 in zip(mid.named_buffers(), final.buffers(), init.buffers()):
        assert torch.equal(b, b_t), name
    assert not torch.equal(mid.bn.running_mean, init.bn.running_mean)
    assert _same(_state(init), before0) and _same(_state(final), before_t)


def test_each_iteration_matches_under_the_drawn_middle_encoder_and_leaves_the_experts():
    data = _toy_data()
    experts = _experts(3)
    states = [(_state(e.init), _state(e.final)) for e in experts]
    method = DANCE(DanceConfig(iter_calib=1), experts)
    method.prepare(data, _train())
    reference = torch.Generator().manual_seed(draw_seed(0))
    for it in range(4):
        net = method.network(it, None)
        index, lam = draw_expert(reference, 3)
        assert method.draw == (index, lam)
        e = experts[index]
        for p, p0, p_t in zip(net.parameters(), e.init.parameters(), e.final.parameters()):
            assert torch.equal(p, lam * p0 + (1 - lam) * p_t)
    synthetic, history = condense(method, data, _train())
    assert len(history) == 3 and not torch.equal(synthetic.images.detach(), data.train_images[synthetic.source_rows])
    assert all(_same(_state(e.init), s0) and _same(_state(e.final), s_t) for e, (s0, s_t) in zip(experts, states))


def test_draws_are_seeded_and_cover_the_experts():
    draws = [draw_expert(torch.Generator().manual_seed(5), 4) for _ in range(2)]
    assert draws[0] == draws[1]
    g = torch.Generator().manual_seed(0)
    many = [draw_expert(g, 4) for _ in range(200)]
    assert {i for i, _ in many} == {0, 1, 2, 3}
    assert 0.0 <= min(lam for _, lam in many) < 0.1 and 0.9 < max(lam for _, lam in many) < 1.0


# -- 2. the inner loss is DM's under the middle encoder ------------------------------------------

def test_the_inner_loss_is_the_mean_feature_distance_under_the_middle_encoder():
    data = _toy_data()
    experts = _experts(3)
    # no augmentation and a real batch of the whole class: the first iteration's loss by hand
    config = _train(iterations=1, augment="none", batch_real=100)
    synthetic, history = condense(DANCE(DanceConfig(iter_calib=0), experts), data, config)
    start = SyntheticSet(data, config.ipc, config.seed).images.detach()
    index, lam = draw_expert(torch.Generator().manual_seed(draw_seed(0)), 3)
    assert 0.05 < lam < 0.95
    mid = middle_encoder(experts[index].init, experts[index].final, lam)
    with torch.no_grad():
        by_hand = [float(((mid.features(data.train_images[data.train_labels == c]).mean(0)
                           - mid.features(start[synthetic.labels == c]).mean(0)) ** 2).sum()) for c in range(3)]
    assert history[0]["loss"] == pytest.approx(sum(by_hand) / 3, rel=1e-4) and history[0]["loss"] > 1e-3


def test_the_inner_loss_is_zero_when_the_synthetic_set_copies_the_real_one():
    data = _toy_data(n_per_class=6)
    # every real image of a class is a synthetic one: under ONE shared draw the means agree
    config = _train(ipc=6, batch_real=6, iterations=2)
    synthetic, history = condense(DANCE(DanceConfig(iter_calib=0), _experts()), data, config)
    assert max(h["loss"] for h in history) < 1e-9
    assert torch.allclose(synthetic.images.detach(), data.train_images[synthetic.source_rows], atol=1e-4)


def test_real_features_take_no_gradient_under_the_middle_encoder():
    e = _experts(1)[0]
    mid = middle_encoder(e.init, e.final, 0.4)
    g = torch.Generator().manual_seed(1)
    real = torch.rand(7, 1, 8, 8, generator=g).requires_grad_(True)
    synthetic = torch.rand(3, 1, 8, 8, generator=g).requires_grad_(True)
    loss = dm_loss(*match_features(mid, DiffAugment("color_crop_cutout", seed=0), real, synthetic))
    loss.backward()
    # the shared draw runs on [R; S], so R may get an all-zero gradient from the slice; never a real one
    assert float(loss.detach()) > 0 and (real.grad is None or not real.grad.any()) and synthetic.grad.abs().sum() > 0


# -- 3. calibration uses the trained expert, moves images into their class; iter_calib = 0 is DM ----

def test_the_calibration_is_the_trained_experts_ce_on_each_class():
    data = _toy_data()
    experts = _experts(3)
    method = DANCE(DanceConfig(iter_calib=2), experts)
    method.prepare(data, _train())
    synthetic = SyntheticSet(data, 3, seed=0)
    optimizer = torch.optim.SGD([synthetic.images], lr=0.0, momentum=0.5)  # lr 0: the images stay
    method.network(0, None)
    index, lam = method.draw
    assert 0.05 < lam < 0.95
    method.after_matching(Step(0, synthetic, optimizer, lambda x: x, 200))
    e = experts[index]
    with torch.no_grad():
        by_hand = [float(nn.functional.cross_entropy(e.final(synthetic.of_class(c)), torch.full((3,), c)))
                   for c in range(3)]
    assert method.calibration == pytest.approx(by_hand * 2, rel=1e-5)


def test_one_calibration_round_lowers_the_trained_experts_ce():
    expert = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():  # a fixed "trained" linear expert: class 0 left, class 1 right
        expert[1].weight.copy_(torch.tensor([[-2.0, 0, 0, 0], [2.0, 0, 0, 0]]))
        expert[1].bias.zero_()
    dance.freeze(expert)
    labels = torch.tensor([0, 0, 1, 1])
    # every image starts on the wrong side
    start = torch.tensor([[0.8, 0.1, 0.2, 0.3], [0.6, 0.5, 0.5, 0.5], [-0.7, 0.2, 0.1, 0.0], [-0.2, 0, 0, 0.4]])
    synthetic = SyntheticSet(from_tensors(start.view(4, 1, 2, 2), labels), 2, seed=0)
    images = synthetic.images

    def ce():  # by hand, against the labels
        return float(nn.functional.cross_entropy(expert(images.detach()), synthetic.labels))
    before = ce()
    accuracy_before = float((expert(images).argmax(1) == synthetic.labels).float().mean())
    optimizer = torch.optim.SGD([images], lr=0.05)
    losses = dance.calibrate(Step(0, synthetic, optimizer, lambda x: x, 200), expert, 1, torch.Generator())
    assert len(losses) == 2 and ce() < before
    assert float((expert(images).argmax(1) == synthetic.labels).float().mean()) >= accuracy_before


class MiddleEncoderDM(DM):
    """The reference: DM whose network is DANCE's middle encoder (same draws), no calibration."""

    def __init__(self, experts):
        self.experts = experts

    def prepare(self, data, config):
        self.generator = torch.Generator().manual_seed(draw_seed(config.seed))

    def generators(self):
        return {"draws": self.generator}

    def network(self, iteration, networks):
        index, lam = draw_expert(self.generator, len(self.experts))
        return middle_encoder(self.experts[index].init, self.experts[index].final, lam)


def test_without_calibration_dance_is_dm_with_middle_encoders():
    data = _toy_data()
    experts = _experts()
    dm_mid, _ = condense(MiddleEncoderDM(experts), data, _train())
    off, _ = condense(DANCE(DanceConfig(iter_calib=0), experts), data, _train())
    on, _ = condense(DANCE(DanceConfig(iter_calib=1), experts), data, _train())
    assert torch.equal(off.images, dm_mid.images)
    assert not torch.equal(on.images, dm_mid.images)


# -- pre-training --------------------------------------------------------------------------------

def _digits_subset():
    data = load_images("digits", seed=0)
    keep = torch.arange(0, len(data.train_labels), 4)
    return from_tensors(data.train_images[keep], data.train_labels[keep], num_classes=10, name="digits-quarter")


def test_experts_are_trained_from_their_seeded_init_and_cached(tmp_path, monkeypatch):
    data = _digits_subset()
    config = DanceConfig(num_experts=2, expert_epochs=6, expert_lr=0.05)
    experts = pretrain_experts(data, "convnet:16", config, seed=0, cache_dir=tmp_path, device="cpu")
    assert len(experts) == 2 and len(list(tmp_path.glob("dance-expert-*.pt"))) == 2
    for i, e in enumerate(experts):
        fresh = build_backbone("convnet:16", 1, 10, 8, seed=dance.expert_seed(0, i))
        assert _same(_state(e.init), _state(fresh))  # θ0: the weights before training
        assert not _same(_state(e.final), _state(e.init))
        acc = [float((net(data.train_images).argmax(1) == data.train_labels).float().mean()) for net in (e.init, e.final)]
        assert acc[1] > max(acc[0] + 0.3, 0.6)
        assert all(not p.requires_grad for p in [*e.init.parameters(), *e.final.parameters()])
    assert not _same(_state(experts[0].init), _state(experts[1].init))

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")
    monkeypatch.setattr(dance, "fit", no_training)
    again = pretrain_experts(data, "convnet:16", config, seed=0, cache_dir=tmp_path, device="cpu")
    assert all(_same(_state(a.final), _state(b.final)) for a, b in zip(experts, again))
    with pytest.raises(AssertionError, match="trained again"):  # another seed is another cache entry
        pretrain_experts(data, "convnet:16", config, seed=1, cache_dir=tmp_path, device="cpu")


@pytest.mark.parametrize("field,value", [("num_experts", 0), ("expert_epochs", 0), ("iter_calib", -1),
                                         ("expert_lr", 0.0), ("expert_batch_size", 0),
                                         ("expert_augment", "color_flip")])
def test_bad_options_name_the_field(field, value):
    with pytest.raises(BadInputError, match=f"{field}"):
        DanceConfig(**{field: value})


# -- the family's protocol: resume, CLI ----------------------------------------------------------

SMALL = {"train": {"ipc": 1, "iterations": 4, "lr_img": 0.05, "batch_real": 16, "width": 8, "seed": 0},
         "evaluate": {"backbone": "convnet:8", "epochs": 2},
         "method": {"num_experts": 2, "expert_epochs": 1}}


def _dance_child(folder, kill_after) -> None:
    torch.set_num_threads(1)
    if kill_after is not None:
        import os

        os.environ[KILL_AFTER_EPOCH] = str(kill_after)
    from vision.registry import build_method

    config = CondenseTrainConfig(**{**SMALL["train"], "iterations": 6}, checkpoint_dir=str(folder),
                                 checkpoint_every=2)
    synthetic, history = condense(build_method("dance", SMALL["method"]), _digits_subset(), config)
    torch.save(synthetic.images.detach(), folder / "images.pt")


def test_condensation_resumes_after_sigkill_to_the_identical_result(tmp_path):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    whole.mkdir()
    resumed.mkdir()
    assert run_forked(_dance_child, whole, None) == 0
    assert run_forked(_dance_child, resumed, 4) == -9
    assert not (resumed / "images.pt").exists() and len(list(resumed.glob("dance-expert-*.pt"))) == 2
    assert run_forked(_dance_child, resumed, None) == 0
    assert torch.equal(torch.load(whole / "images.pt"), torch.load(resumed / "images.pt"))


def _write(path, config) -> str:
    import yaml

    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_the_cli_runs_dance_and_prints_the_familys_summary(tmp_path, capsys):
    config = {**SMALL, "method": {**SMALL["method"], "expert_dir": str(tmp_path / "experts")},
              "out_dir": str(tmp_path / "images")}
    out = tmp_path / "r.json"
    assert curate_main(["vision", "dance", "--config", _write(tmp_path / "c.yaml", config), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("dance: dance on digits, 1 images per class: test accuracy")
    assert len(list((tmp_path / "experts").glob("dance-expert-*.pt"))) == 2 and out.exists()


@pytest.mark.parametrize("bad, message", [
    ({"method": {"num_experts": 0}}, "num_experts must be at least 1, got 0"),
    ({"method": {"iter_calib": -1}}, "iter_calib must be at least 0, got -1"),
    ({"method": {"experts": 3}}, "method.experts"),
    ({"train": {"depth": 3}}, "train.depth 3"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, bad, message):
    out = tmp_path / "out"
    config = {**SMALL, **bad, "out_dir": str(out / "images")}
    if "method" in bad:
        config["method"] = bad["method"]
    else:
        config["train"] = {**SMALL["train"], **bad["train"]}
    code = curate_main(["vision", "dance", "--config", _write(tmp_path / "bad.yaml", config), "--out", str(out / "r.json")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1 and not out.exists()

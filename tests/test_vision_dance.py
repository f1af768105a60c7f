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
from vision.condense import dance
from vision.condense.dance import (DanceConfig, Expert, calibration_loss, dance_iteration, draw_expert,
                                   inner_loss, middle_encoder, pretrain_experts)
from vision.data import from_tensors


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
        init = dance._frozen(build_backbone("convnet:8", 1, classes, 8, seed=10 + i))
        final = dance._frozen(build_backbone("convnet:8", 1, classes, 8, seed=20 + i))
        out.append(Expert(init, final))
    return out


def _shift(seed: int):
    """A shared-draw augmentation: one random roll and brightness for the whole batch per call."""
    g = torch.Generator().manual_seed(seed)

    def augment(x):
        dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=g))
        scale = 0.7 + 0.6 * float(torch.rand(1, generator=g))
        return torch.roll(x, (dx, dy), (2, 3)) * scale
    return augment


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


def test_dance_iteration_updates_only_the_images():
    data = _toy_data()
    experts = _experts()
    states = [(_state(e.init), _state(e.final)) for e in experts]
    images = data.train_images[::6].clone().requires_grad_(True)
    labels = data.train_labels[::6].clone()
    start = images.detach().clone()
    optimizer = torch.optim.SGD([images], lr=0.1, momentum=0.5)
    mid = copy.deepcopy(experts[0].init)
    generator = torch.Generator().manual_seed(3)
    record = dance_iteration(images, labels, lambda c: data.train_images[data.train_labels == c][:5],
                             _shift(0), experts, optimizer, generator, iter_calib=1, mid=mid)
    assert not torch.equal(images.detach(), start)
    assert all(_same(_state(e.init), s0) and _same(_state(e.final), s_t) for e, (s0, s_t) in zip(experts, states))
    e, lam = experts[record["expert"]], record["lambda"]
    for p, p0, p_t in zip(mid.parameters(), e.init.parameters(), e.final.parameters()):
        assert torch.equal(p, lam * p0 + (1 - lam) * p_t)


def test_draws_are_seeded_and_cover_the_experts():
    draws = [draw_expert(torch.Generator().manual_seed(5), 4) for _ in range(2)]
    assert draws[0] == draws[1]
    g = torch.Generator().manual_seed(0)
    many = [draw_expert(g, 4) for _ in range(200)]
    assert {i for i, _ in many} == {0, 1, 2, 3}
    assert 0.0 <= min(lam for _, lam in many) < 0.1 and 0.9 < max(lam for _, lam in many) < 1.0


# -- 2. the inner loss is DM's under the middle encoder ------------------------------------------

def test_inner_loss_is_the_squared_distance_of_mean_features_without_real_gradients():
    encoder = _experts(1)[0].final
    g = torch.Generator().manual_seed(1)
    real = torch.rand(7, 1, 8, 8, generator=g).requires_grad_(True)
    synthetic = torch.rand(3, 1, 8, 8, generator=g).requires_grad_(True)
    loss = inner_loss(real, synthetic, encoder)
    by_hand = ((encoder.features(real).mean(0) - encoder.features(synthetic).mean(0)) ** 2).sum()
    assert torch.allclose(loss, by_hand.detach(), rtol=1e-6) and float(loss) > 0
    loss.backward()
    assert real.grad is None and synthetic.grad is not None and synthetic.grad.abs().sum() > 0
    assert float(inner_loss(real, real.detach().clone(), encoder)) == 0.0


def test_inner_loss_is_zero_when_the_synthetic_set_copies_the_real_one():
    data = _toy_data(n_per_class=6)
    experts = _experts()
    images, labels = data.train_images.clone().requires_grad_(True), data.train_labels.clone()
    order = torch.Generator().manual_seed(9)

    def sample_real(c):  # the whole class, shuffled: the same mean as the synthetic class
        rows = (data.train_labels == c).nonzero().squeeze(1)
        return data.train_images[rows[torch.randperm(len(rows), generator=order)]]

    optimizer = torch.optim.SGD([images], lr=1.0, momentum=0.5)
    record = dance_iteration(images, labels, sample_real, _shift(4), experts, optimizer,
                             torch.Generator().manual_seed(0), iter_calib=0)
    assert max(record["inner"]) < 1e-9
    # not vacuous: independent draws for the two halves do not match
    augment, mid = _shift(4), experts[record["expert"]].final
    x = data.train_images[data.train_labels == 0]
    assert float(inner_loss(augment(x), augment(x), mid)) > 1e-3


def test_iteration_losses_are_the_middle_encoder_and_trained_expert_losses():
    data = _toy_data()
    experts = _experts(3)
    images = data.train_images[1::4].clone().requires_grad_(True)
    labels = data.train_labels[1::4].clone()
    real = {c: data.train_images[data.train_labels == c][:6] for c in range(3)}
    optimizer = torch.optim.SGD([images], lr=0.0, momentum=0.5)  # lr 0: the images stay, losses recomputable
    seed = 11
    record = dance_iteration(images, labels, real.__getitem__, lambda x: x, experts, optimizer,
                             torch.Generator().manual_seed(seed), iter_calib=1)
    index, lam = draw_expert(torch.Generator().manual_seed(seed), len(experts))
    assert (record["expert"], record["lambda"]) == (index, lam) and 0.05 < lam < 0.95
    e = experts[index]
    mid = middle_encoder(e.init, e.final, lam)
    with torch.no_grad():
        inner = [float(((mid.features(real[c]).mean(0) - mid.features(images[labels == c]).mean(0)) ** 2).sum())
                 for c in range(3)]
        calib = [float(nn.functional.cross_entropy(e.final(images[labels == c]), labels[labels == c]))
                 for c in range(3)]
    assert record["inner"] == pytest.approx(inner, rel=1e-5)
    assert record["calibration"] == pytest.approx(calib, rel=1e-5)


# -- 3. calibration moves images into their class; iter_calib = 0 is DM with middle encoders -------

def test_one_calibration_step_lowers_the_trained_experts_ce():
    torch.manual_seed(0)
    expert = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():  # a fixed "trained" linear expert: class 0 left, class 1 right
        expert[1].weight.copy_(torch.tensor([[-2.0, 0, 0, 0], [2.0, 0, 0, 0]]))
        expert[1].bias.zero_()
    dance._frozen(expert)
    labels = torch.tensor([0, 0, 1, 1])
    # every image starts on the wrong side
    images = torch.tensor([[0.8, 0.1, 0.2, 0.3], [0.6, 0.5, 0.5, 0.5], [-0.7, 0.2, 0.1, 0.0], [-0.2, 0, 0, 0.4]])
    images = images.view(4, 1, 2, 2).requires_grad_(True)
    def ce():  # by hand, against the labels
        return float(nn.functional.cross_entropy(expert(images), labels))
    before = ce()
    accuracy_before = float((expert(images).argmax(1) == labels).float().mean())
    optimizer = torch.optim.SGD([images], lr=0.05)
    calibration_loss(images, labels, expert).backward()
    optimizer.step()
    after = ce()
    assert after < before
    assert float((expert(images).argmax(1) == labels).float().mean()) >= accuracy_before


def _reference_dm_with_middle_encoders(images, labels, sample_real, augment, experts, optimizer, generator, iters):
    for _ in range(iters):
        index, lam = draw_expert(generator, len(experts))
        mid = middle_encoder(experts[index].init, experts[index].final, lam)
        with torch.no_grad():
            images.clamp_(0, 1)
        for c in sorted(set(labels.tolist())):
            real = sample_real(c)
            batch = augment(torch.cat([real, images[labels == c]]))
            with torch.no_grad():
                target = mid.features(batch[:len(real)]).mean(0)
            loss = ((mid.features(batch[len(real):]).mean(0) - target) ** 2).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


def test_without_calibration_dance_is_dm_with_middle_encoders():
    data = _toy_data()
    experts = _experts()
    start = data.train_images[::5].clone()
    labels = data.train_labels[::5].clone()
    runs = []
    for variant in ("dance", "reference"):
        images = start.clone().requires_grad_(True)
        optimizer = torch.optim.SGD([images], lr=0.5, momentum=0.5)
        real_order = torch.Generator().manual_seed(2)

        def sample_real(c):
            pool = data.train_images[data.train_labels == c]
            return pool[torch.randperm(len(pool), generator=real_order)[:5]]
        generator, augment = torch.Generator().manual_seed(7), _shift(1)
        if variant == "dance":
            for _ in range(3):
                dance_iteration(images, labels, sample_real, augment, experts, optimizer, generator, iter_calib=0)
        else:
            _reference_dm_with_middle_encoders(images, labels, sample_real, augment, experts, optimizer, generator, 3)
        runs.append(images.detach())
    assert not torch.equal(runs[0], start)
    assert torch.equal(runs[0], runs[1])


# -- pre-training --------------------------------------------------------------------------------

def _digits_subset():
    from vision.data import load_images

    data = load_images("digits", seed=0)
    keep = torch.arange(0, len(data.train_labels), 4)
    return from_tensors(data.train_images[keep], data.train_labels[keep], num_classes=10, name="digits-quarter")


def test_experts_are_trained_from_their_seeded_init_and_cached(tmp_path, monkeypatch):
    data = _digits_subset()
    config = DanceConfig(num_experts=2, expert_epochs=3, expert_lr=0.05)
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
                                         ("expert_lr", 0.0), ("expert_batch_size", 0)])
def test_bad_options_name_the_field(field, value):
    with pytest.raises(BadInputError, match=f"method.{field}"):
        DanceConfig(**{field: value})

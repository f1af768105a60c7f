"""The condensation family's shared pieces: one augmentation draw for [real; synthetic], the
synthetic set initialised from seeded real images of its own class, the class-wise sampler, the
random ConvNets, the evaluation protocol (the synthetic set only), DM's loss by hand, the saved
outputs, resume after SIGKILL, bad input refused in one line, the CLI's summary.

Wrong implementations killed (tests/mutants.py, block "condensation family"): independent draws
for the real and synthetic halves, initial images drawn regardless of class, an evaluation that
also trains on the real training set, a checkpoint without the augmentation's random state."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from forked import run_forked
from curate.cli import main as curate_main
from vision.condense.augment import DiffAugment, apply
from vision.condense.base import ClassSampler, RandomNetworks, SyntheticSet, match_features
from vision.condense.dm import dm_loss
from vision.condense.evaluate import EvaluateConfig, evaluate
from vision.condense.experiment import CondenseTrainConfig, condense, run_condense_experiment
from vision.data import load_images
from vision.registry import build_method
from vision.run import build_config
from vision.train import KILL_AFTER_EPOCH

SMALL = {"batch_real": 16, "width": 16, "iterations": 4, "ipc": 2, "lr_img": 0.01}


@pytest.fixture(scope="module")
def digits():
    return load_images("digits", seed=0)


def test_one_draw_is_shared_by_the_real_and_synthetic_halves(digits):
    x = digits.train_images[:12]
    augment = DiffAugment("color_crop_cutout_scale", seed=0)
    out = augment(torch.cat([x, x]))
    assert torch.equal(out[:12], out[12:]) and not torch.allclose(out[:12], x)
    params = DiffAugment("color_crop_cutout_scale", seed=0).draw(x.shape[-1])
    assert torch.allclose(apply(torch.cat([x, x[:3]]), params)[:12], apply(x, params))
    # the loop's feature step: a copy of the real batch has zero DM loss only under a shared draw
    net = RandomNetworks(digits, 16, None, 1, 0, torch.device("cpu")).at(0)
    for _ in range(3):
        real, syn = match_features(net, augment, x, x.clone().requires_grad_(True))
        assert float(dm_loss(real, syn)) < 1e-10 and not real.requires_grad


def test_synthetic_images_start_as_seeded_real_images_of_their_class(digits):
    synthetic = SyntheticSet(digits, 3, seed=4)
    assert torch.equal(synthetic.labels, torch.arange(10).repeat_interleave(3))
    assert torch.equal(digits.train_labels[synthetic.source_rows], synthetic.labels)
    assert torch.equal(synthetic.images.detach(), digits.train_images[synthetic.source_rows])
    assert len(set(synthetic.source_rows.tolist())) == 30 and synthetic.images.requires_grad
    assert torch.equal(SyntheticSet(digits, 3, seed=4).source_rows, synthetic.source_rows)
    assert not torch.equal(SyntheticSet(digits, 3, seed=5).source_rows, synthetic.source_rows)


def test_the_class_sampler_draws_only_its_class(digits):
    sampler = ClassSampler(digits, 16, seed=0)
    for c in range(10):
        batch = sampler.sample(c)
        rows = [int(torch.nonzero((digits.train_images == b).flatten(1).all(1))[0]) for b in batch]
        assert len(batch) == 16 and (digits.train_labels[rows] == c).all()


def test_random_networks_are_fresh_every_ipm_iterations_and_rebuilt_identically(digits):
    networks = RandomNetworks(digits, 16, None, 3, 0, torch.device("cpu"))
    first = networks.at(0)
    assert networks.at(2) is first and networks.at(3) is not first
    assert not any(p.requires_grad for p in first.parameters()) and first.training
    again = RandomNetworks(digits, 16, None, 3, 0, torch.device("cpu")).at(1)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    assert not torch.equal(networks.at(3).body[0].weight, first.body[0].weight)


def test_dm_loss_by_hand():
    g = torch.Generator().manual_seed(0)
    real, syn = torch.randn(7, 5, generator=g), torch.randn(3, 5, generator=g)
    by_hand = sum((real[:, d].sum() / 7 - syn[:, d].sum() / 3) ** 2 for d in range(5))
    assert torch.allclose(dm_loss(real, syn), by_hand)
    assert float(dm_loss(real, real[[2, 0, 1, 3, 4, 5, 6]])) < 1e-12


def test_evaluation_trains_on_the_synthetic_set_only_and_is_seeded(digits):
    config = EvaluateConfig(backbone="convnet:16", epochs=15, lr=0.05)
    blank = torch.full((20, 1, 8, 8), 0.5)  # carries no information: chance accuracy
    labels = torch.arange(10).repeat_interleave(2)
    assert evaluate(blank, labels, digits, config)["test_accuracy"] < 0.25
    real = SyntheticSet(digits, 2, seed=0)
    first = evaluate(real.images, real.labels, digits, config)
    assert first["train_images"] == 20 and first["test_accuracy"] > 0.4
    assert evaluate(real.images, real.labels, digits, config) == first


def test_random_keeps_its_initial_images_and_dm_moves_them(digits):
    config = CondenseTrainConfig(**SMALL)
    kept, history = condense(build_method("random"), digits, config)
    assert history == [] and torch.equal(kept.images.detach(), digits.train_images[kept.source_rows])
    moved, history = condense(build_method("dm"), digits, config)
    assert len(history) == 4 and torch.equal(moved.source_rows, kept.source_rows)
    assert not torch.allclose(moved.images, kept.images) and 0 <= float(moved.images.min()) <= float(moved.images.max()) <= 1


def test_a_run_saves_a_grid_png_and_a_dataset(tmp_path):
    import datasets
    from PIL import Image

    config = build_config({"train": SMALL, "evaluate": {"epochs": 2, "backbone": "convnet:16"},
                           "out_dir": str(tmp_path)}, "echo")
    result = run_condense_experiment(build_method("echo"), config)
    assert "test accuracy" in result["summary"] and result["condensation"]["iterations"] == 4
    grid = Image.open(result["outputs"]["grid"])
    assert grid.size[0] > 2 * 8 and grid.size[1] > 10 * 8
    table = datasets.load_from_disk(result["outputs"]["dataset"])
    assert table["label"] == [c for c in range(10) for _ in range(2)]
    assert np.asarray(table[0]["image"]).shape == (1, 8, 8)


def _condense_child(method: str, folder: Path, kill_after: int | None) -> None:
    torch.set_num_threads(1)
    if kill_after is not None:
        os.environ[KILL_AFTER_EPOCH] = str(kill_after)
    data = load_images("digits", seed=0)
    config = CondenseTrainConfig(**{**SMALL, "iterations": 6, "ipm": 2}, checkpoint_dir=str(folder),
                                 checkpoint_every=2)
    synthetic, history = condense(build_method(method), data, config)
    torch.save(synthetic.images.detach(), folder / "images.pt")
    (folder / "history.json").write_text(json.dumps(history))


@pytest.mark.parametrize("method", ["dm", "echo"])
def test_condensation_resumes_after_sigkill_to_the_identical_result(tmp_path, method):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    whole.mkdir()
    resumed.mkdir()
    assert run_forked(_condense_child, method, whole, None) == 0
    assert run_forked(_condense_child, method, resumed, 2) == -9
    assert not (resumed / "images.pt").exists()
    assert run_forked(_condense_child, method, resumed, None) == 0
    assert torch.equal(torch.load(whole / "images.pt"), torch.load(resumed / "images.pt"))
    assert json.loads((whole / "history.json").read_text()) == json.loads((resumed / "history.json").read_text())


@pytest.mark.parametrize("bad, message", [
    ({"train": {"ipc": 0}}, "train: ipc must be at least 1, got 0"),
    ({"train": {"augment": "color_flip"}}, "unknown augmentation 'flip'"),
    ({"evaluate": {"lr": -1}}, "evaluate: lr must be positive, got -1"),
    ({"method": {"kernel": "laplace"}}, "kernel must be one of gaussian, linear, polynomial, got 'laplace'"),
    ({"train": {"ipcs": 3}}, "train.ipcs"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, bad, message):
    import yaml

    path, out = tmp_path / "bad.yaml", tmp_path / "out"
    path.write_text(yaml.safe_dump({**bad, "out_dir": str(out / "images")}))
    assert curate_main(["vision", "echo", "--config", str(path), "--out", str(out / "r.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not out.exists()


def test_the_cli_prints_a_one_line_summary(tmp_path, capsys):
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"train": {**SMALL, "iterations": 2}, "out_dir": str(tmp_path / "images"),
                                    "evaluate": {"epochs": 2, "backbone": "convnet:16"}}))
    assert curate_main(["vision", "dm", "--config", str(path), "--out", str(tmp_path / "r.json")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("dm: dm on digits, 2 images per class: test accuracy")
    assert json.loads((tmp_path / "r.json").read_text())["final"]["test_accuracy"] is not None

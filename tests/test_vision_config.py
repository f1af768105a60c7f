"""The vision experiment YAML is validated into dataclasses (:class:`vision.run.ExperimentConfig`)
before any work: an unknown field or a value of the wrong type, in any section, is one line on
stderr naming the field, its value and the file, exit 2, nothing at ``--out`` and no data loaded.
``curate vision --help`` comes from the method registry and loads no torch."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from curate.cli import main as curate_main
from vision.registry import FAMILIES, METHODS, MethodEntry, experiment_class
from vision.run import ExperimentConfig, build_config, load_config

from refused import recipe as _recipe, refused as _refused

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes" / "vision"


@pytest.fixture
def no_data(monkeypatch):
    """Loading a dataset is the first heavy step: a refused config must never get there."""
    def refuse(*args, **kwargs):
        raise AssertionError("data loaded before the config was checked")
    monkeypatch.setattr("vision.data.load_images", refuse)


@pytest.mark.parametrize("method, section, bad, message", [
    # Kills a loader that checks only some sections (the old one let method options through to
    # the method's constructor, and top-level typos were dropped silently on the Python path).
    ("selcl", "train", {"epoch": 3}, "unknown field 'train.epoch' (did you mean 'train.epochs'?)"),
    ("selcl", "noise", {"rat": 0.2}, "unknown field 'noise.rat' (did you mean 'noise.rate'?)"),
    ("selcl", "method", {"kk": 5}, "unknown field 'method.kk' (did you mean 'method.k'?)"),
    ("dpc", "method", {"treshold": 0.4}, "unknown field 'method.treshold' (did you mean 'method.threshold'?)"),
    ("ce", "method", {"k": 5}, "method 'ce' takes no options, got k"),
    ("selcl", None, {"datset": "digits"}, "unknown field 'datset' (did you mean 'dataset'?)"),
    # the crowds family: its own sections (annotators, no noise) and the method's options
    ("ccc", "method", {"grops": 3}, "unknown field 'method.grops' (did you mean 'method.groups'?)"),
    ("ccc", "annotators", {"regim": "ind"}, "unknown field 'annotators.regim' (did you mean 'annotators.regime'?)"),
    ("mv", None, {"noise": {"rate": 0.2}}, "unknown field 'noise'"),
    ("crowdlayer", "method", {"groups": 3}, "method 'crowdlayer' takes no options, got groups"),
])
def test_an_unknown_field_in_each_section_is_named(tmp_path, capsys, no_data, method, section, bad, message):
    assert message in _refused(tmp_path, capsys, method, _recipe(method, section, bad))


@pytest.mark.parametrize("method, section, bad, message", [
    # Kills a loader that passes values through unchecked (``range("ten")`` or ``"high" < 1``
    # failing later as a bug, or a float epoch count), or that reports a type without the field.
    ("selcl", "train", {"epochs": "ten"}, "train.epochs: expected an integer, got 'ten'"),
    ("selcl", "train", {"augment": 1}, "train.augment: expected true or false, got 1"),
    ("selcl", "noise", {"rate": "high"}, "noise.rate: expected a number, got 'high'"),
    ("selcl", "noise", {"mapping": [1, "a"]}, "noise.mapping[1]: expected an integer, got 'a'"),
    ("selcl", "method", {"k": 2.5}, "method.k: expected an integer, got 2.5"),
    ("selcl", None, {"seed": "x"}, "seed: expected an integer, got 'x'"),
    ("selcl", None, {"train": [1, 2]}, "train: expected a mapping of fields, got list"),
    ("ccc", "annotators", {"annotators": "many"}, "annotators.annotators: expected an integer, got 'many'"),
    ("ccc", "method", {"correction_rate": "half"}, "method.correction_rate: expected a number, got 'half'"),
])
def test_a_wrong_type_names_the_field_and_the_value(tmp_path, capsys, no_data, method, section, bad, message):
    assert message in _refused(tmp_path, capsys, method, _recipe(method, section, bad))


def test_a_bad_value_checked_by_the_dataclass_names_the_section(tmp_path, capsys, no_data):
    # Kills a loader that loses the file and section on the dataclasses' own range checks.
    config = {**_recipe("ce"), "noise": {"kind": "symmetric", "rate": 1.5}}
    assert "bad.yaml: noise: noise rate must be in [0, 1), got 1.5" in _refused(tmp_path, capsys, "ce", config)


@pytest.mark.parametrize("method, config, message", [
    # Kills a crowd experiment whose sections skip the dataclasses' own range checks.
    ("ccc", {"annotators": {"regime": "mixed"}}, "bad.yaml: annotators: regime must be one of ind, corr, idn, got 'mixed'"),
    ("ccc", {"method": {"groups": 0}}, "bad.yaml: method: groups must be at least 1, got 0"),
])
def test_a_bad_crowd_value_names_the_section(tmp_path, capsys, no_data, method, config, message):
    assert message in _refused(tmp_path, capsys, method, {**_recipe(method), **config})


def test_recipes_load_into_typed_dataclasses():
    # Kills a loader that returns the raw dict, or that keeps ints where the dataclass says float
    # (JSON results and checkpoint keys would then depend on how the YAML spelt a number), and a
    # family whose recipes load into another family's experiment (crowds: annotators, no noise).
    from vision.crowds.experiment import CrowdExperimentConfig

    for method in METHODS:
        config = load_config(RECIPES / f"{method}.yaml", method)
        if METHODS[method].family in ("noisy", "crowds", "multilabel") and METHODS[method].experiment is None:
            assert config.dataset in ("digits", "digit_mosaics") and config.train.epochs == 30
        if METHODS[method].family == "crowds":
            assert isinstance(config, CrowdExperimentConfig) and config.annotators.annotators == 100
            assert type(config.annotators.mean_labels) is float
        elif METHODS[method].family == "multilabel" and METHODS[method].experiment is None:  # mosaics, per-class flips
            from vision.multilabel.mltm import MultiLabelExperimentConfig

            assert isinstance(config, MultiLabelExperimentConfig) and config.noise.rho_minus == 0.2
        elif METHODS[method].family == "noisy":
            assert isinstance(config, ExperimentConfig) and config.noise.rate == 0.4
        assert isinstance(config, experiment_class(method))  # the family's (or the method's own) config
    assert set(FAMILIES) >= {METHODS[m].family for m in METHODS}
    config = build_config({"train": {"lr": 1, "epochs": 2, "warmup_epochs": 0}, "noise": {"kind": "asymmetric",
                           "mapping": [1, 0]}, "method": {"temperature": 1, "lambda_ce": "1e-1"}}, "selcl")
    assert type(config.train.lr) is float and config.noise.mapping == (1, 0)
    assert config.method == {"temperature": 1.0, "lambda_ce": 0.1} and type(config.method["temperature"]) is float


def test_command_line_overrides_are_applied_before_the_check(tmp_path):
    # Kills overrides applied after validation: warmup_epochs 5 > epochs 3 in the file is fine
    # when --warmup-epochs 1 replaces it, and --epochs wins over the file.
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"train": {"epochs": 3, "warmup_epochs": 5}}))
    config = load_config(path, "ce", {"epochs": 4, "warmup_epochs": 1})
    assert (config.train.epochs, config.train.warmup_epochs) == (4, 1)


def _normal(text: str) -> str:
    return " ".join(text.split())  # argparse wraps long help lines


def test_help_lists_every_registered_method_with_its_description(capsys, monkeypatch):
    # Kills a hand-written list of methods (or help texts) in the CLI: a method registered now,
    # for this test only, must show up with its description.
    monkeypatch.setitem(METHODS, "fake", MethodEntry("vision.train:Method", "a registered method for this test"))
    with pytest.raises(SystemExit) as exit_:
        curate_main(["vision", "--help"])
    assert exit_.value.code == 0
    text = _normal(capsys.readouterr().out)
    for name, entry in METHODS.items():
        assert f"{name} [{entry.family}] {_normal(entry.description)}" in text
    for family, entry in FAMILIES.items():  # and names every family
        assert f"{family} ({_normal(entry.description)})" in text


def test_a_method_of_an_unknown_family_is_refused_at_registration():
    from vision.registry import register

    with pytest.raises(ValueError, match="unknown family 'crowdz'"):
        register("x", "vision.train:Method", "x", family="crowdz")


def test_the_cli_and_its_help_load_no_torch():
    # Kills a CLI or a registry that imports the methods (torch) eagerly: importing the command
    # module, building its parser and printing `curate vision --help` must load none of it; the
    # last step (building a method) shows that the check sees torch when it is loaded.
    code = """
import argparse, contextlib, io, sys
heavy = lambda: sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'numpy', 'torchvision', 'sklearn'})
import curate.commands.vision as command
parser = argparse.ArgumentParser()
command.register(parser.add_subparsers())
from curate.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    main(['vision', '--help'])
print(heavy())
from vision.registry import build_method
build_method('dpc')
print(heavy())
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    before, after = result.stdout.splitlines()
    assert before == "[]"
    assert "torch" in after


def test_noisy_validation_holds_out_training_images_under_their_noisy_labels():
    # Kills a split that scores the held-out part with its clean labels (clean-label leakage), one
    # that touches the test set, or one whose held-out rows stay in training.
    import numpy as np
    import torch

    from vision.data import ImageData
    from vision.run import noisy_validation_split

    n = 50
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 2, 2).clone()
    clean_labels = torch.arange(n) % 5
    noisy = (clean_labels.numpy() + (np.arange(n) % 2)) % 5  # every other label is wrong
    data = ImageData(images, clean_labels, torch.full((7, 1, 2, 2), -1.0), torch.zeros(7, dtype=torch.long), 5, "toy")
    split, labels, clean = noisy_validation_split(data, noisy, noisy == clean_labels.numpy(), 0.2, seed=3)
    held = split.test_images[:, 0, 0, 0].long().numpy()
    kept = split.train_images[:, 0, 0, 0].long().numpy()
    assert len(held) == 10 and len(kept) == 40 and not set(held) & set(kept)
    assert (split.test_labels.numpy() == noisy[held]).all()  # the noisy labels, not the clean ones
    assert (labels == noisy[kept]).all() and (clean == (noisy == clean_labels.numpy())[kept]).all()
    assert (split.test_images >= 0).all()  # nothing of the real test set
    again = noisy_validation_split(data, noisy, None, 0.2, seed=3)[0]
    assert torch.equal(again.test_images, split.test_images)


def test_validation_share_is_checked(tmp_path, capsys):
    with pytest.raises(Exception, match="validation must be in \\[0, 1\\), got 1.5"):
        build_config({"validation": 1.5}, "ce")
    # A share that leaves no training image: one line and exit 2, not a traceback from the loop.
    path = tmp_path / "share.yaml"
    path.write_text(yaml.safe_dump({"dataset": "digits", "validation": 0.9999}))
    assert curate_main(["vision", "ce", "--config", str(path), "--out", str(tmp_path / "out" / "r.json")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "validation: 0.9999 holds out all 1437 training images" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("method, section, field", [
    ("ce", "train", "checkpoint_dir"), ("kd", "teacher", "checkpoint_dir"), ("fedlmd", "train", "checkpoint_dir"),
    ("dpdfd", "train", "checkpoint_dir"), ("dm", None, "out_dir"),
])
def test_an_unwritable_output_folder_is_refused_before_any_work(tmp_path, capsys, no_data, method, section, field):
    # Kills a run that meets its blocked checkpoint or image folder only when it first writes there
    # (a traceback after the first epoch, or after condensing): one line naming the field, exit 2,
    # before any data is loaded, nothing written.
    blocker = tmp_path / "file"
    blocker.write_text("")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_recipe(method, section, {field: str(blocker / "sub")})))
    out = tmp_path / "out" / "r.json"
    assert curate_main(["vision", method, "--config", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert (f"{section}.{field}" if section else field) in err
    assert "is a file, not a folder" in err and not (tmp_path / "out").exists()

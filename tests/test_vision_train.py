"""`curate vision METHOD`: CE, Sel-CL and DPC train end to end on digits offline through the CLI,
return results of one shape, resume from checkpoints, and refuse bad settings."""
from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from curate.cli import main as curate_main
from vision.train import TrainConfig

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "vision"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("vision")
    found = {}
    for method in ("ce", "selcl", "dpc"):
        argv = ["vision", method, "--config", str(RECIPES / f"{method}.yaml"), "--epochs", "3", "--warmup-epochs", "1",
                "--out", str(out / f"{method}.json"), "--checkpoint-dir", str(out / "ckpt"), "--device", "cpu"]
        assert curate_main(argv) == 0
        found[method] = (json.loads((out / f"{method}.json").read_text()), argv)
    return found


def test_every_method_returns_the_same_shape(results):
    shapes = {m: (sorted(r), sorted(r["epochs"][0]), sorted(r["final"])) for m, (r, _) in results.items()}
    assert len(set(map(str, shapes.values()))) == 1
    # The result's shape is pinned (kills a config refactor that drops or renames a key).
    assert shapes["ce"] == (["config", "dataset", "epochs", "final", "method", "noise"],
                            ["epoch", "loss", "seconds", "selection", "test_accuracy"], ["selection", "test_accuracy"])
    assert sorted(results["ce"][0]["noise"]) == ["actual_rate", "kind", "mapping", "rate", "seed", "transition"]
    assert sorted(results["ce"][0]["config"]) == sorted(f.name for f in fields(TrainConfig))
    for method, (result, _) in results.items():
        assert result["method"] == method and len(result["epochs"]) == 3
        assert abs(result["noise"]["actual_rate"] - 0.4) < 0.05
        assert all(0 <= e["test_accuracy"] <= 1 for e in result["epochs"])
        assert result["epochs"][-1]["test_accuracy"] > 0.2  # learnt something in 3 epochs (chance: 0.1)
        selection = result["final"]["selection"]
        if method == "ce":
            assert selection is None
        else:  # selection starts after the warmup epoch, scored against the true labels
            assert result["epochs"][0]["selection"] is None and 0 < selection["selected"]
            assert 0 <= selection["precision"] <= 1 and 0 <= selection["recall"] <= 1


def test_a_finished_run_resumes_from_its_checkpoint(results, tmp_path):
    result, argv = results["selcl"]
    argv = [*argv[:argv.index("--out") + 1], str(tmp_path / "again.json"), *argv[argv.index("--out") + 2:]]
    assert curate_main(argv) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["epochs"] == result["epochs"]  # read back, not retrained


@pytest.mark.parametrize("change, message", [
    ({"noise": {"kind": "symmetric", "rate": 1.0}}, "noise rate"),
    ({"train": {"backbone": "nope", "epochs": 1, "warmup_epochs": 0}}, "unknown backbone"),
    ({"dataset": "imagenet22k"}, "unknown dataset"),
])
def test_bad_settings_are_refused(tmp_path, capsys, change, message):
    config = {**yaml.safe_load((RECIPES / "ce.yaml").read_text()), **change}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    assert curate_main(["vision", "ce", "--config", str(path), "--out", str(tmp_path / "r.json")]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "r.json").exists()

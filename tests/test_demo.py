"""`curate demo --preset smoke`: the whole mini-lab (data, SFT from scratch, LearnAlign scoring,
selection and GRPO per arm, two held-out evaluations, the comparison) runs offline through the
pipeline machinery and writes a well-formed report; a second run resumes from what is on disk and
runs nothing. Which arm wins is not tested."""
from __future__ import annotations

import json

import pytest
import yaml

from curate import demo
from curate.cli import main as curate_main


def test_smoke_demo_runs_the_pipeline_into_a_report(tmp_path, capsys, monkeypatch):
    out = tmp_path / "demo"
    assert curate_main(["demo", "--preset", "smoke", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report" / "report.json").read_text())
    spec = demo.load("smoke")
    arms = [arm.name for arm in spec.arms]
    assert list(report["accuracy"]) == ["start", *arms] and list(report["evals"]) == ["sampled", "greedy"]
    for name, result in report["evals"].items():
        assert all(len(acc["per_seed"]) == (1 if model == "start" else len(spec.seeds))
                   for model, acc in result["accuracy"].items())
        assert result["eval"]["problems"] == spec.data.splits["test"]
    assert report["comparisons"] == report["evals"]["sampled"]["comparisons"]  # the primary evaluation
    pool = next(iter(report["pools"].values()))
    assert sum(pool[k] for k in ("p_equals_0", "p_equals_1", "learnable")) == spec.data.splits["pool"]
    assert set(report["training"]) == set(arms)  # GRPO's reward log of every arm
    curve = report["budgets"]["arms"]["full-dynamic"]["curve"]  # the held-out curve at every step
    assert [p["step"] for p in curve] == list(range(1, spec.train.fields["max_steps"] + 1))
    dynamic = json.loads((out / "train" / "full-dynamic-seed0" / "model" / "dynamic_sampling.json").read_text())
    assert len(dynamic["generations"]) == spec.train.fields["max_steps"]
    assert "| model | accuracy |" in (out / "report" / "report.md").read_text() and "| model | accuracy |" in printed
    for name in ("accuracy.png", "train_reward.png"):
        assert (out / "report" / name).read_bytes()[:4] == b"\x89PNG"
    # the arms trained on their own selections, from the same SFT model
    for arm in arms:
        provenance = json.loads((out / "train" / f"{arm}-seed0" / "model" / "provenance.json").read_text())
        assert provenance["start"] == str(out / "start" / "model")
        assert provenance["rows"] == (spec.data.splits["pool"] if arm.startswith("full") else 6)
    online = json.loads((out / "train" / "full-online-seed0" / "model" / "learnability.json").read_text())
    assert sum(online["groups"]) == spec.train.fields["max_steps"] * 2  # the online arm's sampler fed by its groups
    assert not (out / "train" / "full-seed0" / "model" / "learnability.json").exists()

    from curate.pipeline import stages

    model = out / "start" / "model" / "model.safetensors"
    stamp = model.stat().st_mtime_ns
    monkeypatch.setattr(stages.Stage, "execute", lambda self, launch=None: pytest.fail(f"{self.name} ran again"))
    assert curate_main(["demo", "--preset", "smoke", "--out", str(out)]) == 0  # resumes: nothing runs
    assert model.stat().st_mtime_ns == stamp
    assert curate_main(["demo", "--preset", "smoke", "--out", str(out), "--dry-run"]) == 0
    assert " 0 to run" in capsys.readouterr().out


def test_the_demo_presets_are_pipeline_files_and_the_default_keeps_its_calibration():
    # The default's calibration (README, 2026-11-29) lives in its pipeline file: a changed number
    # there is a new, uncalibrated experiment and must be a deliberate edit of this test too.
    raw = yaml.safe_load(demo.pipeline_file("default").read_text())
    assert raw["data"]["splits"] == {"sft": 20000, "pool": 256, "test": 500}
    assert raw["start"]["fields"]["max_steps"] == 540 and raw["train"]["fields"]["max_steps"] == 36
    assert raw["gate"] == {"max_p0": 0.30, "max_p1": 0.20, "min_learnable": 0.50}
    spec = demo.load("default")
    assert [e.name for e in spec.eval] == ["sampled", "greedy"] and spec.primary.num_samples == 4
    assert {arm.n for arm in spec.arms if arm.selector} == {64} and spec.seeds == (0, 1, 2) and spec.workers == 2
    for preset in demo.PRESETS:
        demo.load(preset)  # every preset's file is checked as `curate run` checks it


def test_demo_overrides_reach_the_pipeline_and_another_configuration_is_refused(tmp_path, capsys, monkeypatch):
    from curate import pipeline

    spec = demo.load("smoke", sft_steps=7, grpo_steps=3, seed=5, workers=1, device="cpu")
    assert (spec.start.fields["max_steps"], spec.train.fields["max_steps"], spec.data.seed, spec.workers) == (7, 3, 5, 1)
    budget = next(arm for arm in demo.load("default", grpo_steps=10).arms if "generation_budget" in arm.train)
    assert budget.train["generation_budget"] == 10 * 32  # plain GRPO's completions at the new step count
    ran = []
    monkeypatch.setattr(pipeline, "run", lambda spec, out: ran.append(spec) or tmp_path)
    (tmp_path / "report.json").write_text("{}")
    out = tmp_path / "demo"
    assert demo.run("smoke", out) == {} and len(ran) == 1
    assert curate_main(["demo", "--preset", "smoke", "--out", str(out), "--sft-steps", "31"]) == 2
    err = capsys.readouterr().err
    assert "holds a run of another configuration" in err and "sft_steps" in err and len(ran) == 1

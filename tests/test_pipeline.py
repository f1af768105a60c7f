"""`curate run PIPELINE.yaml`: a CPU pipeline (tiny model, GSM8K subset, LearnAlign and random at the
same budget, and the full pool) runs end to end into a paired comparison; every stage is cached by
its inputs (a rerun does nothing, an edited eval section reruns only evaluation and comparison);
a SIGKILL in each stage followed by reruns gives the report of an uninterrupted run; a bad file is
one line naming what is wrong, before any work."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from curate.cli import main as curate_main
from test_learnalign import curate_in_process, curate_small_chunks
from test_resume import run_with_kills

STAGES = ["score", "select", "train", "eval", "compare"]


def pipeline(model: Path, gsm8k_dir: Path) -> dict:
    la = {"num_rollouts": 2, "max_new_tokens": 8, "backend": "hf", "gradients": {"projection_dim": 128}}
    return {
        "name": "tiny", "model": str(model), "device": "cpu", "seeds": [0],
        "dataset": {"source": str(gsm8k_dir / "train.jsonl"), "limit": 12},
        "arms": [{"name": "learnalign", "selector": "learnalign", "n": 4, "config": la},
                 {"name": "random", "selector": "learnalign", "method": "random", "n": 4, "config": la},
                 {"name": "full"}],
        "train": {"kind": "grpo", "task": "gsm8k",
                  "fields": {"max_steps": 1, "num_generations": 2, "per_device_train_batch_size": 4,
                             "max_completion_length": 8, "dtype": "float32"}},
        "eval": {"task": "gsm8k", "limit": 6, "max_new_tokens": 12},
    }


def write(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def finished(tiny_model_dir, gsm8k_dir, tmp_path_factory):
    """One uninterrupted run: (pipeline dict, its file, its output folder)."""
    root = tmp_path_factory.mktemp("pipeline")
    spec = pipeline(tiny_model_dir, gsm8k_dir)
    path = write(root / "tiny.yaml", spec)
    assert curate_main(["run", str(path), "--out", str(root / "out")]) == 0
    return spec, path, root / "out"


def test_a_pipeline_runs_end_to_end_into_a_paired_comparison(finished):
    _, _, out = finished
    report = json.loads((out / "report" / "report.json").read_text())
    assert set(report["accuracy"]) == {"start", "learnalign", "random", "full"}
    pairs = {(c["a"], c["b"]) for c in report["comparisons"]}
    assert pairs == {("learnalign", "start"), ("random", "start"), ("full", "start"), ("learnalign", "random"),
                     ("learnalign", "full"), ("random", "full")}
    assert all({"mean_diff", "ci95", "p_value", "effect"} <= c.keys() for c in report["comparisons"])
    # the random tiny model solves nothing and learns nothing: the report says so instead of comparing
    assert any("no comparison here can show an effect" in w for w in report["warnings"])
    assert any("no pool row has 0 < p < 1" in w for w in report["warnings"])
    assert "**Warning:**" in (out / "report" / "report.md").read_text()
    assert report["eval"]["problems"] == 6 and (out / "report" / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert "| learnalign vs random |" in (out / "report" / "report.md").read_text()
    # one scoring for the two arms that share the selector configuration; the budgets hold
    assert len(list((out / "scores").iterdir())) == 1
    for arm, rows in (("learnalign", 4), ("random", 4), ("full", 12)):
        assert len((out / "selections" / arm / "selected.jsonl").read_text().splitlines()) == rows
    # provenance: every selection carries a dataset card, every trained model names its selection
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(out / "selections" / "random" / "README.md").data.to_dict()["curatekit"]
    assert (card["selector"], card["method"], card["selected"], card["budget"]["n"]) == ("learnalign", "random", 4, 4)
    provenance = json.loads((out / "train" / "learnalign-seed0" / "model" / "provenance.json").read_text())
    assert provenance["selection"] == str(out / "selections" / "learnalign") and provenance["rows"] == 4
    log = (out / "run.log").read_text()
    assert "[1/12] score" in log and "[12/12] compare" in log


def test_a_rerun_does_nothing_and_an_edited_eval_reruns_only_eval_and_compare(finished, tmp_path, monkeypatch,
                                                                              capsys):
    from curate.pipeline import stages

    spec, path, out = finished
    ran = []
    monkeypatch.setattr(stages.Stage, "execute", lambda self: ran.append(self.kind))
    assert curate_main(["run", str(path), "--out", str(out)]) == 0 and ran == []
    edited = copy.deepcopy(spec)
    edited["eval"]["limit"] = 5
    edited_path = write(tmp_path / "edited.yaml", edited)
    capsys.readouterr()
    assert curate_main(["run", str(edited_path), "--out", str(out), "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "12 stages, 5 to run" in plan and "[cached] train learnalign seed 0" in plan
    assert "[   run] eval start" in plan and "[   run] compare" in plan
    assert ran == []  # a dry run runs nothing
    # a hand-broken marker (a list, not a record) means "not done", not a traceback
    marker = out / "report" / "stage.json"
    saved = marker.read_text()
    marker.write_text("[]")
    assert curate_main(["run", str(path), "--out", str(out), "--dry-run"]) == 0
    assert "[   run] compare" in capsys.readouterr().out
    marker.write_text(saved)


def test_calibration_warns_only_when_the_comparison_cannot_show_an_effect(tmp_path):
    # Kills a gate that never fires (a 0%-everywhere comparison reported as a finding) and one that
    # always fires (a real difference hidden behind a warning).
    from curate.pipeline.report import calibration

    assert calibration({"start": [[0.0, 0.0]], "a": [[0.0, 0.0], [0.0, 0.0]]})
    assert calibration({"start": [[1.0, 1.0]], "a": [[1.0, 1.0]]})
    assert calibration({"start": [[0.0, 0.0]], "a": [[1.0, 0.0]]}) == []
    scored = tmp_path / "scores" / "learnalign-x"
    scored.mkdir(parents=True)
    (scored / "scored.jsonl").write_text('{"success_rate": 0.0}\n{"success_rate": 1.0}\n')
    assert len(calibration({"start": [[0.0, 1.0]]}, tmp_path / "scores")) == 1
    (scored / "scored.jsonl").write_text('{"success_rate": 0.0}\n{"success_rate": 0.5}\n')
    assert calibration({"start": [[0.0, 1.0]]}, tmp_path / "scores") == []


# Kills a stage marked done before its work is (a rerun then skips it and reads nothing), and keys
# that miss what a stage reads (a rerun would use a half-finished upstream). The reference is an
# uninterrupted run with the same chunking; the check goes down to every completion generated.
def test_kills_in_every_stage_then_reruns_give_the_uninterrupted_run(finished, tmp_path, monkeypatch):
    spec, _, _ = finished
    path = write(tmp_path / "tiny.yaml", spec)
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    # rollouts:1 kills inside the scoring stage's work; the others after a stage's work, before its marker
    run_with_kills(tmp_path / "log", ["rollouts:1", *(f"{kind}:1" for kind in STAGES)], curate_small_chunks, 4,
                   ["run", str(path), "--out", str(killed)])
    assert curate_in_process(monkeypatch, 4, ["run", str(path), "--out", str(whole)]) == 0
    read = lambda p: [json.loads(line) for line in p.read_text().splitlines()]  # noqa: E731
    assert json.loads((killed / "report" / "report.json").read_text()) == \
        json.loads((whole / "report" / "report.json").read_text())
    for name in ("learnalign", "random"):
        got, want = (read(out / "selections" / name / "scored.jsonl") for out in (killed, whole))
        assert [r["success_rate"] for r in got] == [r["success_rate"] for r in want]
        assert [r["row_index"] for r in got if r["selected"]] == [r["row_index"] for r in want if r["selected"]]
    evals = sorted(p.name for p in (whole / "eval").iterdir())
    assert len(evals) == 4
    for name in evals:
        got, want = (read(out / "eval" / name / "samples.jsonl") for out in (killed, whole))
        assert [s["completion"] for s in got] == [s["completion"] for s in want], name


@pytest.mark.parametrize("change, message", [
    (lambda s: s["arms"][0].update(selector="learnalgin"), "unknown selector 'learnalgin' (did you mean 'learnalign'?)"),
    (lambda s: s["arms"][1].update(method="gradients"), "unknown method 'gradients' (did you mean 'gradient'?)"),
    (lambda s: s["arms"][0].update(method="cdas"), "method 'cdas' is not one of learnalign's"),
    (lambda s: s["train"].update(kind="dpo"), "unknown kind 'dpo'"),
    (lambda s: s["eval"].update(task="gsm9k"), "eval.task: unknown task 'gsm9k'"),
    (lambda s: s.update(evals={}), "unknown field 'evals' (did you mean 'eval'?)"),
    (lambda s: s["train"].update(recipe="nope.yaml"), "train.recipe: no such file: nope.yaml"),
    (lambda s: s["arms"].append({"name": "full"}), "names must differ"),
    (lambda s: s["arms"][2].update(n=3), "a full-pool arm (no selector) takes no method, n"),
    (lambda s: s["eval"].update(limit="ten"), "eval.limit: expected an integer, got 'ten'"),
    (lambda s: s["arms"][0].update(push_to_hub="me/sel"), "push_to_hub me/sel: the hub cannot be reached in offline"),
])
def test_a_bad_pipeline_is_one_line_before_any_work(tiny_model_dir, gsm8k_dir, tmp_path, capsys, monkeypatch,
                                                    change, message):
    from curate.pipeline import stages

    spec = pipeline(tiny_model_dir, gsm8k_dir)
    change(spec)
    path = write(tmp_path / "bad.yaml", spec)
    monkeypatch.setattr(stages.Stage, "execute", lambda self: pytest.fail("a stage ran"))
    assert curate_main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and str(path) in err, err
    assert not (tmp_path / "out").exists()


def test_the_shipped_pipelines_validate_with_a_dry_run(tiny_model_dir, tmp_path, capsys, monkeypatch):
    from curate.pipeline import load_pipeline

    shipped = sorted((Path(__file__).parents[1] / "recipes" / "pipelines").glob("*.yaml"))
    assert shipped
    for path in shipped:
        spec = load_pipeline(path) if "tiny" not in path.name else None
        if spec is None:  # the CPU pipeline names runs/tiny: point it at the test's tiny model
            raw = yaml.safe_load(path.read_text())
            raw["model"] = str(tiny_model_dir)
            path = write(tmp_path / path.name, raw)
        assert curate_main(["run", str(path), "--out", str(tmp_path / path.stem), "--dry-run"]) == 0
        assert "stages, " in capsys.readouterr().out and not (tmp_path / path.stem).exists()

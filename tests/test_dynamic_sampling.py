"""Dynamic sampling inside TRL's GRPO (rl.dynamic, ``dynamic_sampling: true``), on a pool where two
thirds of the prompts always get the same reward (p = 0 or p = 1) and the rest a coin's.

The verdicts come from outside the code under test: the training batches are read where TRL's loss
receives them (``GRPOTrainer.compute_loss``), and the generation rounds are counted by the task's
own verifier, which TRL calls once per scored generation batch."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
RIGGED = "gsm8k-rigged"
G, PROMPTS_PER_STEP, STEPS = 4, 2, 4


def rigged_verify(rows, completions, options) -> list:
    """Right for an "ALWAYS" question, wrong for a "NEVER" one, else a coin fixed by the text; each
    call's questions are written to ``$RIGGED_CALLS`` (one JSON line per call) when it is set."""
    from eval.tasks import Verdict

    questions = [row["question"] for row in rows]
    if os.environ.get("RIGGED_CALLS"):
        with open(os.environ["RIGGED_CALLS"], "a") as f:
            f.write(json.dumps(questions) + "\n")

    def right(question: str, text: str) -> bool:
        if question.startswith("ALWAYS"):
            return True
        return False if question.startswith("NEVER") else zlib.crc32(text.encode()) % 2 == 0

    return [[Verdict(right(q, text)) for text in group] for q, group in zip(questions, completions)]


def register_rigged_task(monkeypatch=None) -> None:
    from eval.tasks import TASKS, get_task, register_task

    task = dataclasses.replace(get_task("gsm8k"), name=RIGGED, verify=rigged_verify)
    if monkeypatch is not None:
        monkeypatch.setitem(TASKS, RIGGED, task)
    elif RIGGED not in TASKS:
        register_task(task)


def rigged_rows(path: Path, gsm8k_dir: Path) -> Path:
    """Twelve GSM8K rows: 4 always right, 4 always wrong, 4 a coin."""
    lines = (gsm8k_dir / "train.jsonl").read_text().splitlines()[:12]
    tags = ["ALWAYS ", "NEVER ", ""]
    rows = [{**row, "question": tags[i % 3] + row["question"]} for i, row in enumerate(map(json.loads, lines))]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def grpo_args(model: Path, data: Path, out: Path, *more: str) -> list[str]:
    return ["--model_name_or_path", str(model), "--dataset", str(data), "--task", RIGGED, "--output_dir", str(out),
            "--max_steps", str(STEPS), "--num_generations", str(G), "--per_device_train_batch_size",
            str(PROMPTS_PER_STEP * G), "--max_completion_length", "8", "--use_cpu", "true", "--chat", "false",
            "--use_peft", "true", "--report_to", "none", "--save_strategy", "no", "--logging_steps", "1",
            "--seed", "5", "--dynamic_sampling", "true", *more]


def spy_on_the_loss(monkeypatch) -> list:
    """The advantages of every batch TRL's loss is computed on."""
    import trl

    batches: list = []
    original = trl.GRPOTrainer.compute_loss

    def compute_loss(self, model, inputs, *args, **kwargs):
        batches.append(inputs["advantages"].detach().cpu().tolist())
        return original(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(trl.GRPOTrainer, "compute_loss", compute_loss)
    return batches


def verifier_calls(path: Path) -> list[list[str]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def run(monkeypatch, tmp_path, tiny_model_dir, gsm8k_dir, *more: str) -> tuple[list, list, list[dict]]:
    """A rigged run: (the loss's batches, the verifier's calls, the training log lines)."""
    from rl import grpo

    register_rigged_task(monkeypatch)
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("RIGGED_CALLS", str(calls))
    batches = spy_on_the_loss(monkeypatch)
    data = rigged_rows(tmp_path / "rows.jsonl", gsm8k_dir)
    assert grpo.main(grpo_args(tiny_model_dir, data, tmp_path / "out", *more)) == 0
    logs = json.loads((tmp_path / "out" / "training_log.json").read_text())
    return batches, verifier_calls(calls), [e for e in logs if "dynamic_sampling/rounds" in e]


# Kills a filter that keeps every group (or tests the wrong thing): a rigged group's rows would
# reach the loss with advantage 0; and metrics left out of the logs.
def test_no_training_batch_holds_a_zero_variance_group(tiny_model_dir, gsm8k_dir, tmp_path, monkeypatch):
    batches, calls, logs = run(monkeypatch, tmp_path, tiny_model_dir, gsm8k_dir,
                               "--dynamic_sampling_max_rounds", "40")
    assert len(batches) == STEPS and all(len(b) == PROMPTS_PER_STEP * G for b in batches)
    assert all(abs(a) > 1e-6 for batch in batches for a in batch)
    assert len(calls) > STEPS  # the pool forced refills
    rigged = sum(q.startswith(("ALWAYS", "NEVER")) for call in calls for q in call) / sum(map(len, calls))
    assert rigged > 0.4  # the verifier saw the p = 0 and p = 1 prompts: they were generated, then dropped
    assert len(logs) == STEPS and sum(e["dynamic_sampling/rounds"] for e in logs) == len(calls)
    assert all(e["dynamic_sampling/zero_std_after"] == 0 and e["dynamic_sampling/cap_hits"] == 0 for e in logs)
    assert sum(e["dynamic_sampling/zero_std_before"] for e in logs) / STEPS > 0.3
    assert logs[-1]["dynamic_sampling/generations"] == logs[-1]["generations"] == len(calls) * PROMPTS_PER_STEP * G
    record = json.loads((tmp_path / "out" / "dynamic_sampling.json").read_text())
    assert [r["rounds"] for r in record["generations"]] == [e["dynamic_sampling/rounds"] for e in logs]


# Kills a cap that is not honoured (rounds past it) and cap hits that are not reported as they
# happened (counted from the batches the loss received, which then hold zero-advantage rows).
def test_the_refill_cap_is_honoured_and_reported(tiny_model_dir, gsm8k_dir, tmp_path, monkeypatch):
    batches, calls, logs = run(monkeypatch, tmp_path, tiny_model_dir, gsm8k_dir, "--dynamic_sampling_max_rounds", "2")
    assert len(batches) == STEPS and all(len(b) == PROMPTS_PER_STEP * G for b in batches)
    assert STEPS < len(calls) <= 2 * STEPS
    filled = [sum(abs(a) <= 1e-6 for a in batch) // G for batch in batches]
    assert sum(filled) > 0  # this pool and seed hit the cap
    assert [e["dynamic_sampling/cap_hits"] for e in logs] == [float(n > 0) for n in filled]
    assert [e["dynamic_sampling/zero_std_after"] for e in logs] == [n / PROMPTS_PER_STEP for n in filled]


# Kills a budget that is not enforced: the run would go on to max_steps.
def test_the_generation_budget_stops_training_before_it_is_exceeded(tiny_model_dir, gsm8k_dir, tmp_path, monkeypatch):
    budget = 5 * PROMPTS_PER_STEP * G
    batches, calls, logs = run(monkeypatch, tmp_path, tiny_model_dir, gsm8k_dir, "--max_steps", "20",
                               "--generation_budget", str(budget))
    assert len(calls) * PROMPTS_PER_STEP * G <= budget
    assert len(calls) * PROMPTS_PER_STEP * G > budget - PROMPTS_PER_STEP * G  # it stopped at the budget, not before
    assert 1 <= len(batches) <= 5 and logs[-1]["dynamic_sampling/generations"] == len(calls) * PROMPTS_PER_STEP * G


def test_dynamic_settings_are_checked_before_any_work(tiny_model_dir, gsm8k_dir, tmp_path, capsys, monkeypatch):
    from rl import grpo

    register_rigged_task(monkeypatch)
    data = rigged_rows(tmp_path / "rows.jsonl", gsm8k_dir)
    args = grpo_args(tiny_model_dir, data, tmp_path / "out")
    assert grpo.main([*args, "--dynamic_sampling_max_rounds", "0"]) == 2
    assert "dynamic_sampling_max_rounds must be at least 1, got 0" in capsys.readouterr().err
    plain = [a for a in args if a not in ("--dynamic_sampling", "true")]
    assert grpo.main([*plain, "--generation_budget", "100"]) == 2
    assert "generation_budget needs dynamic_sampling: true" in capsys.readouterr().err
    assert grpo.main([*args, "--generation_budget", str(G)]) == 2
    assert f"generation_budget {G} is smaller than one generation batch" in capsys.readouterr().err
    assert grpo.main([*args, "--multi_objective_aggregation", "normalize_then_sum"]) == 2
    assert "dynamic_sampling needs multi_objective_aggregation 'sum_then_normalize'" in capsys.readouterr().err
    assert grpo.main([*args, "--eval_dataset", str(data)]) == 2
    assert "eval_dataset needs eval_strategy" in capsys.readouterr().err
    missing = str(tmp_path / "no-such.jsonl")
    assert grpo.main([*args, "--eval_dataset", missing, "--eval_strategy", "steps", "--eval_steps", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no-such.jsonl" in err, err
    assert not (tmp_path / "out").exists()


RUNNER = """
import json, os, sys
sys.path.insert(0, {tests!r})
os.environ["RIGGED_CALLS"] = os.environ["RIGGED_CALLS_DIR"] + "/rank" + os.environ["RANK"] + ".jsonl"
import trl
from test_dynamic_sampling import register_rigged_task
register_rigged_task()
original = trl.GRPOTrainer.compute_loss
def compute_loss(self, model, inputs, *args, **kwargs):
    with open(os.environ["RIGGED_CALLS_DIR"] + "/loss" + os.environ["RANK"] + ".jsonl", "a") as f:
        f.write(json.dumps(inputs["advantages"].tolist()) + "\\n")
    return original(self, model, inputs, *args, **kwargs)
trl.GRPOTrainer.compute_loss = compute_loss
from rl import grpo
sys.exit(grpo.main(sys.argv[1:]))
"""


# Kills refills drawn differently on each rank (a group split across the ranks would mix two
# prompts) and decisions taken on a rank's own half of a group.
def test_two_ranks_filter_and_refill_alike(tiny_model_dir, gsm8k_dir, tmp_path):
    data = rigged_rows(tmp_path / "rows.jsonl", gsm8k_dir)
    script = tmp_path / "grpo_rigged.py"
    script.write_text(RUNNER.format(tests=str(Path(__file__).parent)))
    args = grpo_args(tiny_model_dir, data, tmp_path / "out", "--dynamic_sampling_max_rounds", "40",
                     "--learnability_sampling", "true", "--learnability_floor", "0.5")
    args[args.index("--per_device_train_batch_size") + 1] = str(G // 2)  # each group split across the two ranks
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script), *args]
    done = subprocess.run(launch, capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[1],
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "RIGGED_CALLS_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-3000:]
    calls = [verifier_calls(tmp_path / f"rank{r}.jsonl") for r in (0, 1)]
    assert len(calls[0]) == len(calls[1]) > STEPS
    assert all(len(set(a + b)) == 1 for a, b in zip(*calls))  # one prompt per round, on both ranks
    losses = [verifier_calls(tmp_path / f"loss{r}.jsonl") for r in (0, 1)]
    assert len(losses[0]) == len(losses[1]) == STEPS
    assert all(abs(a) > 1e-6 for rank in losses for batch in rank for a in batch)
    records = [json.loads((tmp_path / "out" / f"dynamic_sampling-rank{r}.json").read_text()) for r in (0, 1)]
    assert records[0] == records[1] and records[0]["generated"] == len(calls[0]) * G

"""Learnability sampling inside TRL's GRPO (rl.online, ``learnability_sampling: true``): the
trainer draws its prompts from the online estimates, every group scored updates them, the logs and
``learnability.json`` carry them, and two ranks under ``accelerate launch`` keep the same estimates."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_learnalign import register_coin_task

pytestmark = pytest.mark.slow
STEPS, PROMPTS_PER_STEP, G = 3, 2, 2


def rows_with_offline_rates(path: Path, gsm8k_dir: Path) -> Path:
    """Eight GSM8K rows; the offline success rate says rows 0-3 are solved always (p = 1, no signal)
    and rows 4-7 half the time."""
    lines = (gsm8k_dir / "train.jsonl").read_text().splitlines()[:8]
    rows = [{**json.loads(line), "offline_p": 1.0 if i < 4 else 0.5} for i, line in enumerate(lines)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def grpo_args(model: Path, data: Path, out: Path) -> list[str]:
    return ["--model_name_or_path", str(model), "--dataset", str(data), "--task", "gsm8k-coin",
            "--output_dir", str(out), "--max_steps", str(STEPS), "--num_generations", str(G),
            "--per_device_train_batch_size", str(PROMPTS_PER_STEP * G), "--max_completion_length", "8",
            "--use_cpu", "true", "--chat", "false", "--use_peft", "true", "--report_to", "none",
            "--save_strategy", "no", "--logging_steps", "1", "--seed", "3",
            "--learnability_sampling", "true", "--learnability_floor", "0.001",
            "--learnability_offline_column", "offline_p", "--learnability_offline_weight", "1000000"]


# Kills a trainer that keeps TRL's own sampler (every row drawn alike: rows 0-3, at p = 1 offline,
# would be trained on), estimates that no scored group updates, and metrics left out of the logs.
def test_the_trainer_draws_from_the_estimates_and_every_group_updates_them(tiny_model_dir, gsm8k_dir, tmp_path,
                                                                          monkeypatch):
    from rl import grpo

    register_coin_task(monkeypatch)
    data = rows_with_offline_rates(tmp_path / "rows.jsonl", gsm8k_dir)
    assert grpo.main(grpo_args(tiny_model_dir, data, tmp_path / "out")) == 0
    record = json.loads((tmp_path / "out" / "learnability.json").read_text())
    assert sum(record["groups"]) == STEPS * PROMPTS_PER_STEP  # every group scored fed the estimator
    assert record["groups"][:4] == [0, 0, 0, 0] and sum(record["groups"][4:]) == STEPS * PROMPTS_PER_STEP
    assert len(record["histograms"]) == STEPS and all(sum(h["counts"]) == 8 for h in record["histograms"])
    logs = json.loads((tmp_path / "out" / "training_log.json").read_text())
    steps = [entry for entry in logs if "learnability/mean_p" in entry]
    assert len(steps) == STEPS and all(0 <= e["learnability/learnable_share"] <= 1 for e in steps)


# Kills held-out rows taken for training groups: TRL's evaluation (eval_dataset, every eval_steps)
# would feed the estimates, or fail on rows without a row_index.
def test_evaluation_during_training_leaves_the_estimates_alone(tiny_model_dir, gsm8k_dir, tmp_path, monkeypatch):
    from rl import grpo

    register_coin_task(monkeypatch)
    data = rows_with_offline_rates(tmp_path / "rows.jsonl", gsm8k_dir)
    evals = ["--eval_dataset", str(gsm8k_dir / "test.jsonl"), "--eval_limit", "4", "--eval_strategy", "steps",
             "--eval_steps", "1", "--per_device_eval_batch_size", "4", "--num_generations_eval", "1"]
    assert grpo.main([*grpo_args(tiny_model_dir, data, tmp_path / "out"), *evals]) == 0
    record = json.loads((tmp_path / "out" / "learnability.json").read_text())
    assert sum(record["groups"]) == STEPS * PROMPTS_PER_STEP
    logs = json.loads((tmp_path / "out" / "training_log.json").read_text())
    assert [e["step"] for e in logs if "eval_reward" in e] == list(range(1, STEPS + 1))
    # without dynamic sampling, one generation batch per step
    assert [e["generations"] for e in logs if "loss" in e] == [s * PROMPTS_PER_STEP * G for s in range(1, STEPS + 1)]


def test_learnability_settings_are_checked_before_any_work(tiny_model_dir, gsm8k_dir, tmp_path, capsys, monkeypatch):
    from rl import grpo

    register_coin_task(monkeypatch)
    data = rows_with_offline_rates(tmp_path / "rows.jsonl", gsm8k_dir)
    args = grpo_args(tiny_model_dir, data, tmp_path / "out")
    bad = [*args, "--learnability_prior", "1"]
    assert grpo.main(bad) == 2 and "learnability_prior: expected 'a,b'" in capsys.readouterr().err
    bad = [*args, "--learnability_floor", "0"]
    assert grpo.main(bad) == 2 and "floor must be in (0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


RUNNER = """
import sys
sys.path.insert(0, {tests!r})
from test_learnalign import register_coin_task
register_coin_task()
from rl import grpo
sys.exit(grpo.main(sys.argv[1:]))
"""


# Kills estimates updated from one rank's own rewards (each rank sees half of every generation
# batch): the ranks would disagree and draw different prompts, and TRL's groups would mix prompts.
def test_two_ranks_under_accelerate_launch_keep_one_estimate(tiny_model_dir, gsm8k_dir, tmp_path):
    data = rows_with_offline_rates(tmp_path / "rows.jsonl", gsm8k_dir)
    script = tmp_path / "grpo_coin.py"
    script.write_text(RUNNER.format(tests=str(Path(__file__).parent)))
    args = grpo_args(tiny_model_dir, data, tmp_path / "out")
    args[args.index("--per_device_train_batch_size") + 1] = str(G)  # two ranks: the same prompts per step
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script), *args]
    run = subprocess.run(launch, capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[1],
                         env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((tmp_path / "out" / f"learnability-rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]
    assert sum(ranks[0]["groups"]) == STEPS * PROMPTS_PER_STEP and ranks[0]["groups"][:4] == [0, 0, 0, 0]

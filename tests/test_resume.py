"""A killed and resumed run gives the result of an uninterrupted one.

Each test runs a command in a child process with ``CURATEKIT_KILL_AFTER=<stage>:<n>`` (the test
hook of :mod:`curate.core.cache`), so the process SIGKILLs itself at a fixed point of a stage; reruns it
in the same folders, killed at the next stage, and so on; then runs it to the end. The outcome must
equal that of an uninterrupted run in other folders (made here, in-process, from another RNG
history): the same selected rows and scores within 1e-6. Chunks are small, so a stage has several
and the kill falls between them. Rewards come from ``gsm8k-coin``'s stand-in verifier (see
test_learnalign), so success rates are mixed and the scores are not all 0.

The children are forked from a multiprocessing forkserver that has imported torch, transformers
and TRL once (and run nothing), so a run costs its work, not seconds of imports; each child is a
process of its own, really killed.

Every run starts from a global RNG state of its own (:func:`scramble_global_rngs`), so together the
tests kill: a fresh LoRA adapter drawn from the global RNG (the gradient chunks computed after a
restart come from another adapter), rollouts or GRPO/SFT sampling not seeded from the config,
rollout seeds that depend on where a run restarted, and a warmup that a rerun retrains under new
file times (the caches keyed by its files then miss).
"""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from test_learnalign import (COIN, assert_same_selection, coin_verify, curate_in_process, curate_small_chunks,
                             read_jsonl)

from curate.core.cache import KILL_ENV

pytestmark = pytest.mark.slow
FORKSERVER = multiprocessing.get_context("forkserver")
FORKSERVER.set_forkserver_preload(["test_resume", "trl", "peft", "sklearn.cluster", "sentence_transformers"])


def scramble_global_rngs() -> None:
    """Start from a global RNG state of this process's own, as a separate session would: a draw
    that is not seeded from the config then differs between runs."""
    import random

    import torch

    seed = os.getpid() + int.from_bytes(os.urandom(4), "little")
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def child(log: Path, kill: str | None, job: Callable[..., int], *args) -> None:
    """In the child: output to ``log``, the kill hook armed at ``kill`` (or not), ``job(*args)``."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.pop(KILL_ENV, None)
    os.environ.update({KILL_ENV: kill} if kill else {})
    scramble_global_rngs()
    sys.exit(job(*args) or 0)


def run_with_kills(log: Path, kills: list[str], job: Callable[..., int], *args) -> None:
    """``job(*args)`` in a child killed at each of ``kills`` in turn (each rerun resumes the one
    before), then in one that runs to the end."""
    for kill in [*kills, None]:
        process = FORKSERVER.Process(target=child, args=(log, kill, job, *args))
        process.start()
        process.join(timeout=600)
        expected = -signal.SIGKILL if kill else 0
        assert process.exitcode == expected, f"at {kill}: exit code {process.exitcode}\n{log.read_text()[-3000:]}"


def learnalign_args(gsm8k_dir: Path, model: Path, out: Path, *extra: str) -> list[str]:
    """12 rows in chunks of 4 (three chunks per stage), G = 4, mixed rewards."""
    return ["select", "learnalign", "--dataset", str(gsm8k_dir / "train.jsonl"), "--limit", "12",
            "--model", str(model), "--n", "4", "--num-rollouts", "4", "--max-new-tokens", "8",
            "--projection-dim", "256", "--device", "cpu", "--backend", "hf", "--task", COIN,
            "--out", str(out / "out"), "--cache-dir", str(out / "cache"), *extra]


def uninterrupted(monkeypatch, args: list[str], chunk_size: int) -> None:
    """The reference run, in this process, with the children's task and chunk size."""
    scramble_global_rngs()
    assert curate_in_process(monkeypatch, chunk_size, args) == 0


# Without warmup the gradients come from a fresh LoRA: the chunks computed after the gradient-stage
# kill run in a process that generated nothing, so an adapter drawn from the global RNG differs.
def test_learnalign_resumes_after_kills_in_rollouts_gradients_and_scoring(tiny_model_dir, gsm8k_dir, tmp_path,
                                                                          monkeypatch):
    args = learnalign_args(gsm8k_dir, tiny_model_dir, tmp_path / "killed", "--no-warmup")
    run_with_kills(tmp_path / "log", ["rollouts:1", "gradients:1", "scoring:1"], curate_small_chunks, 4, args)
    uninterrupted(monkeypatch, learnalign_args(gsm8k_dir, tiny_model_dir, tmp_path / "whole", "--no-warmup"), 4)
    assert_same_selection(tmp_path / "killed" / "out", tmp_path / "whole" / "out")


# The warmup is killed trained but not yet in place, then the rollouts half-way: the rerun must
# retrain the same adapter, and the next one reuse it (not retrain it under new file times).
def test_learnalign_resumes_after_kills_in_warmup_and_rollouts(tiny_model_dir, gsm8k_dir, tmp_path, monkeypatch):
    warmup = ["--warmup-samples", "4", "--warmup-steps", "1"]
    args = learnalign_args(gsm8k_dir, tiny_model_dir, tmp_path / "killed", *warmup)
    run_with_kills(tmp_path / "log", ["warmup:1", "rollouts:2"], curate_small_chunks, 4, args)
    assert len(list((tmp_path / "killed" / "cache").glob("rollouts-*"))) == 1  # one θ_s, its cache resumed
    uninterrupted(monkeypatch, learnalign_args(gsm8k_dir, tiny_model_dir, tmp_path / "whole", *warmup), 4)
    assert_same_selection(tmp_path / "killed" / "out", tmp_path / "whole" / "out")


def cdas_args(gsm8k_dir: Path, model: Path, out: Path) -> list[str]:
    """40 rows in IFD chunks of 16 (three chunks), three clusters."""
    return ["select", "cdas", "--dataset", str(gsm8k_dir / "train.jsonl"), "--limit", "40", "--model", str(model),
            "--out", str(out / "cdas"), "--num-clusters", "3", "--ratio", "0.5", "--device", "cpu",
            "--cache-dir", str(out / "cache")]


def test_cdas_resumes_after_kills_in_ifd_and_scoring(tiny_model_dir, gsm8k_dir, tmp_path, monkeypatch):
    run_with_kills(tmp_path / "log", ["ifd:1", "scoring:1"], curate_small_chunks, 16,
                   cdas_args(gsm8k_dir, tiny_model_dir, tmp_path / "killed"))
    uninterrupted(monkeypatch, cdas_args(gsm8k_dir, tiny_model_dir, tmp_path / "whole"), 16)
    got, want = (read_jsonl(tmp_path / name / "cdas" / "selected.jsonl") for name in ("killed", "whole"))
    assert [r["question"] for r in got] == [r["question"] for r in want] and len(want) > 0
    assert [r["cluster"] for r in got] == [r["cluster"] for r in want]
    np.testing.assert_allclose([r["ifd"] for r in got], [r["ifd"] for r in want], rtol=0, atol=1e-6)


def micro_pipeline(path: Path) -> Path:
    """The demo's pipeline at its smallest: generated data, a one-layer model built from scratch
    and trained by SFT for a few steps, six pool prompts scored in chunks of three, LearnAlign's top
    two and the full pool, one GRPO step each, greedy held-out accuracy; seconds per stage."""
    import yaml

    scoring = {"num_rollouts": 4, "max_new_tokens": 8, "backend": "hf", "chat": False, "chunk_size": 3,
               "gradients": {"projection_dim": 128, "beta": 0.0}}
    spec = {
        "name": "micro", "device": "cpu", "seeds": [0],
        "data": {"generator": "arith", "seed": 0, "splits": {"sft": 100, "pool": 6, "test": 4},
                 "config": {"slip_items": ["coins"], "slip_rate": 0.5}},
        "start": {"data": "data:sft",
                  "tiny": {"hidden_size": 64, "num_layers": 1, "num_heads": 1, "num_kv_heads": 1,
                           "intermediate_size": 128, "vocab_size": 300},
                  "fields": {"chat": False, "max_length": 128, "dtype": "float32", "per_device_train_batch_size": 16,
                             "max_steps": 2, "learning_rate": 2e-3, "save_strategy": "no", "report_to": "none",
                             "seed": 0}},
        "dataset": {"source": "data:pool"},
        "arms": [{"name": "learnalign", "selector": "learnalign", "n": 2, "config": scoring}, {"name": "full"}],
        "train": {"kind": "grpo", "task": "arith",
                  "fields": {"chat": False, "use_peft": False, "max_steps": 1, "beta": 0.0, "num_generations": 4,
                             "per_device_train_batch_size": 8, "max_completion_length": 8, "dtype": "float32"}},
        "eval": {"task": "arith", "data": "data:test", "max_new_tokens": 8, "chat": False, "backend": "hf"},
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def coin_arith() -> None:
    """Give the demo's ``arith`` task the coin verifier: a barely trained model then still gets mixed
    rewards, so the scores differ across prompts and GRPO moves the weights (its greedy answers, and
    so the accuracies, stay alike: the weights are compared instead)."""
    from dataclasses import replace

    from eval.tasks import TASKS

    TASKS["arith"] = replace(TASKS["arith"], verify=coin_verify)


def pipeline_run(path: Path, out: Path) -> int:
    from curate.cli import main as curate_main

    coin_arith()
    return curate_main(["run", str(path), "--out", str(out)])


# The demo's machinery (a pipeline with data and start stages) killed after the data are written
# (not yet marked), after SFT (trained, not yet marked), in the scoring gradients, after the first
# GRPO arm (trained, not yet marked) and in the first evaluation's generation.
def test_a_pipeline_with_data_and_start_resumes_after_kills_in_every_kind_of_stage(tmp_path, monkeypatch):
    import torch
    from safetensors.torch import load_file

    from eval.tasks import TASKS

    path = micro_pipeline(tmp_path / "micro.yaml")
    run_with_kills(tmp_path / "log", ["data:1", "start:1", "gradients:1", "train:1", "generate (hf):1"],
                   pipeline_run, path, tmp_path / "killed")
    monkeypatch.setitem(TASKS, "arith", TASKS["arith"])
    scramble_global_rngs()
    assert pipeline_run(path, tmp_path / "whole") == 0
    got, want = (json.loads((tmp_path / name / "report" / "report.json").read_text()) for name in ("killed", "whole"))
    assert got == want
    for model in ("start/model", "train/learnalign-seed0/model", "train/full-seed0/model"):
        got, want = (load_file(tmp_path / name / model / "model.safetensors") for name in ("killed", "whole"))
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=0, atol=1e-6, msg=f"{model}: {key}")
    start, moved = (load_file(tmp_path / "whole" / model / "model.safetensors")
                    for model in ("start/model", "train/full-seed0/model"))
    assert max((start[key] - moved[key]).abs().max().item() for key in start) > 1e-5  # GRPO did train
    scored = {name: read_jsonl(tmp_path / name / "selections" / "learnalign-seed0" / "scored.jsonl")
              for name in ("killed", "whole")}
    for column in ("success_rate", "score", "gradient_score"):
        np.testing.assert_allclose([r[column] for r in scored["killed"]], [r[column] for r in scored["whole"]],
                                   rtol=0, atol=1e-6)
    assert np.ptp([r["score"] for r in scored["whole"]]) > 0
    for split in ("sft", "pool", "test"):
        assert (tmp_path / "killed" / "data" / f"{split}.jsonl").read_text() == \
            (tmp_path / "whole" / "data" / f"{split}.jsonl").read_text()

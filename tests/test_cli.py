"""The `curate` CLI: help, `data inspect`, `model tiny`, and one-line errors with exit code 2."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from curate.cli import main

CURATE = [sys.executable, "-m", "curate.cli"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([*CURATE, *args], capture_output=True, text=True, env=env, timeout=300)


def test_help_lists_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "data" in result.stdout and "model" in result.stdout


def test_eval_data_help_names_each_tasks_own_default(capsys):
    # `eval arith --data` once said its default was GSM8K; each task's help names its own data.
    helps = {}
    for task in ("gsm8k", "arith"):
        with pytest.raises(SystemExit):
            main(["eval", task, "--help"])
        text = capsys.readouterr().out
        helps[task] = " ".join(text[text.index("\n  --data DATA"):text.index("\n  --split")].split())
    assert "GSM8K" in helps["gsm8k"] and "GSM8K" not in helps["arith"] and "500 test" in helps["arith"]


def test_inspect_gsm8k_with_tiny_tokenizer(gsm8k_dir, tiny_model_dir, tmp_path):
    out = tmp_path / "report.json"
    result = run_cli("data", "inspect", str(gsm8k_dir / "test.jsonl"), "--tokenizer", str(tiny_model_dir),
                     "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "rows:    1319" in result.stdout and "lengths in tokens" in result.stdout
    report = json.loads(out.read_text())
    assert report["rows"] == 1319
    assert (report["prompt_column"], report["response_column"]) == ("question", "answer")
    # Token counts agree with the tokenizer applied directly.
    from curate.llm.models import load_tokenizer

    tokenizer = load_tokenizer(tiny_model_dir)
    first = json.loads((gsm8k_dir / "test.jsonl").read_text().splitlines()[0])
    n_first = len(tokenizer(first["question"], add_special_tokens=False).input_ids)
    assert report["lengths"]["prompt"]["min"] <= n_first <= report["lengths"]["prompt"]["max"]
    s = report["lengths"]["total"]
    assert s["min"] <= s["p50"] <= s["p90"] <= s["p99"] <= s["max"]


def test_inspect_json_and_explicit_columns(tmp_path, capsys):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"q": "abc", "a": "de"}) + "\n" for _ in range(3)))
    assert main(["data", "inspect", str(path), "--prompt-column", "q", "--response-column", "a", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["unit"] == "characters"
    assert report["lengths"]["total"]["mean"] == 5


def test_model_tiny_builds_a_loadable_model(tmp_path, gsm8k_dir):
    out = tmp_path / "tiny"
    assert main(["model", "tiny", "--out", str(out), "--texts", str(gsm8k_dir / "test.jsonl"),
                 "--limit", "50", "--vocab-size", "400"]) == 0
    from curate.llm.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(out, device="cpu")
    assert model.config.vocab_size == len(tokenizer) <= 400


# ---- bad input: one line on stderr, exit code 2, no traceback, nothing written ----------------

BAD_INPUTS = {
    "unknown file type": (["data", "inspect", "{tmp}/d.txt"], "unknown file type '.txt'"),
    "missing path": (["data", "inspect", "{tmp}/missing.jsonl"], "dataset path does not exist"),
    "unreadable content": (["data", "inspect", "{tmp}/bad.parquet"], "cannot read"),
    "missing column": (["data", "inspect", "{tmp}/ok.jsonl", "--prompt-column", "prompt"],
                       "prompt column 'prompt' not found; available columns: question, answer"),
    "no guessable column": (["data", "inspect", "{tmp}/odd.jsonl"], "no prompt column found"),
    "empty dataset": (["data", "inspect", "{tmp}/empty.jsonl"], "dataset is empty"),
    "bad tokenizer": (["data", "inspect", "{tmp}/ok.jsonl", "--tokenizer", "{tmp}/nope"],
                      "cannot load tokenizer"),
}


@pytest.fixture
def bad_files(tmp_path: Path) -> Path:
    (tmp_path / "d.txt").write_text("hello")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    (tmp_path / "ok.jsonl").write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    (tmp_path / "odd.jsonl").write_text(json.dumps({"x": "q", "y": "a"}) + "\n")
    (tmp_path / "empty.jsonl").write_text("")
    return tmp_path


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, bad_files, capsys):
    argv, message = BAD_INPUTS[case]
    out = bad_files / "report.json"
    argv = [a.format(tmp=bad_files) for a in argv] + ["--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("curate: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_bad_input_in_a_subprocess_and_debug_traceback(bad_files):
    result = run_cli("data", "inspect", str(bad_files / "d.txt"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("curate: error: unknown file type")
    assert "Traceback" not in result.stderr
    debug = run_cli("data", "inspect", str(bad_files / "d.txt"), "--debug")
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "BadInputError" in debug.stderr


def test_unknown_subcommand_exits_2():
    result = run_cli("frobnicate")
    assert result.returncode == 2 and "invalid choice" in result.stderr

"""Bad input, across every command and script: exit code 2, one line `PROG: error: MESSAGE` naming
the flag or field and the value, no traceback, and nothing left in --out / output_dir.

Every check fires before any model is loaded or any scoring, generation or training starts, so
most cases run in this process (the CLI's import cost is paid once); a few run as real
subprocesses to prove the exit code and stderr of the installed entry points.
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from curate.core.errors import BadInputError, run_main

MODULES = {"curate": "curate.cli", "sft.train": "sft.train", "rl.grpo": "rl.grpo"}
SFT = ["--model_name_or_path", "{model}", "--dataset", "{in}/ok.jsonl", "--output_dir", "{out}",
       "--use_cpu", "true", "--report_to", "none", "--max_steps", "1"]


@dataclass(frozen=True)
class Case:
    prog: str  # curate, sft.train or rl.grpo
    argv: tuple[str, ...]  # {in}: the inputs folder, {model}: the tiny model, {out}: a new output path
    message: str  # a fragment of the one-line error
    subprocess: bool = False  # run as `python -m MODULE` instead of in this process


def case(prog: str, argv: str | list[str], message: str, subprocess: bool = False) -> Case:
    return Case(prog, tuple(argv.split() if isinstance(argv, str) else argv), message, subprocess)


CASES = {
    # curate data inspect
    "inspect --out on /proc": case("curate", "data inspect {in}/ok.jsonl --out /proc/curatekit-x/r.json",
                                   "--out /proc/curatekit-x/r.json: cannot write there"),
    "inspect --out below a file": case("curate", "data inspect {in}/ok.jsonl --out {in}/afile/sub/r.json",
                                       "afile is a file, not a folder"),
    "inspect --out is a folder": case("curate", "data inspect {in}/ok.jsonl --out {in}/adir",
                                      "--out {in}/adir: is a folder; give a file name"),
    "inspect integer prompts": case("curate", "data inspect {in}/int_question.jsonl --out {out}",
                                    "prompt column 'question' row 0: expected a string, got 0"),
    # curate select cdas
    "cdas --out on /sys": case("curate", "select cdas --dataset {in}/ok.jsonl --model {model} "
                               "--out /sys/curatekit-x/sel", "--out /sys/curatekit-x/sel: cannot write"),
    "cdas --model not a model": case("curate", "select cdas --dataset {in}/ok.jsonl --model {in}/notmodel --out {out}",
                                     "--model {in}/notmodel: not a model folder (no config.json)"),
    "cdas null answer": case("curate", "select cdas --dataset {in}/null_answer.jsonl --model {model} --out {out}",
                             "response column 'answer' row 3: expected a string, got None"),
    "cdas --out a file name": case("curate", "select cdas --dataset {in}/ok.jsonl --model {model} "
                                   "--out {out}/sel.jsonl", "--out {out}/sel.jsonl: names an output folder"),
    "cdas --out a data-like name": case("curate", "select cdas --dataset {in}/ok.jsonl --model {model} "
                                       "--out {out}/sel.jsonlines", "names an output folder, not a .jsonlines file"),
    "cdas --n past the pool": case("curate", "select cdas --dataset {in}/ok.jsonl --model {model} --out {out} --n 9",
                                   "--n must be in [1, 8] (the pool size), got 9"),
    "learnalign --ratio under one row": case("curate", "select learnalign --dataset {in}/ok.jsonl --model {model} "
                                             "--out {out} --ratio 0.01", "--ratio 0.01 of 8 rows is less than one row"),
    "cdas --num-clusters 0": case("curate", "select cdas --dataset {in}/ok.jsonl --model {model} --out {out} "
                                  "--num-clusters 0", "--num-clusters must be a positive integer, got 0"),
    # curate select learnalign
    "learnalign --out on /proc": case("curate", "select learnalign --dataset {in}/ok.jsonl --model {model} --n 2 "
                                      "--out /proc/curatekit-x", "--out /proc/curatekit-x: cannot write there"),
    "learnalign --model not a model": case(
        "curate", "select learnalign --dataset {in}/ok.jsonl --model {in}/notmodel --n 2 --out {out}",
        "--model {in}/notmodel: not a model folder", subprocess=True),
    "learnalign --model without weights": case(
        "curate", "select learnalign --dataset {in}/ok.jsonl --model {in}/noweights --n 2 --out {out}",
        "--model {in}/noweights: no weights"),
    "learnalign null answer": case("curate", "select learnalign --dataset {in}/null_answer.jsonl --model {model} "
                                   "--n 2 --out {out}", "response column 'answer' row 3: expected a string, got None"),
    "learnalign integer answers": case("curate", "select learnalign --dataset {in}/int_answer.jsonl --model {model} "
                                       "--n 2 --out {out}", "response column 'answer' row 0: expected a string, got 0"),
    "learnalign missing warmup recipe": case(
        "curate", "select learnalign --dataset {in}/ok.jsonl --model {model} --n 2 --out {out} "
        "--warmup-recipe {in}/missing.yaml", "--warmup-recipe {in}/missing.yaml: No such file or directory"),
    "learnalign --device unknown": case("curate", "select learnalign --dataset {in}/ok.jsonl --model {model} --n 2 "
                                        "--out {out} --device tpu9", "--device tpu9: unknown device"),
    # curate eval gsm8k / humaneval
    "gsm8k --out below a file": case("curate", "eval gsm8k --model {model} --data {in}/ok.jsonl --split train "
                                     "--out {in}/afile/sub", "--out {in}/afile/sub: {in}/afile is a file"),
    "gsm8k --model not a model": case("curate", "eval gsm8k --model {in}/notmodel --out {out}",
                                      "--model {in}/notmodel: not a model folder"),
    "gsm8k --model missing": case("curate", "eval gsm8k --model {in}/nope --out {out}",
                                  "--model {in}/nope: no such model folder"),
    "humaneval --model in a local folder that is missing": case(
        "curate", "eval humaneval --model recipes/no-such-model --out {out}",
        "--model recipes/no-such-model: no such model folder"),
    "gsm8k integer question": case("curate", "eval gsm8k --model {model} --data {in}/int_question.jsonl "
                                   "--split train --out {out}", "prompt column 'question' row 0: expected a string"),
    "gsm8k --num-samples 0": case("curate", "eval gsm8k --model {model} --data {in}/ok.jsonl --split train "
                                  "--num-samples 0 --out {out}", "--num-samples must be a positive integer, got 0"),
    "gsm8k --prompt-column missing": case("curate", "eval gsm8k --model {model} --data {in}/ok.jsonl --split train "
                                          "--prompt-column q --out {out}", "--prompt-column 'q': no such column"),
    "gsm8k predictions not JSON": case("curate", "eval gsm8k --predictions {in}/afile --data {in}/ok.jsonl "
                                       "--split train --out {out}", "line 1 is not JSON"),
    "humaneval --out on /proc": case("curate", "eval humaneval --samples {in}/samples.jsonl --out /proc/curatekit-x",
                                     "--out /proc/curatekit-x: cannot write there"),
    "humaneval missing samples": case("curate", "eval humaneval --samples {in}/missing.jsonl --out {out}",
                                      "samples file does not exist"),
    # curate demo / model / vision
    "demo --out below a file": case("curate", "demo --preset smoke --out {in}/afile/sub",
                                    "--out {in}/afile/sub: {in}/afile is a file"),
    "demo --sft-steps 0": case("curate", "demo --preset smoke --sft-steps 0 --out {out}",
                               "--sft-steps must be a positive integer, got 0"),
    "demo --device unknown": case("curate", "demo --preset smoke --device nonsense --out {out}",
                                  "--device nonsense: unknown device"),
    "model tiny --out on /sys": case("curate", "model tiny --out /sys/curatekit-x --texts {in}/ok.jsonl",
                                     "--out /sys/curatekit-x: cannot write there"),
    "model tiny --texts without text": case("curate", "model tiny --out {out} --texts {in}/numbers.jsonl",
                                            "has no string columns"),
    "vision missing config": case("curate", "vision ce --config {in}/missing.yaml --out {out}/r.json",
                                  "--config {in}/missing.yaml: No such file or directory"),
    "vision mistyped train field": case("curate", "vision ce --config {in}/vision_typo.yaml --out {out}/r.json",
                                        "unknown field 'train.epoch' (did you mean 'train.epochs'?)"),
    "vision broken YAML": case("curate", "vision dpc --config {in}/broken.yaml",
                               "--config {in}/broken.yaml: not valid YAML: expected ',' or ']'"),
    "vision crowd config with a noise section": case("curate", "vision ccc --config {in}/crowd_noise.yaml --out {out}/r.json",
                                                     "unknown field 'noise'"),
    "vision crowd regime unknown": case("curate", "vision mv --config {in}/crowd_regime.yaml --out {out}/r.json",
                                        "annotators: regime must be one of ind, corr, idn, got 'mixed'"),
    "vision --out below a file": case("curate", "vision ce --config {in}/vision.yaml --out {in}/afile/r.json",
                                      "{in}/afile is a file, not a folder"),
    # python -m sft.train
    "sft mistyped recipe field": case("sft.train", ["--config", "{in}/sft_typo.yaml", *SFT],
                                      "unknown field 'max_step' (did you mean 'max_steps'?)", subprocess=True),
    "sft output_dir on /proc": case("sft.train", [*SFT, "--output_dir", "/proc/curatekit-x"],
                                    "output_dir /proc/curatekit-x: cannot write there"),
    "sft model not a model": case("sft.train", [*SFT, "--model_name_or_path", "{in}/notmodel"],
                                  "model_name_or_path {in}/notmodel: not a model folder"),
    "sft missing recipe": case("sft.train", ["--config", "{in}/missing.yaml", *SFT],
                               "--config {in}/missing.yaml: No such file or directory"),
    "sft null answer": case("sft.train", [*SFT, "--dataset", "{in}/null_answer.jsonl"],
                            "response column 'answer' row 3: expected a string, got None"),
    "sft unknown flag": case("sft.train", [*SFT, "--max_stepz", "3"],
                             "unknown option '--max_stepz' (did you mean '--max_steps'?)"),
    # python -m rl.grpo
    "grpo output_dir below a file": case("rl.grpo", [*SFT, "--output_dir", "{in}/afile/sub"],
                                         "output_dir {in}/afile/sub: {in}/afile is a file"),
    "grpo unknown reward": case("rl.grpo", [*SFT, "--rewards", "correct,style"],
                                "rewards must be a comma-separated subset of correct, format, code_pass"),
    "grpo --ref_model not a model": case("rl.grpo", [*SFT, "--ref_model", "{in}/notmodel"],
                                         "ref_model {in}/notmodel: not a model folder (no config.json)"),
    "grpo integer answers": case("rl.grpo", [*SFT, "--dataset", "{in}/int_answer.jsonl"],
                                 "response column 'answer' row 0: expected a string, got 0"),
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, gsm8k_dir: Path) -> Path:
    """Bad (and a few good) input files, written once."""
    d = tmp_path_factory.mktemp("inputs")
    rows = [json.loads(line) for line in (gsm8k_dir / "train.jsonl").read_text(encoding="utf-8").splitlines()[:8]]

    def jsonl(name: str, records: list[dict]) -> None:
        (d / name).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")

    jsonl("ok.jsonl", rows)
    jsonl("null_answer.jsonl", [{**r, "answer": None if i == 3 else r["answer"]} for i, r in enumerate(rows)])
    jsonl("int_answer.jsonl", [{**r, "answer": i} for i, r in enumerate(rows)])
    jsonl("int_question.jsonl", [{**r, "question": i} for i, r in enumerate(rows)])
    jsonl("numbers.jsonl", [{"x": i} for i in range(5)])
    jsonl("samples.jsonl", [{"task_id": "HumanEval/0", "completion": "    return True\n"}])
    (d / "afile").write_text("not JSON\n")
    (d / "adir").mkdir()
    (d / "notmodel").mkdir()
    (d / "notmodel" / "README.md").write_text("no model here\n")
    (d / "noweights").mkdir()
    (d / "noweights" / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    (d / "vision.yaml").write_text("dataset: digits\ntrain: {epochs: 1}\n")
    (d / "vision_typo.yaml").write_text("dataset: digits\ntrain: {epoch: 1}\n")
    (d / "broken.yaml").write_text("dataset: [digits\n")
    (d / "crowd_noise.yaml").write_text("dataset: digits\nnoise: {rate: 0.2}\n")
    (d / "crowd_regime.yaml").write_text("dataset: digits\nannotators: {regime: mixed}\n")
    (d / "sft_typo.yaml").write_bytes(b"\xef\xbb\xbfmax_step: 2\n")  # with a BOM, which is fine
    return d


def run_case(c: Case, argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    if c.subprocess:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        env.pop("CURATEKIT_DEBUG", None)
        result = subprocess.run([sys.executable, "-m", MODULES[c.prog], *argv], capture_output=True, text=True,
                                env=env, timeout=300, check=False)
        return result.returncode, result.stderr
    capsys.readouterr()
    code = importlib.import_module(MODULES[c.prog]).main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, inputs, tiny_model_dir, tmp_path, capsys):
    c = CASES[name]
    out = tmp_path / "new" / "out"
    fill = {"in": str(inputs), "model": str(tiny_model_dir), "out": str(out)}
    argv = [a.format(**fill) for a in c.argv]
    code, err = run_case(c, argv, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert 1 <= len(lines) <= 2 and "Traceback" not in err, err
    assert lines[-1].startswith(f"{c.prog}: error: "), err
    assert c.message.format(**fill) in lines[-1], err
    assert not (tmp_path / "new").exists()  # nothing left behind, not even the parent folder
    assert not list(Path("/proc").glob("curatekit-x*"))


def test_predictions_with_a_bom_are_read(inputs, tmp_path, capsys):
    from curate.cli import main

    rows = [json.loads(line) for line in (inputs / "ok.jsonl").read_text().splitlines()]
    predictions = tmp_path / "pred.jsonl"
    predictions.write_text("".join(json.dumps({"question": r["question"], "completion": r["answer"]}) + "\n"
                                   for r in rows), encoding="utf-8-sig")
    out = tmp_path / "out"
    assert main(["eval", "gsm8k", "--predictions", str(predictions), "--data", str(inputs / "ok.jsonl"),
                 "--split", "train", "--out", str(out)]) == 0, capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text())["accuracy"] == 1.0


# ---- the boundary itself --------------------------------------------------------------------------

def test_oserror_on_a_user_path_is_bad_input(tmp_path, capsys):
    def fails():
        raise PermissionError(13, "Permission denied", str(tmp_path / "out" / "x.json"))

    assert run_main("prog", fails, ["--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"prog: error: --out {tmp_path}/out: Permission denied ({tmp_path}/out/x.json)\n"


def test_oserror_elsewhere_is_a_bug(tmp_path):
    def fails():
        raise FileNotFoundError(2, "No such file or directory", "/usr/lib/curatekit-internal.bin")

    with pytest.raises(FileNotFoundError):
        run_main("prog", fails, ["--out", str(tmp_path)])
    with pytest.raises(ZeroDivisionError):
        run_main("prog", lambda: 1 / 0, [])


def test_debug_keeps_the_traceback_and_interrupts_exit_130(monkeypatch, capsys):
    def bad():
        raise BadInputError("bad value")

    with pytest.raises(BadInputError):
        run_main("prog", bad, [], debug=True)
    monkeypatch.setenv("CURATEKIT_DEBUG", "1")  # the scripts' switch (their --debug is TrainingArguments')
    with pytest.raises(BadInputError):
        run_main("prog", bad, [])

    def interrupted():
        raise KeyboardInterrupt

    assert run_main("prog", interrupted, []) == 130
    assert capsys.readouterr().err == "prog: interrupted\n"


# Under `accelerate launch` the script's own line is what the user reads: a recipe typo exits the
# script with 2 and one line naming the field, before TRL parses anything (no TRL or transformers
# frame anywhere; accelerate's launcher then reports the child's exit status, its own frames only).
# Kills a recipe handed to TrlParser unchecked (its traceback, or a silently dropped field).
def test_a_recipe_typo_under_accelerate_launch_is_one_line(tiny_model_dir, tmp_path):
    recipe = tmp_path / "typo.yaml"
    recipe.write_text((Path(__file__).parents[1] / "recipes" / "sft_gsm8k_tiny.yaml").read_text()
                      + "lerning_rate: 1.0e-3\n")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1", "--num_machines",
              "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "sft.train", "--config", str(recipe),
              "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(tmp_path / "out")]
    result = subprocess.run(launch, capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[1])
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if line.startswith("sft.train: ")]
    assert ours == [f"sft.train: error: --config {recipe}: unknown field 'lerning_rate' (did you mean 'learning_rate'?)"]
    assert "returned non-zero exit status 2" in result.stderr  # the script's own exit code
    assert "/trl/" not in result.stderr and "/transformers/" not in result.stderr
    assert not (tmp_path / "out").exists()

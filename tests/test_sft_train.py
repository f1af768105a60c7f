"""sft.train: every recipe parses; SFT of the tiny model on a CDAS selection runs through
`accelerate launch`; Dynamic Pack trains exactly like padding (same loss and gradient norm)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from curate.cli import main as curate_main
from sft import train as sft_train

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("sft_*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.name for r in RECIPES])
def test_recipes_parse_into_the_config_classes(recipe):
    import yaml

    # On this CPU machine a GPU recipe's bf16 would be refused at parse time; every other value is checked.
    overrides = {"output_dir": "/tmp/x", "use_cpu": True, "bf16": False}
    parsed = sft_train.parse(["--config", str(recipe), *[f"--{k}={v}" for k, v in overrides.items()]])
    script_args, training_args, model_args = parsed
    assert script_args.padding in sft_train.PADDING_MODES and script_args.dataset
    for key, value in yaml.safe_load(recipe.read_text()).items():
        if key not in overrides:
            got = next(getattr(obj, key) for obj in parsed if hasattr(obj, key))
            value = [] if (key, value) == ("report_to", "none") else value
            assert (got.value if hasattr(got, "value") else got) == value, key


@pytest.fixture(scope="module")
def selection(tiny_model_dir, gsm8k_dir, tmp_path_factory) -> Path:
    """A `curate select cdas` output folder (a dataset source: its selected.jsonl)."""
    out = tmp_path_factory.mktemp("cdas") / "run"
    assert curate_main(["select", "cdas", "--dataset", str(gsm8k_dir / "train.jsonl"), "--limit", "120",
                        "--model", str(tiny_model_dir), "--out", str(out), "--num-clusters", "3",
                        "--ratio", "1.0", "--device", "cpu", "--cache-dir", str(out.parent / "cache")]) == 0
    return out


def _args(tiny_model_dir, data, out, padding, steps):
    recipe = RECIPES[[r.name for r in RECIPES].index("sft_gsm8k_tiny.yaml")]
    return ["--config", str(recipe), "--model_name_or_path", str(tiny_model_dir), "--dataset", str(data),
            "--output_dir", str(out), "--padding", padding, "--max_steps", str(steps), "--logging_steps", "1",
            "--disable_tqdm", "true"]


def test_sft_on_the_selection_through_accelerate_launch(tiny_model_dir, selection, tmp_path):
    out = tmp_path / "sft"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "-m", "sft.train", *_args(tiny_model_dir, selection, out, "dynamic_pack", 3)]
    run = subprocess.run(launch, capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[1])
    assert run.returncode == 0, run.stderr[-3000:]
    assert (out / "model.safetensors").exists() and (out / "tokenizer_config.json").exists()
    before = (Path(tiny_model_dir) / "model.safetensors").read_bytes()
    assert (out / "model.safetensors").read_bytes() != before  # the weights moved
    # the model records the selection it was trained on (its dataset card's curatekit metadata)
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["dataset"] == str(selection) and provenance["selection"]["selector"] == "cdas"


def test_dynamic_pack_trains_like_padding(tiny_model_dir, selection, tmp_path):
    history = {}
    for padding in ("pad", "dynamic_pack"):
        trainer = sft_train.train(*sft_train.parse(_args(tiny_model_dir, selection, tmp_path / padding, padding, 2)))
        history[padding] = [h for h in trainer.state.log_history if "loss" in h]
    for pad_log, pack_log in zip(history["pad"], history["dynamic_pack"]):
        assert float(pack_log["loss"]) == pytest.approx(float(pad_log["loss"]), rel=1e-4)
        assert float(pack_log["grad_norm"]) == pytest.approx(float(pad_log["grad_norm"]), rel=1e-3)
        assert pack_log["num_tokens"] == pad_log["num_tokens"]  # real tokens, not packed-row widths


def test_bad_padding_mode_is_named(tiny_model_dir, selection, tmp_path, capsys):
    assert sft_train.main(_args(tiny_model_dir, selection, tmp_path, "sorted", 1)) == 2
    assert "padding must be one of pad, dynamic_pack, bfd, got 'sorted'" in capsys.readouterr().err


def test_empty_responses_are_reported(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text("".join(json.dumps({"question": "q", "answer": a}) + "\n" for a in ["1", "", "3"]))
    assert sft_train.main(_args(tiny_model_dir, data, tmp_path / "o", "pad", 1)) == 2
    assert "1 rows have an empty prompt or response (rows [1])" in capsys.readouterr().err


# -- config objects from Python (sft.train.sft_configs) -----------------------------------------

def test_sft_configs_equal_what_the_command_line_parses(tmp_path):
    # Kills a builder that drops the recipe's values or passes strings on without their field's
    # type ("false" and "3" stay strings under HfArgumentParser.parse_dict).
    import dataclasses

    recipe = RECIPES[[r.name for r in RECIPES].index("sft_gsm8k_tiny.yaml")]
    built = sft_train.sft_configs(recipe, output_dir=tmp_path, max_steps="3", chat="false", padding=None)
    parsed = sft_train.parse(["--config", str(recipe), "--output_dir", str(tmp_path), "--max_steps", "3",
                              "--chat", "false"])
    differ = [f"{type(a).__name__}.{f.name}" for a, b in zip(built, parsed, strict=True)
              for f in dataclasses.fields(a) if getattr(a, f.name) != getattr(b, f.name)]
    assert differ == []
    assert (built[1].max_steps, built[0].chat, built[0].padding, built[1].learning_rate) == (3, False, "dynamic_pack", 5e-4)


def test_an_sft_field_typo_is_one_line_naming_it(tmp_path):
    # Kills unknown keys handed to TRL's set_defaults_with_config, which drops them silently.
    from curate.core.errors import BadInputError

    with pytest.raises(BadInputError) as err:
        sft_train.sft_configs(None, dataset="d.jsonl", output_dir=tmp_path, paddding="pad")
    assert str(err.value) == "unknown field 'paddding' (did you mean 'padding'?)"
    with pytest.raises(BadInputError, match=r"^padding must be one of pad, dynamic_pack, bfd, got 'sorted'$"):
        sft_train.sft_configs(None, dataset="d.jsonl", output_dir=tmp_path, padding="sorted")

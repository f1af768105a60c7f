"""rl.grpo: every GRPO recipe parses into (GRPOScriptArguments, GRPOConfig, ModelConfig) with its
values; the paper's recipe holds LearnAlign's settings; every accelerate config loads."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rl import grpo

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"
RECIPES = sorted(RECIPES_DIR.glob("grpo_*.yaml"))
ACCELERATE = sorted((RECIPES_DIR / "accelerate").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.name for r in RECIPES])
def test_recipes_parse_into_the_config_classes(recipe):
    # bf16 and vLLM need a GPU at parse time; every other value is checked.
    overrides = {"output_dir": "/tmp/x", "use_cpu": True, "bf16": False, "use_vllm": False,
                 "gradient_checkpointing": False}
    parsed = grpo.parse(["--config", str(recipe), *[f"--{k}={v}" for k, v in overrides.items()]])
    for key, value in yaml.safe_load(recipe.read_text()).items():
        if key in overrides:
            continue
        got = next(getattr(obj, key) for obj in parsed if hasattr(obj, key))
        value = [] if (key, value) == ("report_to", "none") else value
        assert (got.value if hasattr(got, "value") else got) == value, key


def test_paper_recipe_has_learnaligns_settings():
    script_args, training_args, model_args = grpo.parse(["--config", str(RECIPES_DIR / "grpo_gsm8k.yaml"),
                                                         "--output_dir=/tmp/x", "--use_cpu=true", "--bf16=false",
                                                         "--use_vllm=false"])
    assert model_args.model_name_or_path == "Qwen/Qwen2.5-1.5B-Instruct" and script_args.task == "gsm8k"
    assert (training_args.learning_rate, training_args.beta, training_args.epsilon) == (1e-6, 0.04, 0.2)
    assert (training_args.num_generations, training_args.temperature) == (8, 1.0)


@pytest.mark.parametrize("config", ACCELERATE, ids=[c.name for c in ACCELERATE])
def test_accelerate_configs_load(config):
    from accelerate.commands.config.config_args import ClusterConfig

    loaded = ClusterConfig.from_yaml_file(str(config))
    assert loaded.num_processes >= 1 and loaded.mixed_precision == "bf16"
    if "zero" in config.name:
        assert loaded.distributed_type.value == "DEEPSPEED"
        assert loaded.deepspeed_config["zero_stage"] == int(config.stem[-1])


def test_bad_reward_and_task_names_are_refused():
    from curate.core.errors import BadInputError

    with pytest.raises(BadInputError, match="rewards must be"):
        grpo.GRPOScriptArguments(rewards="correct,nonsense")
    with pytest.raises(BadInputError, match="unknown task"):
        grpo.GRPOScriptArguments(task="nope")


def test_freeze_stops_exactly_the_matching_parameters():
    # Kills a freeze that matches from the start of the name only (re.match) or that leaves the
    # matching tensors trainable; a pattern matching nothing (or everything) is a mistake, not a no-op.
    import torch

    from curate.core.errors import BadInputError

    model = torch.nn.ModuleDict({"embed_tokens": torch.nn.Embedding(4, 2),
                                 "layers": torch.nn.ModuleList([torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)])})
    assert grpo.freeze_parameters(model, r"embed_tokens|\.0\.") == 3  # "layers.0.weight" matches mid-name
    trainable = sorted(name for name, p in model.named_parameters() if p.requires_grad)
    assert trainable == ["layers.1.bias", "layers.1.weight"]
    for pattern in ("nothing_here", "."):
        with pytest.raises(BadInputError, match="freeze"):
            grpo.freeze_parameters(torch.nn.Linear(2, 2), pattern)
    with pytest.raises(BadInputError, match="not a regular expression"):
        grpo.freeze_parameters(model, "(")


# -- config objects from Python (rl.runs.grpo_configs) ------------------------------------------

def _fields_differ(built, parsed) -> list[str]:
    import dataclasses

    return [f"{type(a).__name__}.{f.name}" for a, b in zip(built, parsed, strict=True)
            for f in dataclasses.fields(a) if getattr(a, f.name) != getattr(b, f.name)]


def test_grpo_configs_equal_what_the_command_line_parses(tmp_path):
    # Kills a builder that drops the recipe's values, lays the tiny-model defaults over a recipe,
    # or passes strings on without their field's type (parse_dict takes "true" and "1e-4" as given).
    from rl.runs import grpo_configs

    recipe = RECIPES_DIR / "grpo_gsm8k_tiny.yaml"
    built = grpo_configs(recipe, output_dir=tmp_path, max_steps="2", use_peft="false", beta=None)
    parsed = grpo.parse(["--config", str(recipe), "--output_dir", str(tmp_path), "--max_steps", "2",
                         "--use_peft", "false"])
    assert _fields_differ(built, parsed) == []
    assert (built[1].max_steps, built[2].use_peft, built[1].beta, built[2].lora_r) == (2, False, 0.04, 8)


def test_without_a_recipe_the_small_defaults_and_the_cpu_rule_apply(tmp_path):
    # Kills defaults left out without a recipe, and use_cpu left at TRL's default without CUDA
    # (its bf16 default then stops a CPU run).
    import torch

    from rl.runs import DEFAULT_GRPO, grpo_configs, grpo_fields

    fields = grpo_fields(None, output_dir=tmp_path, beta=0.0)
    assert fields == {**DEFAULT_GRPO, "output_dir": str(tmp_path), "beta": 0.0,
                      "use_cpu": not torch.cuda.is_available()}
    assert "use_cpu" not in grpo_fields(RECIPES_DIR / "grpo_gsm8k.yaml")  # a recipe says what it wants
    script_args, training_args, model_args = grpo_configs(None, output_dir=tmp_path, use_cpu=True)
    assert (model_args.use_peft, model_args.lora_target_modules, training_args.learning_rate) == (
        True, ["q_proj", "v_proj"], 1e-4)


@pytest.mark.parametrize("where", ["field", "recipe"])
def test_a_misspelt_field_is_one_line_naming_it(tmp_path, where):
    # Kills a builder that hands unknown keys to TRL's set_defaults_with_config, which drops them
    # silently (the run then trains with the default learning rate).
    from curate.core.errors import BadInputError
    from rl.runs import grpo_configs

    recipe = None
    if where == "recipe":
        recipe = tmp_path / "r.yaml"
        recipe.write_text((RECIPES_DIR / "grpo_gsm8k_tiny.yaml").read_text() + "lerning_rate: 1.0e-3\n")
    with pytest.raises(BadInputError) as err:
        grpo_configs(recipe, output_dir=tmp_path, **({"lerning_rate": 1e-3} if where == "field" else {}))
    message = str(err.value)
    assert "unknown field 'lerning_rate' (did you mean 'learning_rate'?)" in message and "\n" not in message
    assert message.startswith(f"--config {recipe}: ") == (where == "recipe")


@pytest.mark.parametrize("field, value, message", [
    ("learning_rate", "fast", "invalid float value: 'fast'"),
    ("lr_scheduler_type", "sideways", "sideways is not a valid SchedulerType"),
    ("rewards", "correct,luck", "rewards must be a comma-separated subset"),
])
def test_a_refused_value_is_one_line(tmp_path, field, value, message):
    # Kills a builder whose field types exit the process (argparse's error) or pass a traceback on.
    from curate.core.errors import BadInputError
    from rl.runs import grpo_configs

    with pytest.raises(BadInputError, match=message) as err:
        grpo_configs(None, output_dir=tmp_path, use_cpu=True, **{field: value})
    assert "\n" not in str(err.value)


# -- prompt_column / answer_column --------------------------------------------------------------

def _renamed_rows(path: Path) -> list[dict]:
    import json

    # The task's own column names hold decoys: only the named columns may be read.
    rows = [{"problem_text": f"Tom has {n} apples and buys 2 more. How many apples does he have?",
             "worked": f"{n} + 2 = {n + 2}\n#### {n + 2}", "prompt": "decoy", "answer": "#### 0"} for n in range(4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def test_grpo_trains_on_named_prompt_and_answer_columns(tiny_model_dir, tmp_path):
    # Kills prompt_column/answer_column ignored, from a dataset file or from rows passed in (the
    # task then reads the decoy 'prompt' and 'answer' columns), and a rename to 'question' that the
    # task's first choice, 'prompt', still shadows.
    from curate.llm.data import load_data
    from curate.llm.models import load_tokenizer
    from rl.runs import grpo_configs, run_grpo

    rows = _renamed_rows(tmp_path / "renamed.jsonl")
    configs = grpo_configs(None, model_name_or_path=tiny_model_dir, dataset=tmp_path / "renamed.jsonl",
                           prompt_column="problem_text", answer_column="worked", output_dir=tmp_path / "out",
                           max_steps=1, num_generations=2, per_device_train_batch_size=4,
                           max_completion_length=8, use_cpu=True, chat=False)
    trainer = run_grpo(configs)
    assert trainer.state.global_step == 1
    assert trainer.train_dataset["question"] == [r["problem_text"] for r in rows]
    assert trainer.train_dataset["gold"] == [str(n + 2) for n in range(4)]
    assert all(r["problem_text"] in p for r, p in zip(rows, trainer.train_dataset["prompt"]))
    passed_in = grpo.build_dataset(configs[0], load_tokenizer(tiny_model_dir), load_data(tmp_path / "renamed.jsonl"))
    assert passed_in.to_list() == trainer.train_dataset.to_list()


def test_a_missing_column_is_one_line_naming_the_flag(tiny_model_dir, tmp_path, capsys):
    # Kills a missing column reported as a KeyError traceback, or one that names no flag.
    _renamed_rows(tmp_path / "renamed.jsonl")
    out = tmp_path / "out"
    code = grpo.main(["--model_name_or_path", str(tiny_model_dir), "--dataset", str(tmp_path / "renamed.jsonl"),
                      "--answer_column", "solution", "--output_dir", str(out), "--use_cpu", "true"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and not out.exists()
    assert err == ("rl.grpo: error: --answer-column 'solution': no such column; available columns: "
                   "problem_text, worked, prompt, answer")

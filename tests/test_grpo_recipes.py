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

"""GRPO runs from Python around :mod:`rl.grpo`: the config objects of a run (a recipe or small
defaults, with fields on top), the run itself, and LearnAlign's warmup run that gives the scoring
policy θ_s. Staged RL, which also scores and selects, is :mod:`curate.staged` (rl/ never imports
the selectors).

GRPO settings come from a recipe (any ``rl.grpo`` YAML) or, without one, from small defaults
(LoRA r=8 on q_proj/v_proj, β 0.04, ε 0.2, T 1.0) that suit the tiny CPU model.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets

from curate.core.errors import BadInputError

if TYPE_CHECKING:
    from trl import GRPOConfig, ModelConfig

    from rl.grpo import GRPOScriptArguments

    GRPOConfigs = tuple[GRPOScriptArguments, GRPOConfig, ModelConfig]

DEFAULT_GRPO: dict[str, Any] = {
    "use_peft": True, "lora_r": 8, "lora_alpha": 16, "lora_target_modules": ["q_proj", "v_proj"],
    "learning_rate": 1e-4, "beta": 0.04, "epsilon": 0.2, "temperature": 1.0, "logging_steps": 1,
    "save_strategy": "no", "report_to": "none", "disable_tqdm": True}


def grpo_fields(recipe: str | os.PathLike | None = None, **fields: Any) -> dict[str, Any]:
    """The fields of a run: the recipe's (or :data:`DEFAULT_GRPO`) with ``fields`` on top (None:
    left out). Without a recipe and without CUDA, ``use_cpu`` defaults to true: TRL's own default
    (bf16) fails on a CPU machine, and device ``auto`` there means the CPU in fp32."""
    from curate.llm.recipes import recipe_fields
    from rl.grpo import make_parser

    merged = recipe_fields(make_parser(), recipe, fields, DEFAULT_GRPO)
    if not recipe and "use_cpu" not in merged:
        import torch

        merged["use_cpu"] = not torch.cuda.is_available()
    return merged


def grpo_configs(recipe: str | os.PathLike | None = None, **fields: Any) -> GRPOConfigs:
    """``(GRPOScriptArguments, GRPOConfig, ModelConfig)`` of a run (:func:`grpo_fields`), built and
    checked as ``rl.grpo --config RECIPE`` builds them; an unknown field or a refused value is one
    :class:`BadInputError` line naming it."""
    from curate.llm.recipes import build_configs
    from rl.grpo import check_run, make_parser

    return check_run(*build_configs(make_parser(), grpo_fields(recipe, **fields)))


def run_grpo(configs: GRPOConfigs, dataset: datasets.Dataset | None = None):
    """Train GRPO with ``configs`` (:func:`grpo_configs`) on ``dataset`` (else the configured one);
    returns the trainer."""
    from rl.grpo import train

    return train(*configs, dataset)


def warmup(model: str, pool: datasets.Dataset, out_dir: str | os.PathLike, *, task: str = "gsm8k",
           samples: int = 300, steps: int | None = None, num_generations: int = 8,
           max_completion_length: int = 256, seed: int = 0, recipe: str | os.PathLike | None = None,
           use_cpu: bool | None = None, **more_fields: Any) -> Path:
    """A short GRPO run with LoRA on ``samples`` random rows of ``pool`` (paper: 300 for GSM8K);
    returns the adapter folder (θ_s; its base model is π_ref when scoring). TRL seeds the adapter
    init, the subset and the sampling from ``seed``. The folder appears whole (written beside it by
    the first rank, then renamed) with a ``warmup.json`` naming its inputs; a rerun with the same
    inputs reuses it, so an interrupted ``curate select learnalign`` resumes with the same θ_s and
    its caches (a retrained θ_s has new file times, which key the caches)."""
    from curate.core.cache import digest, kill_point, model_fingerprint
    from curate.core.io import atomic_write_json, is_main_rank, main_rank_dir

    if samples < 1 or samples > len(pool):
        raise BadInputError(f"warmup samples must be in [1, {len(pool)}] (the pool size), got {samples}")
    out_dir = Path(out_dir)
    fields = dict(model_name_or_path=model, task=task, subset=samples, subset_seed=seed, max_steps=steps, seed=seed,
                  use_peft=True, num_generations=None if recipe else num_generations,
                  per_device_train_batch_size=None if recipe else 2 * num_generations,
                  max_completion_length=None if recipe else max_completion_length, use_cpu=use_cpu,
                  **more_fields)  # e.g. answer_mode (the verifier the scoring uses), beta
    key = digest(model_fingerprint(model), json.dumps(grpo_fields(recipe, **fields), sort_keys=True, default=str),
                 Path(recipe).read_text() if recipe else "", *(json.dumps(row, default=str) for row in pool))
    marker = out_dir / "warmup.json"
    if marker.exists() and json.loads(marker.read_text()).get("key") == key:
        return out_dir
    with main_rank_dir(out_dir) as tmp:  # under accelerate launch, the first rank saves
        shown = {} if recipe or "disable_tqdm" in fields else {"disable_tqdm": False}  # a progress bar, not in the key
        run_grpo(grpo_configs(recipe, output_dir=tmp, **fields, **shown), pool)
        kill_point("warmup", 1)  # test hook: trained, not yet in place
        if is_main_rank():
            atomic_write_json(Path(tmp) / "warmup.json", {"key": key})
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()  # no rank reads θ_s before it is in place
    return out_dir

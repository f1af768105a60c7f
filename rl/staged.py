"""LearnAlign's RL loop around :mod:`rl.grpo`: the warmup run that gives the scoring policy θ_s,
and staged RL (after each stage trained on its selection, re-score the rest of the pool with the
new policy and select the next stage's set).

GRPO settings come from a recipe (any ``rl.grpo`` YAML) or, without one, from small defaults
(LoRA r=8 on q_proj/v_proj, β 0.04, ε 0.2, T 1.0) that suit the tiny CPU model.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets

from eval.errors import BadInputError

DEFAULT_GRPO = {"use_peft": "true", "lora_r": "8", "lora_alpha": "16", "lora_target_modules": ["q_proj", "v_proj"],
                "learning_rate": "1e-4", "beta": "0.04", "epsilon": "0.2", "temperature": "1.0",
                "logging_steps": "1", "save_strategy": "no", "report_to": "none", "disable_tqdm": "true"}


def grpo_argv(recipe: str | os.PathLike | None, **fields: Any) -> list[str]:
    """``rl.grpo`` arguments: the recipe (or the defaults) with ``fields`` on top (None: left out)."""
    merged = dict(fields) if recipe else {**DEFAULT_GRPO, **fields}
    argv = ["--config", str(recipe)] if recipe else []
    for key, value in merged.items():
        if isinstance(value, (list, tuple)):
            argv += [f"--{key}", *map(str, value)]
        elif value is not None:
            argv.append(f"--{key}={value}")
    return argv


def run_grpo(argv: Sequence[str], dataset: datasets.Dataset | None = None):
    from rl.grpo import parse, train

    script_args, training_args, model_args = parse(list(argv))
    return train(script_args, training_args, model_args, dataset)


def warmup(model: str, pool: datasets.Dataset, out_dir: str | os.PathLike, *, task: str = "gsm8k",
           samples: int = 300, steps: int | None = None, num_generations: int = 8,
           max_completion_length: int = 256, seed: int = 0, recipe: str | os.PathLike | None = None,
           use_cpu: bool | None = None, **grpo_fields: Any) -> Path:
    """A short GRPO run with LoRA on ``samples`` random rows of ``pool`` (paper: 300 for GSM8K);
    returns the adapter folder (θ_s; its base model is π_ref when scoring). TRL seeds the adapter
    init, the subset and the sampling from ``seed``. The folder appears whole (written beside it by
    the first rank, then renamed) with a ``warmup.json`` naming its inputs; a rerun with the same
    inputs reuses it, so an interrupted ``curate select learnalign`` resumes with the same θ_s and
    its caches (a retrained θ_s has new file times, which key the caches)."""
    from eval.cache import digest, kill_point, model_fingerprint
    from eval.io import atomic_dir, atomic_write_json

    if samples < 1 or samples > len(pool):
        raise BadInputError(f"warmup samples must be in [1, {len(pool)}] (the pool size), got {samples}")
    out_dir = Path(out_dir)
    fields = dict(model_name_or_path=model, task=task, subset=samples, subset_seed=seed, max_steps=steps, seed=seed,
                  use_peft="true", num_generations=None if recipe else num_generations,
                  per_device_train_batch_size=None if recipe else 2 * num_generations,
                  max_completion_length=None if recipe else max_completion_length, use_cpu=use_cpu,
                  **grpo_fields)  # e.g. answer_mode (the verifier the scoring uses), beta
    key = digest(model_fingerprint(model), json.dumps(grpo_argv(recipe, **fields)),
                 Path(recipe).read_text() if recipe else "", *(json.dumps(row, default=str) for row in pool))
    marker = out_dir / "warmup.json"
    if marker.exists() and json.loads(marker.read_text()).get("key") == key:
        return out_dir
    main = int(os.environ.get("RANK", "0")) == 0  # under accelerate launch, the first rank saves
    with atomic_dir(out_dir) if main else tempfile.TemporaryDirectory() as tmp:
        run_grpo(grpo_argv(recipe, output_dir=tmp, **fields), pool)
        kill_point("warmup", 1)  # test hook: trained, not yet in place
        if main:
            atomic_write_json(Path(tmp) / "warmup.json", {"key": key})
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()  # no rank reads θ_s before it is in place
    return out_dir


def staged(model: str, pool: datasets.Dataset, stages: Sequence[int], out_dir: str | os.PathLike, *,
           config: Any = None, method: str = "learnalign", steps_per_stage: int | None = None,
           recipe: str | os.PathLike | None = None, cache_dir: Any = None, device: str = "auto",
           seed: int = 0, use_cpu: bool | None = None, progress: bool = True,
           first_scorer: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Stage s: score the remaining pool with the current policy (stage 0: ``first_scorer``, e.g.
    the warmup adapter, when given; later stages against the run's reference policy, ``model``, which
    every stage's GRPO also keeps as π_ref), select ``stages[s]`` rows by
    ``method``, train GRPO on them from the current policy (LoRA merged into the saved model), and
    continue from it. Writes ``stage<s>/selected.jsonl`` and ``stage<s>/policy``; returns a summary."""
    from curate import learnalign
    from eval.data import save_dataset
    from eval.io import atomic_write_json

    config = config or learnalign.LearnAlignConfig()
    if not stages or any(n <= 0 for n in stages):
        raise BadInputError(f"stages must be positive sizes, got {list(stages)}")
    if sum(stages) > len(pool):
        raise BadInputError(f"stages select {sum(stages)} rows in all but the pool has {len(pool)}")
    out_dir = Path(out_dir)
    remaining = pool.add_column("pool_index", list(range(len(pool))))
    policy, summary = str(model), []
    for s, n in enumerate(stages):
        scorer = str(first_scorer) if s == 0 and first_scorer else policy
        # Later stages score the current policy against the run's reference (the original model),
        # the π_ref of the KL term GRPO keeps training against, not the policy itself.
        scored = learnalign.score(remaining, scorer, config, cache_dir=cache_dir, device=device, progress=progress,
                                  reference=None if scorer != policy or s == 0 else str(model))
        chosen = learnalign.select(scored, n, method, seed=seed + s)
        stage_dir = out_dir / f"stage{s}"
        save_dataset(chosen, stage_dir / "selected.jsonl")
        argv = grpo_argv(recipe, model_name_or_path=policy, task=config.task, output_dir=stage_dir / "policy",
                         max_steps=steps_per_stage, seed=seed + s, merge_lora="true",
                         num_generations=None if recipe else config.num_rollouts,
                         per_device_train_batch_size=None if recipe else 2 * config.num_rollouts,
                         max_completion_length=None if recipe else config.max_new_tokens or 256,
                         use_cpu=use_cpu, ref_model=str(model) if s > 0 else None)
        run_grpo(argv, chosen)
        policy = str(stage_dir / "policy")
        picked = set(chosen["pool_index"])
        remaining = remaining.filter(lambda row: row["pool_index"] not in picked)
        summary.append({"stage": s, "selected": n, "pool_before": len(scored), "policy": policy,
                        "selected_pool_rows": sorted(picked),
                        "mean_success_rate_selected": float(sum(chosen["success_rate"]) / n)})
    atomic_write_json(out_dir / "stages.json", summary)
    print(json.dumps({"stages": len(summary), "final_policy": policy}))
    return summary

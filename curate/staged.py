"""Staged RL with LearnAlign (the paper's staged setting): after each stage's GRPO run on its
selection, re-score the rest of the pool with the new policy and select the next stage's set.
GRPO runs go through :mod:`rl.runs`."""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets

from curate.core.errors import BadInputError


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
    from curate.llm.data import save_dataset
    from curate.core.io import atomic_write_json
    from rl.runs import grpo_configs, run_grpo

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
        configs = grpo_configs(recipe, model_name_or_path=policy, task=config.task, output_dir=stage_dir / "policy",
                               max_steps=steps_per_stage, seed=seed + s, merge_lora=True,
                               num_generations=None if recipe else config.num_rollouts,
                               per_device_train_batch_size=None if recipe else 2 * config.num_rollouts,
                               max_completion_length=None if recipe else config.max_new_tokens or 256,
                               use_cpu=use_cpu, ref_model=str(model) if s > 0 else None)
        run_grpo(configs, chosen)
        policy = str(stage_dir / "policy")
        picked = set(chosen["pool_index"])
        remaining = remaining.filter(lambda row: row["pool_index"] not in picked)
        summary.append({"stage": s, "selected": n, "pool_before": len(scored), "policy": policy,
                        "selected_pool_rows": sorted(picked),
                        "mean_success_rate_selected": float(sum(chosen["success_rate"]) / n)})
    atomic_write_json(out_dir / "stages.json", summary)
    print(json.dumps({"stages": len(summary), "final_policy": policy}))
    return summary

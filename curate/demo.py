"""``curate demo``: the LearnAlign experiment in miniature, offline, from scratch, as a pipeline
file (``recipes/pipelines/demo_PRESET.yaml``) run by the same machinery as ``curate run``:

1. ``data``: ``arith`` word problems (:mod:`eval.tasks.arith`): an SFT set, a selection pool and a
   held-out test split, seeded and disjoint. The SFT demonstrations carry a systematic error (for
   two of the eight items half of the answers end one too high); the pool and test splits are
   clean, and the strict verifier (``answer_mode: lines``) checks every line and the final answer.
2. ``start``: a small Qwen2 with a near-character tokenizer is trained from scratch on the SFT set
   (``sft.train``, Dynamic Pack); it learns the arithmetic and the slip.
3. ``score``: LearnAlign's warmup (a short LoRA GRPO run on random pool rows, the arms' verifier
   and β) gives θ_s; under θ_s, G rollouts per pool prompt give p, GRPO gradients (the arms' loss:
   TRL's token-level "dapo" aggregation) the alignment scores and the baselines' columns. The
   learnability gate stops the run before any RL when the pool cannot show an effect.
4. ``select`` and ``train``: GRPO (full fine-tuning, embeddings and first layer frozen) from the
   same SFT model on each arm's top-N and on the full pool, the same steps and rollouts, per seed;
   ``workers`` chains at a time.
5. ``eval`` and ``compare``: sampled accuracy (4 answers at temperature 1, primary) and greedy
   accuracy on the test split; paired comparisons of every arm with the start and each other.

The default preset was calibrated on the learnability gate and on the full-pool arm alone (never on
a selection comparison; 2026-11-29, data seed 0): see the README's demo section. ``--seed`` sets the
data seed; the model, SFT and scoring are seeded from 0, each arm's selection and GRPO run from its
seed, so a resumed demo gives the results of an uninterrupted one.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from curate.core.errors import BadInputError

PRESETS = ("default", "smoke", "gpu")
PIPELINES = Path(__file__).resolve().parents[1] / "recipes" / "pipelines"


def pipeline_file(preset: str) -> Path:
    if preset not in PRESETS:
        raise BadInputError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
    path = PIPELINES / f"demo_{preset}.yaml"
    if not path.is_file():
        raise BadInputError(f"--preset {preset}: {path} is missing (the demo's pipeline files ship in the "
                            "repository's recipes/pipelines)")
    return path


def preset_mapping(preset: str, *, seed: int | None = None, sft_steps: int | None = None,
                   grpo_steps: int | None = None, device: str | None = None, workers: int | None = None) -> dict[str, Any]:
    """The preset's pipeline file as a mapping, with the command line's overrides in place."""
    from curate.core.io import read_yaml

    raw = copy.deepcopy(read_yaml(pipeline_file(preset), "pipeline"))
    if seed is not None:
        raw["data"]["seed"] = seed
    if sft_steps is not None:
        raw["start"].setdefault("fields", {})["max_steps"] = sft_steps
    if grpo_steps is not None:
        fields = raw["train"].setdefault("fields", {})
        fields["max_steps"] = grpo_steps
        for arm in raw["arms"]:  # a same-completions arm keeps plain GRPO's count: steps x one generation batch
            if "generation_budget" in arm.get("train", {}):
                arm["train"]["generation_budget"] = grpo_steps * fields["per_device_train_batch_size"]
    if device is not None:
        raw["device"] = device
    if workers is not None:
        raw["workers"] = workers
    return raw


def load(preset: str, **overrides: Any):
    """The checked :class:`~curate.pipeline.spec.PipelineSpec` of a preset with overrides."""
    from curate.pipeline.spec import check_references, from_dict

    where = str(pipeline_file(preset))
    spec = from_dict(preset_mapping(preset, **overrides), where)
    check_references(spec, where)
    return spec


def run(preset: str, out: str | Path, overwrite: bool = False, **overrides: Any) -> dict[str, Any]:
    """The whole demo into ``out``; its report (also ``out/report/report.json`` and ``.md``)."""
    import json

    from curate import pipeline
    from curate.core.runs import claim_output, run_log

    spec = load(preset, **overrides)
    out = claim_output(out, "demo", {"preset": preset, **{k: v for k, v in overrides.items() if v is not None}},
                       overwrite=overwrite)
    with run_log(out):
        report = pipeline.run(spec, out)
    return json.loads((report / "report.json").read_text(encoding="utf-8"))

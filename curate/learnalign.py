"""LearnAlign (arXiv 2506.11480): select RL data by learnability-weighted gradient alignment.

1. Warmup (optional, :func:`warmup`): a short GRPO run on a random subset gives the policy θ_s.
2. Success rate: G rollouts per prompt at temperature 1.0 under θ_s, checked by the task's
   verifier: p_i; learnability V_i = p_i (1 - p_i)  (Eq. 4).
3. g_i: the GRPO gradient of sample i at θ_s over the LoRA parameters, projected to k dimensions
   and normalised to unit norm (:mod:`curate.grad_features`).
4. Score (Eq. 6-7): S_ij = V_i V_j cos(g_i, g_j), Avg_i = (1/n) Σ_j S_ij; keep the top N.
   Computed as Avg_i = V_i <ĝ_i, (1/n) Σ_j V_j ĝ_j> in O(n k) (:func:`alignment_scores`; the
   n x n definition is :func:`alignment_scores_naive`, and a test checks they agree).
5. Staged RL (:mod:`curate.staged`): after a stage, re-score the rest of the pool with the new policy.

``score`` adds the columns ``success_rate``, ``learnability``, ``score`` (Avg_i),
``gradient_score`` (the plain gradient alignment the paper improves on: <g_i, (1/n) Σ_j g_j> with
the raw projected gradients, so gradient norms, which grow with response length, weigh in),
``gradient_cosine_score`` (cosine to the mean unit gradient, no V), ``response_tokens`` (mean
rollout length) and, with ``with_ifd``, ``ifd``. ``select`` keeps the top N by a method:
``learnalign``, or the baselines ``random``, ``ifd``, ``length``, ``learnability``, ``gradient``
(norm-sensitive: the length-bias ablation), ``gradient_cosine``.
Samples with p in {0, 1} have V = 0 (score 0); ties are broken by a seeded random order. A pool
with no learnable row (0 < p < 1) makes the V-based methods a seeded random pick: ``select`` logs a
warning and ``report`` says so (``learnable_rows``, ``warning``).

Seeds: rollout chunk c is sampled with a seed derived from (``seed``, c), the projection and a
fresh LoRA adapter from ``gradients.seed``, ties from the ``select`` seed; every one is in the cache
keys, so a killed and resumed run gives the scores of an uninterrupted one. Under ``accelerate
launch`` rank r takes the global chunks r, r + world, ...: the same chunks and seeds as in one
process, so sharded scores equal unsharded ones.
"""
from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch

from curate.grad_features import GradientConfig, RolloutGroup, batched_features, normalise
from curate.core.cache import default_cache_dir, derive_seed, digest, kill_point, model_fingerprint, run_chunked
from curate.core.errors import BadInputError
from curate.registry import SELECTORS
from curate.llm.shards import gather, merge_shards, process_shard, shard_rows
from curate.selection import resolve_count, select_by_rule, success_rate_spread, with_row_index

logger = logging.getLogger("curatekit.learnalign")
METHODS = SELECTORS["learnalign"].methods
SCORE_COLUMNS = ("success_rate", "learnability", "score", "gradient_score", "gradient_cosine_score", "response_tokens")
NO_LEARNABLE_ROWS = ("no row is learnable (every success rate is 0 or 1): the LearnAlign score and the learnability "
                     "are 0 everywhere, so selecting by them is a seeded random pick; warm up longer, use more "
                     "rollouts or an easier pool")


@dataclass
class LearnAlignConfig:
    task: str = "gsm8k"
    num_rollouts: int = 8  # G
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int | None = None  # default: the task's
    backend: str = "auto"  # rollouts: hf, vllm or auto
    generation_batch_size: int = 32
    chat: bool | None = None
    num_fewshot: int = 0
    answer_mode: str = "flexible"  # the verifier's mode for p (e.g. "lines" for arith: every line right)
    seed: int = 0  # rollouts (a seed per chunk, derived from this one)
    chunk_size: int = 64  # prompts between cache writes; the unit of sharding and of rollout seeds
    with_ifd: bool = False  # also score IFD (the ifd baseline)
    gradients: GradientConfig = field(default_factory=GradientConfig)

    def __post_init__(self) -> None:
        from eval.tasks import get_task

        get_task(self.task).check_answer_mode(self.answer_mode)
        if isinstance(self.gradients, dict):
            self.gradients = GradientConfig(**self.gradients)
        if self.num_rollouts < 2:
            raise BadInputError(f"num_rollouts must be at least 2 (a success rate needs a group), "
                                f"got {self.num_rollouts}")
        if self.chunk_size < 1:
            raise BadInputError(f"chunk_size must be at least 1, got {self.chunk_size}")


def learnability(success_rate: np.ndarray) -> np.ndarray:
    """V = p (1 - p) (Eq. 4)."""
    p = np.asarray(success_rate, dtype=np.float64)
    return p * (1 - p)


def alignment_scores(features: torch.Tensor | np.ndarray, weights: np.ndarray, chunk: int = 16384,
                     pool_sum: Callable[[np.ndarray, int], tuple[np.ndarray, int]] | None = None) -> np.ndarray:
    """Avg_i = V_i <ĝ_i, (1/n) Σ_j V_j ĝ_j> for unit-norm rows ĝ_i, in O(n k) and chunks of rows
    (so a float16 memory map of 100,000 x 8192 features works). With ``pool_sum`` (sharded scoring)
    these rows are one rank's share: it turns the local (Σ_j V_j ĝ_j, count) into the pool's."""
    weights = np.asarray(weights, dtype=np.float64)
    total = np.zeros(features.shape[1], dtype=np.float64)
    for s in range(0, len(weights), chunk):
        total += (torch.as_tensor(weights[s:s + chunk])[:, None] * _rows(features, s, chunk).double()).sum(0).numpy()
    total, n = pool_sum(total, len(weights)) if pool_sum else (total, len(weights))
    mean = torch.as_tensor(total / max(n, 1), dtype=torch.float32)
    dots = [(_rows(features, s, chunk) @ mean).double().numpy() for s in range(0, len(weights), chunk)]
    return weights * (np.concatenate(dots) if dots else np.zeros(0))


def _rows(features: torch.Tensor | np.ndarray, start: int, chunk: int) -> torch.Tensor:
    return torch.as_tensor(np.array(features[start:start + chunk], dtype=np.float32))


def alignment_scores_naive(features: torch.Tensor | np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The definition: S_ij = V_i V_j cos(g_i, g_j), Avg_i = (1/n) Σ_j S_ij (n x n)."""
    g = torch.as_tensor(np.asarray(features), dtype=torch.float64)
    norms = g.norm(dim=1)
    cos = (g @ g.T) / torch.outer(norms, norms).clamp_min(1e-300)
    cos[norms == 0] = 0
    cos[:, norms == 0] = 0
    v = torch.as_tensor(np.asarray(weights, dtype=np.float64))
    return ((v[:, None] * v[None, :]) * cos).mean(1).numpy()


def _encode_vector(x: np.ndarray) -> str:
    return base64.b64encode(np.asarray(x, dtype=np.float32).tobytes()).decode()


def _decode_vector(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.float32)


def rollouts(rows: datasets.Dataset, model: str, config: LearnAlignConfig, cache: Path | None,
             progress: bool = True, device: str = "auto", dtype: str = "auto", shard: tuple[int, int] = (0, 1)
             ) -> tuple[list[str], list[list[Any]], list[list[float]], Any]:
    """Prompts, G completions each (cached per chunk), the verifier's 0/1 rewards, and the HF
    generator's (model, tokenizer) for reuse (None after vLLM, whose engine is closed). ``rows`` are
    rank ``shard[0]`` of ``shard[1]``'s (:func:`shard_rows`); local chunk c is global chunk
    rank + c * world, sampled with a seed derived from (``config.seed``, global chunk)."""
    from curate.llm.generation import SamplingConfig, load_generator
    from eval.evaluate import sample_and_verify
    from eval.tasks import TaskOptions, get_task

    rank, world = shard
    task = get_task(config.task)
    options = TaskOptions(chat=config.chat, num_fewshot=config.num_fewshot, answer_mode=config.answer_mode)
    generator = load_generator(model, config.backend, dtype=dtype, device=device,
                               batch_size=config.generation_batch_size, progress=progress)
    sampling = SamplingConfig(n=config.num_rollouts, temperature=config.temperature, top_p=config.top_p,
                              max_new_tokens=config.max_new_tokens or task.max_new_tokens, seed=config.seed)
    sampled = sample_and_verify(
        generator, task, list(rows), options, sampling, cache, model=model, chunk_size=config.chunk_size,
        chunk_seed=lambda c: derive_seed(config.seed, "rollouts", rank + c * world),
        key_parts=("seed per global chunk", f"{rank}/{world}"), progress=progress, close=True, stage="rollouts")
    rewards = [[float(v.correct) for v in judged] for judged in sampled.verdicts]
    loaded = (generator.model, generator.tokenizer) if hasattr(generator, "model") else None
    return sampled.prompts, sampled.completions, rewards, loaded


def score(ds: datasets.Dataset, model: str | os.PathLike, config: LearnAlignConfig | None = None, *,
          cache_dir: str | os.PathLike | bool | None = None, device: str = "auto", dtype: str = "auto",
          progress: bool = True, reference: str | os.PathLike | None = None,
          on_stage: Callable[[str], None] = lambda text: None) -> datasets.Dataset:
    """Add LearnAlign's columns to ``ds`` (see the module docstring).

    ``model`` is a folder or hub id; a folder with a LoRA adapter (e.g. :func:`warmup`'s output) is
    θ_s with the base model as π_ref; ``reference`` (a folder or hub id) names π_ref explicitly,
    e.g. a staged run's original model when ``model`` is a later stage's policy. Rollouts and
    gradients are cached per chunk under ``cache_dir`` (default ``~/.cache/curatekit``; ``False``: no cache), keyed by the model files,
    the prompts and the settings, so an interrupted run resumes. Under ``accelerate launch`` every
    rank scores its own shard of the rows and the results are gathered.
    """
    from curate.llm.models import load_model_and_tokenizer
    from eval.tasks import get_task

    config = config or LearnAlignConfig()
    task = get_task(config.task)
    rows = task.rows_from(ds)
    if len(rows) == 0:
        raise BadInputError("the dataset is empty")
    model = str(model)
    rank, world = process_shard()
    mine = shard_rows(len(rows), config.chunk_size, rank, world)
    folder = None if cache_dir is False else Path(cache_dir or default_cache_dir())
    rollout_cache = folder / f"rollouts-{{key}}-rank{rank}of{world}.jsonl" if folder else None
    on_stage(f"rollouts: {len(rows)} prompts x {config.num_rollouts} under {model}")
    prompts, completions, rewards, loaded = rollouts(rows.select(mine), model, config, rollout_cache, progress,
                                                     device, dtype, shard=(rank, world))
    # The HF generator's model serves the gradient pass too (batches are built right-padded here).
    policy, tokenizer = loaded or load_model_and_tokenizer(model, device=device, dtype=dtype)
    groups = [RolloutGroup(tokenizer(p, add_special_tokens=False).input_ids,
                           [tokenizer(c.text, add_special_tokens=False).input_ids[: max(c.num_tokens, 1)]
                            for c in group], r)
              for p, group, r in zip(prompts, completions, rewards)]
    ref_model = None
    if reference is not None and config.gradients.beta:
        ref_model = load_model_and_tokenizer(str(reference), device=device, dtype=dtype)[0].eval()
    on_stage(f"gradients: {len(rows)} prompts, LoRA r={config.gradients.lora_r} projected to "
             f"k={config.gradients.projection_dim}")
    raw = _gradients(groups, policy, tokenizer, model, config, folder, (rank, world), progress, reference, ref_model)
    raw_features = torch.as_tensor(np.stack(raw)) if raw else torch.zeros(0, config.gradients.projection_dim)
    features = normalise(raw_features)
    success = np.array([np.mean(r) for r in rewards], dtype=np.float64)
    weights = learnability(success)
    # The alignment needs the pool's mean: under accelerate launch each rank contributes its sum.
    pool_sum = None if world == 1 else lambda total, count: _sum_over_ranks(total, count, world)
    local = {
        "index": mine,
        "success_rate": success.tolist(),
        "learnability": weights.tolist(),
        "score": alignment_scores(features, weights, pool_sum=pool_sum).tolist(),
        "gradient_score": alignment_scores(raw_features, np.ones(len(mine)), pool_sum=pool_sum).tolist(),
        "gradient_cosine_score": alignment_scores(features, np.ones(len(mine)), pool_sum=pool_sum).tolist(),
        "response_tokens": [float(np.mean([c.num_tokens for c in group])) for group in completions],
    }
    merged = merge_shards(local, len(rows), world)
    out = ds
    for k in SCORE_COLUMNS:
        out = out.remove_columns(k) if k in out.column_names else out
        out = out.add_column(k, merged[k])
    if config.with_ifd:
        on_stage(f"IFD: {len(rows)} samples under the base model")
        out = _with_ifd(out, rows, policy, tokenizer, progress)
    kill_point("scoring", 1)
    return out


def _gradients(groups: list[RolloutGroup], policy: Any, tokenizer: Any, model: str, config: LearnAlignConfig,
               folder: Path | None, shard: tuple[int, int], progress: bool, reference: Any = None,
               ref_model: Any = None) -> list[np.ndarray]:
    """Projected, not yet normalised, GRPO gradients of the groups, cached per chunk under ``folder``
    and keyed by the model, the gradient settings (seed: projection and adapter init) and the rollouts."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    cache = None
    if folder is not None:
        settings = json.dumps(asdict(config.gradients), sort_keys=True)  # its seed: projection, adapter init
        key = digest("seeded adapter init", model_fingerprint(model), settings, str(config.chunk_size),
                     f"reference={model_fingerprint(reference) if ref_model is not None else ''}",
                     "{}/{}".format(*shard), json.dumps([[g.prompt_ids, g.completion_ids, g.rewards] for g in groups]))
        cache = folder / f"grad-features-{key}.jsonl"

    def compute(_: int, chunk: Sequence[int]) -> list[np.ndarray]:
        part = [groups[i] for i in chunk]
        return list(batched_features(policy, part, config.gradients, pad, progress=False,
                                     reference=ref_model).cpu().numpy())

    return run_chunked(list(range(len(groups))), compute, cache, chunk_size=config.chunk_size,
                       encode=_encode_vector, decode=_decode_vector, desc="GRPO gradients", unit="prompt",
                       progress=progress, stage="gradients")


def _sum_over_ranks(total: np.ndarray, count: int, world: int) -> tuple[np.ndarray, int]:
    parts = gather((total, count), world)
    return sum(p[0] for p in parts), sum(p[1] for p in parts)


def _with_ifd(out: datasets.Dataset, rows: datasets.Dataset, policy: Any, tokenizer: Any,
              progress: bool) -> datasets.Dataset:
    """IFD (:mod:`curate.ifd`) under the base model: the policy with its LoRA switched off."""
    from curate.grad_features import disabled_adapters
    from curate.ifd import IFDConfig, ifd_scores
    from curate.llm.data import PROMPT_CANDIDATES, RESPONSE_CANDIDATES, resolve_column

    prompt = resolve_column(rows, None, PROMPT_CANDIDATES, "prompt")
    answer = resolve_column(rows, None, RESPONSE_CANDIDATES + ("canonical_solution",), "response")
    with disabled_adapters(policy):
        result = ifd_scores(list(rows[prompt]), list(rows[answer]), policy, tokenizer, IFDConfig(), progress=progress)
    ifd = (np.asarray(result.ppl_conditioned) / np.asarray(result.ppl_answer)).tolist()
    out = out.remove_columns("ifd") if "ifd" in out.column_names else out
    return out.add_column("ifd", ifd)


def select(ds: datasets.Dataset, n: int | None = None, method: str = "learnalign", seed: int = 0, *,
           ratio: float | None = None) -> datasets.Dataset:
    """The top ``n`` rows (or ``floor(ratio * len)``) of a scored dataset by ``method`` (see the
    module docstring), in rank order."""
    if method not in METHODS:
        raise BadInputError(f"unknown method '{method}'; choose one of {', '.join(METHODS)}")
    count = resolve_count(len(ds), n=n, ratio=ratio)
    if count < 1:
        raise BadInputError(f"ratio {ratio} of {len(ds)} rows is less than one row")
    if method in ("learnalign", "learnability") and "success_rate" in ds.column_names and not _learnable(ds).any():
        logger.warning("curatekit: warning: %s", NO_LEARNABLE_ROWS)
    return select_by_rule(ds, method, count, seed)


def _learnable(ds: datasets.Dataset) -> np.ndarray:
    p = np.asarray(ds["success_rate"], dtype=np.float64)
    return (p > 0) & (p < 1)


def report(scored: datasets.Dataset, selected: datasets.Dataset, method: str) -> dict[str, Any]:
    """Counts, success-rate distribution, and the length bias of the scores (Spearman correlation)."""
    from scipy.stats import spearmanr

    p = np.asarray(scored["success_rate"], dtype=np.float64)
    score_values = np.asarray(scored["score"], dtype=np.float64)
    lengths = np.asarray(scored["response_tokens"], dtype=np.float64)
    learnable = _learnable(scored)
    varied = learnable.sum() > 2 and np.ptp(score_values[learnable]) > 0 and np.ptp(lengths[learnable]) > 0
    rho = spearmanr(score_values[learnable], lengths[learnable]).statistic if varied else None  # else undefined
    warning = {} if learnable.any() else {"warning": NO_LEARNABLE_ROWS}
    positive = int((score_values > 0).sum())
    if method == "learnalign" and len(selected) > positive:
        # Past the positive scores the ranking is among V = 0 rows (a seeded random order) or rows
        # whose gradient points against the pool's: say so instead of hiding it in the selection.
        warning.setdefault("warning", f"n={len(selected)} exceeds the {positive} rows with a positive "
                                      f"LearnAlign score; the rest were ranked by ties and negative scores")
    return {
        "method": method, "rows": len(scored), "selected": len(selected), "learnable_rows": int(learnable.sum()),
        "positive_scores": positive, "selected_beyond_positive": max(0, len(selected) - positive),
        **warning,
        "success_rate": success_rate_spread(p),
        "selected_success_rate_mean": float(np.mean(selected["success_rate"])) if len(selected) else None,
        "score_vs_response_tokens_spearman": None if rho is None or np.isnan(rho) else float(rho),
    }


def plot_report(scored: datasets.Dataset, selected: datasets.Dataset, path: str | os.PathLike) -> Path:
    """Success-rate histogram (pool and selection) and score vs mean response length, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from curate.core.io import save_png

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    bins = np.linspace(0, 1, 11)
    left.hist(scored["success_rate"], bins=bins, alpha=0.5, label=f"pool ({len(scored)})")
    left.hist(selected["success_rate"], bins=bins, alpha=0.7, label=f"selected ({len(selected)})")
    left.set_xlabel("success rate p")
    left.set_ylabel("prompts")
    left.legend()
    right.scatter(scored["response_tokens"], scored["score"], s=6, alpha=0.5, label="pool")
    right.scatter(selected["response_tokens"], selected["score"], s=6, alpha=0.8, label="selected")
    right.set_xlabel("mean response tokens")
    right.set_ylabel("LearnAlign score")
    right.legend()
    return save_png(fig, path)


@dataclass
class WarmupConfig:
    """Step 1: a short GRPO run (LoRA) on ``samples`` random rows gives θ_s (paper: 300 for GSM8K)."""

    enabled: bool = True
    samples: int = 300
    steps: int | None = None  # default: one epoch
    recipe: str | None = None  # an rl.grpo YAML (default: small LoRA settings)
    fields: dict[str, Any] = field(default_factory=dict)  # more rl.grpo fields (e.g. beta: the arms' β)

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise BadInputError(f"warmup samples must be a positive integer, got {self.samples}")


class LearnAlign:
    """LearnAlign as a selector (scikit-learn shape): ``LearnAlign(model, config, warmup=...,
    work_dir=...).score(ds)`` warms up (θ_s in ``work_dir/warmup``, reused on a rerun), rolls out,
    takes gradients and adds the score columns and ``row_index``; ``.select(scored, n=N | ratio=r)``
    keeps the top rows by ``method`` (``learnalign`` or a baseline). ``scoring_model_`` is θ_s after
    ``score``. Constructor fields not named below go to :class:`LearnAlignConfig`."""

    def __init__(self, model: str | os.PathLike, config: LearnAlignConfig | None = None, *,
                 warmup: WarmupConfig | None = None, work_dir: str | os.PathLike | None = None,
                 method: str = "learnalign", cache_dir: str | os.PathLike | bool | None = None,
                 device: str = "auto", dtype: str = "auto", progress: bool = True,
                 reference: str | os.PathLike | None = None, **fields: Any) -> None:
        if method not in METHODS:
            raise BadInputError(f"unknown method '{method}'; choose one of {', '.join(METHODS)}")
        self.model, self.method, self.reference = str(model), method, reference
        self.config = config or LearnAlignConfig(**fields)
        self.warmup = warmup or WarmupConfig(enabled=False)
        if self.warmup.enabled and work_dir is None:
            raise BadInputError("a warmup needs a work_dir to keep its adapter in")
        if method == "ifd" and not self.config.with_ifd:
            raise BadInputError("method 'ifd' needs IFD scores: with_ifd=True (--with-ifd)")
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self.cache_dir, self.device, self.dtype, self.progress = cache_dir, device, dtype, progress
        self.scoring_model_: str | None = None

    def score(self, ds: datasets.Dataset) -> datasets.Dataset:
        from curate.core.runs import Stages

        self.stages_ = Stages(2 + self.warmup.enabled + self.config.with_ifd + 1)  # ... and select
        self.scoring_model_ = self._warm_up(ds) if self.warmup.enabled else self.model
        scored = score(ds, self.scoring_model_, self.config, cache_dir=self.cache_dir, device=self.device,
                       dtype=self.dtype, progress=self.progress, reference=self.reference, on_stage=self.stages_)
        return with_row_index(scored)

    def select(self, scored: datasets.Dataset, n: int | None = None, ratio: float | None = None) -> datasets.Dataset:
        selected = select(scored, n, self.method, self.config.seed, ratio=ratio)
        if hasattr(self, "stages_"):
            self.stages_(f"select: {len(selected)} of {len(scored)} rows by {self.method}")
        return selected

    def report(self, scored: datasets.Dataset, selected: datasets.Dataset) -> dict[str, Any]:
        return {**report(scored, selected, self.method), "scorer": self.scoring_model_, "warmup": self.warmup.enabled,
                "num_rollouts": self.config.num_rollouts, "projection_dim": self.config.gradients.projection_dim}

    def plot(self, scored: datasets.Dataset, selected: datasets.Dataset, path: str | os.PathLike) -> Path:
        return plot_report(scored, selected, path)

    @staticmethod
    def summary(report: dict[str, Any]) -> str:
        rate = report["success_rate"]
        return (f"learnalign ({report['method']}): {report['selected']} of {report['rows']} rows selected; success "
                f"rate mean {rate['mean']:.3f}, {rate['p_equals_0']} at p=0, {rate['p_equals_1']} at p=1, "
                f"{rate['learnable']} learnable")

    def _warm_up(self, ds: datasets.Dataset) -> str:
        from rl.runs import warmup

        samples = min(self.warmup.samples, len(ds))
        self.stages_(f"warmup: GRPO with LoRA on {samples} random rows"
                     + (f", {self.warmup.steps} steps" if self.warmup.steps else ", one epoch")
                     + f" -> {self.work_dir / 'warmup'}")
        return str(warmup(self.model, ds, self.work_dir / "warmup", task=self.config.task,
                          samples=samples, steps=self.warmup.steps,
                          num_generations=self.config.num_rollouts,
                          max_completion_length=self.config.max_new_tokens or 256, seed=self.config.seed,
                          recipe=self.warmup.recipe, use_cpu=True if self.device == "cpu" else None,
                          **self._warmup_fields()))

    def _warmup_fields(self) -> dict[str, Any]:
        """The scoring's prompt format and verifier (so θ_s learns what p measures), then the warmup's own fields."""
        fields = {} if self.warmup.recipe else {"answer_mode": self.config.answer_mode}
        if self.config.chat is not None and not self.warmup.recipe:
            fields["chat"] = self.config.chat
        return {**fields, **self.warmup.fields}

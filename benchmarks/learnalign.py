"""LearnAlign gradients and scoring.

1. Per-sample projected GRPO gradients: the batched path (one forward + backward per token-budget
   batch of rollouts, per-rollout LoRA gradients from hooks) against the reference path (one
   backward per prompt, LESS-style), on the same model and rollout groups (GSM8K train prompts,
   G completions each of GSM8K-answer length); prompts/s of each, the ratio, and the smallest
   per-sample cosine between the two.
2. Scoring: Avg_i = V_i <ĝ_i, mean_j V_j ĝ_j> over 100,000 x 8192 float16 features (a memory map
   on disk) against the n x n definition on a subset.

    python benchmarks/learnalign.py [--shape tiny|qwen2-0.5b] [--prompts 64] [--rollouts 8]

``--shape qwen2-0.5b`` is the GPU benchmark (random Qwen2-0.5B shape, bf16, LoRA r=8 on q_proj/v_proj).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from common import SHAPES, build_model, report, tiny_model_dir


def rollout_groups(tokenizer, prompts: int, rollouts: int, seed: int = 0):
    from curate.grad_features import RolloutGroup
    from curate.llm.data import default_data_dir

    rows = [json.loads(line) for line in
            (default_data_dir() / "gsm8k" / "train.jsonl").read_text().splitlines()[:prompts * rollouts]]
    rng = np.random.default_rng(seed)
    groups = []
    for i in range(prompts):
        prompt = tokenizer(f"Question: {rows[i]['question']}\nAnswer:", add_special_tokens=False).input_ids
        answers = [tokenizer(" " + rows[(i * rollouts + g) % len(rows)]["answer"], add_special_tokens=False).input_ids
                   for g in range(rollouts)]
        groups.append(RolloutGroup(prompt, answers, rng.integers(0, 2, rollouts).astype(float).tolist()))
    return groups


def time_features(args, model_dir: Path) -> tuple[list[list], dict]:
    import torch

    from curate.grad_features import GradientConfig, batched_features, prepare_lora, reference_features

    model, tokenizer, device = build_model(args.shape, args.dtype, model_dir)
    config = GradientConfig(projection_dim=args.projection_dim, max_tokens_per_batch=args.batch_tokens)
    torch.manual_seed(0)
    with torch.no_grad():  # a trained adapter: both LoRA factors non-zero, π_θ != π_ref
        for _, layer in prepare_lora(model, config):
            layer.weight.normal_(0, 0.02)
    groups = rollout_groups(tokenizer, args.prompts, args.rollouts)
    pad = tokenizer.pad_token_id

    def timed(fn, which):
        batched_features(model, groups[:2], config, pad, progress=False)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn(model, groups, config, pad, which=which, progress=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out, time.perf_counter() - start

    reference_n = min(args.reference_prompts or args.prompts, args.prompts)
    fast, fast_s = timed(batched_features, None)
    slow, slow_s = timed(reference_features, list(range(reference_n)))
    cos = torch.nn.functional.cosine_similarity(fast[:reference_n], slow[:reference_n], dim=1)
    tokens = sum(len(g.prompt_ids) * len(g.completion_ids) + sum(map(len, g.completion_ids)) for g in groups)
    rows = [["reference (one backward per prompt)", reference_n, round(slow_s, 2), round(reference_n / slow_s, 2), 1.0],
            ["curatekit batched (hooks, token budget)", args.prompts, round(fast_s, 2), round(args.prompts / fast_s, 2),
             round((args.prompts / fast_s) / (reference_n / slow_s), 1)]]
    params = sum(p.numel() for p in model.parameters())
    facts = {"model": f"{args.shape} ({params / 1e6:.1f}M params, {next(model.parameters()).dtype}, {device})",
             "rollouts_per_prompt": args.rollouts, "tokens_per_prompt": tokens / len(groups),
             "min_cosine_batched_vs_reference": float(cos.min())}
    return rows, facts


def time_scoring(n: int, k: int, naive_n: int) -> tuple[list[list], dict]:
    from curate.learnalign import alignment_scores, alignment_scores_naive

    rng = np.random.default_rng(0)
    v = rng.choice([0.0, 0.1875, 0.25, 0.2344], size=n)
    with tempfile.TemporaryDirectory() as tmp:
        features = np.lib.format.open_memmap(Path(tmp) / "features.npy", mode="w+", dtype=np.float16, shape=(n, k))
        for s in range(0, n, 8192):
            block = rng.standard_normal((min(8192, n - s), k), dtype=np.float32)
            features[s:s + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
        features.flush()
        features = np.load(Path(tmp) / "features.npy", mmap_mode="r")
        start = time.perf_counter()
        alignment_scores(features, v)
        fast_s = time.perf_counter() - start
        sub = np.asarray(features[:naive_n], dtype=np.float32)
        start = time.perf_counter()
        naive = alignment_scores_naive(sub, v[:naive_n])
        naive_s = time.perf_counter() - start
        start = time.perf_counter()
        fast_sub = alignment_scores(sub, v[:naive_n])
        fast_sub_s = time.perf_counter() - start
        gap = float(np.max(np.abs(fast_sub - naive)))
    rows = [[f"O(n k), {n:,} x {k} float16 memory map", n, round(fast_s, 2)],
            [f"n x n definition, {naive_n:,} x {k}", naive_n, round(naive_s, 2)],
            [f"O(n k), same {naive_n:,} x {k}", naive_n, round(fast_sub_s, 3)]]
    return rows, {"max_abs_difference_on_subset": gap}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--reference-prompts", type=int, help="prompts timed on the reference path (default: all)")
    parser.add_argument("--rollouts", type=int, default=8)
    parser.add_argument("--projection-dim", type=int, default=8192)
    parser.add_argument("--batch-tokens", type=int, default=8192)
    parser.add_argument("--score-rows", type=int, default=100_000)
    parser.add_argument("--naive-rows", type=int, default=8192)
    parser.add_argument("--out")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        feature_rows, facts = time_features(args, tiny_model_dir(Path(tmp)))
    score_rows, score_facts = time_scoring(args.score_rows, args.projection_dim, args.naive_rows)
    command = (f"python benchmarks/learnalign.py --shape {args.shape} --prompts {args.prompts} "
               f"--rollouts {args.rollouts} --projection-dim {args.projection_dim}")
    report("learnalign_gradients", command, ["path", "prompts", "seconds", "prompts/s", "vs reference"],
           feature_rows, facts, args.out)
    print(json.dumps(facts))
    report("learnalign_scoring", command, ["scoring", "rows", "seconds"], score_rows, score_facts,
           str(Path(args.out).with_name("learnalign_scoring.json")) if args.out else None)


if __name__ == "__main__":
    main()

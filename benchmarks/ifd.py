"""IFD scoring: curatekit's batched scorer against the reference loop (batch size 1, two forward
passes per sample), on the same model and GSM8K train samples; samples/s of each and the ratio.

    python benchmarks/ifd.py [--samples 256] [--shape tiny|qwen2-0.5b] [--dtype auto]

``--shape qwen2-0.5b`` builds a randomly initialised Qwen2-0.5B-shaped model (the GPU benchmark;
bf16 on CUDA); ``tiny`` is the 2-layer test model. Both use the tiny BPE tokenizer (ids < 1024).
"""
from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

from common import SHAPES, build_model, report, tiny_model_dir

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--reference-samples", type=int, help="samples timed in the loop (default: all)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--batch-tokens", type=int, default=16384)
    parser.add_argument("--out")
    args = parser.parse_args()

    import torch

    from curate.ifd import IFDConfig, ifd_reference, ifd_scores
    from curate.llm.data import default_data_dir

    rows = [json.loads(line) for line in
            (default_data_dir() / "gsm8k" / "train.jsonl").read_text().splitlines()[: args.samples]]
    with tempfile.TemporaryDirectory() as tmp:
        model, tokenizer, device = build_model(args.shape, args.dtype, tiny_model_dir(Path(tmp)))
    model.eval()
    dtype = model.dtype
    rows = rows[: args.samples]
    prompts, answers = [r["question"] for r in rows], [r["answer"] for r in rows]
    config = IFDConfig(max_length=args.max_length, max_tokens_per_batch=args.batch_tokens)
    n_ref = args.reference_samples or len(rows)

    def timed(fn, p, a):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn(p, a, model, tokenizer, config, progress=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return result, time.perf_counter() - start

    timed(ifd_scores, prompts[:16], answers[:16])  # warm-up
    fast, t_fast = timed(ifd_scores, prompts, answers)
    slow, t_slow = timed(ifd_reference, prompts[:n_ref], answers[:n_ref])
    diffs = [abs(a - b) / b for a, b in zip(fast.ifd, slow.ifd) if not math.isnan(a)]
    fast_rate, slow_rate = len(rows) / t_fast, n_ref / t_slow
    params = sum(p.numel() for p in model.parameters())
    report("ifd", f"python benchmarks/ifd.py --samples {args.samples} --shape {args.shape} --dtype {args.dtype}",
           ["scorer", "samples", "seconds", "samples/s", "vs reference"],
           [["reference loop (batch 1, 2 forwards/sample)", n_ref, round(t_slow, 2), round(slow_rate, 1), 1.0],
            ["curatekit batched (token budget, shared pool)", len(rows), round(t_fast, 2), round(fast_rate, 1),
             round(fast_rate / slow_rate, 1)]],
           {"model": f"{args.shape} ({params / 1e6:.1f}M params, {dtype}, {device})",
            "max_ifd_relative_difference": max(diffs) if diffs else None}, args.out)
    print(f"model: {args.shape}, {params / 1e6:.1f}M parameters, {dtype} on {device}; "
          f"largest IFD relative difference batched vs loop: {max(diffs):.2e}")


if __name__ == "__main__":
    main()

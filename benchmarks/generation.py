"""HF generation backend (batched, length-sorted, left-padded) against a one-prompt-at-a-time
``model.generate`` loop, on the tiny model and GSM8K questions: samples/s and the ratio.

    python benchmarks/generation.py [--prompts 64] [--max-new-tokens 64] [--batch-size 32]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder (default: a tiny model built here)")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--n", type=int, nargs="+", default=[1, 4], help="samples per prompt to time")
    parser.add_argument("--out", help="JSON path (default: benchmarks/results/generation.json)")
    args = parser.parse_args()

    import torch

    from curate.llm.data import default_data_dir
    from curate.llm.generation import HFGenerator
    from curate.llm.models import load_model_and_tokenizer
    from curate.llm.tiny import build_tiny_model

    data = default_data_dir() / "gsm8k"
    rows = [json.loads(line) for line in (data / "test.jsonl").read_text().splitlines()[: args.prompts]]
    prompts = [f"Question: {r['question']}\nAnswer:" for r in rows]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model
        if model_dir is None:
            train = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()[:1000]]
            model_dir = build_tiny_model(Path(tmp) / "tiny", [r["question"] + "\n" + r["answer"] for r in train])
        model, tokenizer = load_model_and_tokenizer(model_dir)
    generator = HFGenerator(model, tokenizer, batch_size=args.batch_size, progress=False)
    # Both ways generate exactly max_new_tokens per sample (EOS masked) so they do the same work.
    fixed = dict(min_new_tokens=args.max_new_tokens, max_new_tokens=args.max_new_tokens)

    def loop(n: int) -> float:
        start = time.perf_counter()
        for prompt in prompts:
            ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
            with torch.inference_mode():
                model.generate(**ids, do_sample=n > 1, num_return_sequences=n, pad_token_id=tokenizer.pad_token_id,
                               top_k=0 if n > 1 else None, temperature=1.0 if n > 1 else None, **fixed)
        return time.perf_counter() - start

    def batched(n: int) -> float:
        start = time.perf_counter()
        generator.generate(prompts, n=n, temperature=1.0 if n > 1 else 0.0, max_new_tokens=args.max_new_tokens,
                           ignore_eos=True)
        return time.perf_counter() - start

    loop(1), batched(1)  # warm-up
    table = []
    for n in args.n:
        samples = len(prompts) * n
        t_loop, t_batch = loop(n), batched(n)
        table.append([n, samples, args.max_new_tokens, round(samples / t_loop, 1), round(samples / t_batch, 1),
                      round(t_loop / t_batch, 1)])
    report("generation", "python benchmarks/generation.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in (("prompts", args.prompts), ("max_new_tokens", args.max_new_tokens),
                                                     ("batch_size", args.batch_size))),
           ["n per prompt", "samples", "new tokens each", "loop samples/s", "hf batched samples/s", "ratio"],
           table, {"model": str(args.model or "tiny (2-layer Qwen2, hidden 128)"), "device": str(model.device)},
           args.out)


if __name__ == "__main__":
    main()

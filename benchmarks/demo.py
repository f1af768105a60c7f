"""The README's main job, measured: ``curate demo`` (a preset's pipeline file) from a fresh
``--out``, timed, with its comparison table and ``benchmarks/results/demo_<preset>.json`` (the
report: every model's accuracy per evaluation and seed, every paired comparison, the pool's
success-rate spread, the training rewards; plus the seconds of every stage kind, from the stage
markers).

    python benchmarks/demo.py --preset default --out runs/demo-bench

An existing ``--out`` of the same preset is resumed (its stages are reused), so the JSON can also be
written from a run that has already finished.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import common


def stage_seconds(out: Path) -> dict[str, float]:
    """Seconds of work per stage kind (summed over stages; chains run side by side overlap)."""
    totals: dict[str, float] = {}
    for marker in out.rglob("stage.json"):
        record = json.loads(marker.read_text())
        kind = record["stage"].split(" ")[0]
        totals[kind] = round(totals.get(kind, 0.0) + record.get("seconds", 0.0), 1)
    return totals


def run_log_seconds(out: Path) -> list[float]:
    """The wall time of every run into ``out`` (run.log's "done in N s" lines): the first is the full run."""
    import re

    log = (out / "run.log").read_text(encoding="utf-8") if (out / "run.log").is_file() else ""
    return [float(m) for m in re.findall(r" done in ([0-9.]+) s", log)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--out", default="runs/demo-bench")
    parser.add_argument("--seed", type=int, help="data seed (default: the preset's)")
    parser.add_argument("--json", help="report path (default: benchmarks/results/demo_<preset>.json)")
    args = parser.parse_args()

    from curate import demo

    started = time.monotonic()
    result = demo.run(args.preset, args.out, seed=args.seed)
    wall = time.monotonic() - started
    rows = [[name, c["a"], c["b"], round(100 * c["mean_diff"], 2),
             f"[{100 * c['ci95'][0]:+.1f}, {100 * c['ci95'][1]:+.1f}]", round(c["p_value"], 4),
             "yes" if c["effect"] else "no"]
            for name, e in result["evals"].items() for c in e["comparisons"]]
    extra = {**result, "stage_seconds": stage_seconds(Path(args.out)), "run_log_seconds": run_log_seconds(Path(args.out)),
             "wall_seconds_this_call": round(wall, 1)}
    common.report(f"demo_{args.preset}", f"python benchmarks/demo.py --preset {args.preset} --out {args.out}",
                  ["eval", "a", "b", "mean diff (points)", "95% interval", "p", "effect"], rows, extra, args.json)
    start = result["accuracy"]["start"]["mean"]
    print(f"\nstart accuracy ({result['eval']['name']}) {100 * start:.1f}%; work seconds per stage kind "
          f"{extra['stage_seconds']}; wall {wall:.0f} s")


if __name__ == "__main__":
    main()

"""Open-set active learning on scikit-learn digits: BUAL (B-Margin) against random queries, margin
uncertainty sampling (the paper's closed-set counterpart of B-Margin) and LfOSA, at openness 0.4
(6 known digits, 4 unknown) and 0.6 (4 known, 6 unknown); the family's protocol (3% of the known
images labelled at the start, 5 rounds of 50 queries, the target model retrained each round).

Per openness and method, over seeds (each seed: the data split, the initial labelled set and every
training seed): the final known-class test accuracy, the area under the accuracy-vs-queries curve,
the mean query precision (share of queries that were known), BUAL minus each baseline paired by
seed (mean and a 95% t-interval) and the wall time per run; a PNG of accuracy and precision
against queries (mean over seeds). BUAL's options are the recipe's (recipes/vision/bual.yaml),
chosen on seeds 10-11 only (``--seeds 10 11 --set key=value``), never on the reported seeds.

    python benchmarks/vision_bual.py [--seeds 0 1 2] [--known 6 4] [--out benchmarks/results/vision_bual.json]
    python benchmarks/vision_bual.py --seeds 10 11 --methods bual --set nl_epochs=10 snapshot_every=2
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from common import RESULTS, mean_std, report

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BASELINE_OPTIONS = {"random_query": {}, "uncertainty": {"measure": "margin"}, "lfosa": {}}


def paired(a: list[float], b: list[float]) -> str:
    """mean(a - b) and its 95% t-interval, in points."""
    from scipy import stats

    diffs = [100 * (x - y) for x, y in zip(a, b)]
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return f"{mean:+.1f}"
    half = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / len(diffs) ** 0.5
    return f"{mean:+.1f} [{mean - half:+.1f}, {mean + half:+.1f}]"


def plot(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from curate.core.io import save_png

    openness = sorted(curves)
    fig, axes = plt.subplots(2, len(openness), figsize=(5 * len(openness), 7), squeeze=False)
    for col, key in enumerate(openness):
        for method, runs in curves[key].items():
            queries = runs[0]["queries"]
            axes[0][col].plot(queries, 100 * np.mean([r["accuracy"] for r in runs], 0), marker="o", label=method)
            axes[1][col].plot(queries[:-1], 100 * np.mean([r["precision"] for r in runs], 0), marker="o", label=method)
        axes[0][col].set(title=f"digits, openness {key}", ylabel="known-class test accuracy %")
        axes[1][col].set(xlabel="queries", ylabel="query precision %")
        axes[0][col].legend()
    save_png(fig, path)


def main() -> None:
    import torch
    import yaml

    from vision.run import run_experiment

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--known", type=int, nargs="+", default=[6, 4], help="known digits (openness 0.4, 0.6)")
    parser.add_argument("--methods", nargs="+", default=[*BASELINE_OPTIONS, "bual"])
    parser.add_argument("--set", nargs="*", default=[], help="BUAL option overrides, key=value (YAML values)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    recipe = yaml.safe_load((Path(__file__).resolve().parents[1] / "recipes" / "vision" / "bual.yaml").read_text())
    bual = {**recipe["method"], **{k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}}
    rows, runs, curves = [], [], {}
    for known in args.known:
        final: dict[str, dict[str, list[float]]] = {}
        seconds: dict[str, list[float]] = {}
        for method in args.methods:
            for seed in args.seeds:
                config = {"dataset": "digits", "seed": seed,
                          "openset": {**recipe["openset"], "known": known, "seed": seed},
                          "train": {**recipe["train"], "seed": seed, "device": args.device, "progress": False},
                          "method": bual if method == "bual" else BASELINE_OPTIONS[method]}
                started = time.perf_counter()
                result = run_experiment(method, config)
                seconds.setdefault(method, []).append(time.perf_counter() - started)
                for key, value in (("accuracy", result["final"]["test_accuracy"]), ("auc", result["final"]["auc"]),
                                   ("precision", result["final"]["mean_precision"])):
                    final.setdefault(method, {}).setdefault(key, []).append(value)
                history = result["rounds"]
                curve = {"queries": [h["queries"] for h in history], "accuracy": [h["test_accuracy"] for h in history],
                         "precision": [h["query_precision"] for h in history if "query_precision" in h]}
                curves.setdefault(round(result["openness"], 1), {}).setdefault(method, []).append(curve)
                runs.append({"openness": round(result["openness"], 1), "method": method, "seed": seed,
                             "options": config["method"], "final": result["final"], **curve,
                             "round_metrics": [{k: h[k] for k in ("predicted_unknown", "r") if k in h} for h in history],
                             "seconds": round(seconds[method][-1], 1)})
                print(f"known {known} {method:>12} seed {seed}: {result['summary']} ({seconds[method][-1]:.0f} s)",
                      flush=True)
        for method in args.methods:
            f = final[method]
            versus = ["-" if method == "bual" or "bual" not in final else paired(final["bual"][k], f[k])
                      for k in ("accuracy", "auc")]
            rows.append([f"{1 - known / 10:.1f}", method, mean_std(f["accuracy"]), mean_std(f["auc"]),
                         mean_std(f["precision"]), *versus, round(statistics.fmean(seconds[method]), 1)])
    out = Path(args.out) if args.out else RESULTS / "vision_bual.json"
    plot(curves, out.with_suffix(".png"))
    command = (f"python benchmarks/vision_bual.py --seeds {' '.join(map(str, args.seeds))} "
               f"--known {' '.join(map(str, args.known))} --methods {' '.join(args.methods)}"
               + (f" --set {' '.join(args.set)}" if args.set else ""))
    report("vision_bual", command,
           ["openness", "method", "final accuracy %", "AUC %", "mean query precision %",
            "BUAL minus (accuracy, paired) pp [95% CI]", "BUAL minus (AUC, paired) pp [95% CI]", "seconds/run"],
           rows, {"bual_options": bual, "runs": runs, "plot": str(out.with_suffix(".png"))}, str(out))


if __name__ == "__main__":
    main()

"""Open-set active learning on scikit-learn digits: the registered strategies of the active family
(their recipes: 3% of the known-class pool labelled at the start, 5 rounds of 50 queries, a ConvNet
of width 32 retrained from scratch each round) at openness 0.4 (6 known classes, 4 unknown) and 0.6
(4 known, 6 unknown), over seeds (a seed sets the train/test split, the initial labelled set and
every round's training; the strategies of one seed share them, so differences are paired).

Reported per (openness, strategy): final known-class test accuracy, the area under the
accuracy-vs-queries curve (AUC), mean query precision (share of known-class queries), each with
the paired difference to ``--reference`` (mean and 95% t-interval over seeds), and seconds per run;
a PNG per openness with accuracy and precision against queries (mean over seeds).

    python benchmarks/vision_open_set_al.py [--seeds 0 1 2] [--known 6 4] [--methods random_query uncertainty lfosa ...]

A method may carry options: ``uncertainty:measure=margin``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from common import RESULTS, mean_std, paired_interval, report

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "vision"


def parse_method(spec: str) -> tuple[str, str, dict]:
    """'name:key=value,key=value' -> (label, registered name, options)."""
    import yaml

    name, _, options = spec.partition(":")
    parsed = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in options.split(",") if item)}
    return spec, name, parsed


def plot(curves: dict[str, dict[str, list[list[float]]]], queries: list[int], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from curate.core.io import save_png

    fig, (acc, prec) = plt.subplots(1, 2, figsize=(10, 4))
    for label, curve in curves.items():
        acc.plot(queries, [100 * statistics.fmean(c) for c in zip(*curve["accuracy"])], marker="o", label=label)
        prec.plot(queries[1:], [100 * statistics.fmean(c) for c in zip(*curve["precision"])], marker="o", label=label)
    acc.set(xlabel="queries", ylabel="known-class test accuracy %", title=title)
    prec.set(xlabel="queries", ylabel="query precision % (known-class share)", title=title)
    acc.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)


def main() -> None:
    import torch
    import yaml

    from vision.run import run_experiment

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--known", type=int, nargs="+", default=[6, 4], help="known classes (the first K digits)")
    parser.add_argument("--methods", nargs="+", default=["random_query", "uncertainty", "uncertainty:measure=margin",
                                                         "lfosa", "bual", "dcfs"])
    parser.add_argument("--reference", default="lfosa", help="the paired differences are against this method")
    parser.add_argument("--out")
    parser.add_argument("--plots", default=str(RESULTS), help="folder of the PNG plots")
    args = parser.parse_args()
    torch.set_num_threads(1)
    methods = [parse_method(spec) for spec in args.methods]
    rows, runs, claims = [], [], {}
    started_all = time.perf_counter()
    for known in args.known:
        metrics: dict[str, dict[str, list[float]]] = {}
        curves: dict[str, dict[str, list[list[float]]]] = {}
        queries: list[int] = []
        for label, name, options in methods:
            found = {"accuracy": [], "auc": [], "precision": [], "seconds": []}
            curves[label] = {"accuracy": [], "precision": []}
            for seed in args.seeds:
                config = yaml.safe_load((RECIPES / f"{name}.yaml").read_text())
                config["seed"] = seed
                config["openset"] = {**config["openset"], "known": known, "seed": seed}
                config["train"] = {**config["train"], "seed": seed, "device": "cpu", "progress": False}
                config["method"] = {**(config.get("method") or {}), **options}
                began = time.perf_counter()
                result = run_experiment(name, config)
                found["seconds"].append(time.perf_counter() - began)
                final = result["final"]
                found["accuracy"].append(final["test_accuracy"])
                found["auc"].append(final["auc"])
                found["precision"].append(final["mean_precision"])
                curves[label]["accuracy"].append([r["test_accuracy"] for r in result["rounds"]])
                curves[label]["precision"].append([r["query_precision"] for r in result["rounds"] if "query_precision" in r])
                queries = [r["queries"] for r in result["rounds"]]
                runs.append({"known": known, "method": label, "seed": seed, "final": final,
                             "rounds": [{k: v for k, v in r.items() if k != "queried"} for r in result["rounds"]],
                             "seconds": round(found["seconds"][-1], 2)})
                print(f"known {known} {label:>28} seed {seed}: acc {final['test_accuracy']:.3f} auc {final['auc']:.3f} "
                      f"precision {final['mean_precision']:.3f} ({found['seconds'][-1]:.0f}s)", flush=True)
            metrics[label] = found
        reference = metrics.get(args.reference)
        for label, found in metrics.items():
            diff = (lambda key: paired_interval(found[key], reference[key])) if reference else (lambda key: "-")
            rows.append([f"{1 - known / 10:.1f} ({known} known)", label, mean_std(found["accuracy"]), diff("accuracy"),
                         mean_std(found["auc"]), diff("auc"), mean_std(found["precision"]), diff("precision"),
                         round(statistics.fmean(found["seconds"]), 1)])
        means = {label: {k: statistics.fmean(v) for k, v in found.items()} for label, found in metrics.items()}
        pairs = {f"{a} - {b}": {key: paired_interval(metrics[a][key], metrics[b][key]) for key in ("accuracy", "auc", "precision")}
                 for a in metrics for b in metrics if a != b}
        claims[f"known {known}"] = {"means": means, "paired": pairs}
        plot(curves, queries, f"digits, openness {1 - known / 10:.1f}", Path(args.plots) / f"vision_open_set_al_known{known}.png")
    command = (f"python benchmarks/vision_open_set_al.py --seeds {' '.join(map(str, args.seeds))} "
               f"--known {' '.join(map(str, args.known))} --methods {' '.join(args.methods)} --reference {args.reference}")
    report("vision_open_set_al", command,
           ["openness", "method", "final accuracy %", f"vs {args.reference}", "AUC", f"vs {args.reference} ",
            "query precision %", f"vs {args.reference}  ", "seconds/run"], rows,
           {"means": claims, "runs": runs, "total_seconds": round(time.perf_counter() - started_all, 1)}, args.out)


if __name__ == "__main__":
    main()

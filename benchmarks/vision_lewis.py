"""One-shot active learning for k models (Lewis weights) on offline data: max-Lewis sampling vs
uniform (Random) vs single-backbone leverage sampling at equal budgets (distinct queries), each
run training the k linear heads of ``recipes/vision/lewis.yaml`` on labelled + queried rows; mean
± std over seeds of the mean test error over the k heads, the paired difference to uniform (mean
and a 95% t interval; the seeds on which it is lower), T = sum_i max_j leverage, the top coherence max_i tau_i n / rank, the
imbalance ratio of the query (digits), seconds per run; a PNG of error vs budget per sampler.

    python benchmarks/vision_lewis.py [--seeds 0 ... 19] [--budgets 100 300 600] [--dataset synthetic]
    python benchmarks/vision_lewis.py --dataset digits --task classification --budgets 50 150 300
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from common import RESULTS, report

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))



def interval(diffs: list[float]) -> str:
    """mean [95% t interval] of paired differences."""
    from scipy import stats

    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return f"{mean:+.4g}"
    half = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / len(diffs) ** 0.5
    return f"{mean:+.4g} [{mean - half:+.4g}, {mean + half:+.4g}]"


def plot(results: dict, samplers: list[str], budgets: list[int], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from curate.core.io import save_png

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for sampler in samplers:
        means = [statistics.fmean(results[sampler, b]) for b in budgets]
        stds = [statistics.pstdev(results[sampler, b]) for b in budgets]
        ax.errorbar(budgets, means, yerr=stds, marker="o", capsize=3, label=sampler)
    ax.set_xlabel("budget (distinct queries)")
    ax.set_ylabel(f"mean {metric} over the k heads")
    ax.legend()
    save_png(fig, path)


def main() -> None:
    import torch
    import yaml

    from vision.run import run_experiment

    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(20)))
    parser.add_argument("--budgets", type=int, nargs="+", default=[100, 300, 600])
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--task", default="regression")
    parser.add_argument("--initial-labels", type=int)
    parser.add_argument("--backbones", nargs="+", help="override the recipe's backbones")
    parser.add_argument("--tails", choices=["row", "entry"], help="override synthetic.tails")
    parser.add_argument("--references", type=int, nargs="+", default=[0],
                        help="leverage_single baselines: the backbone (index) whose leverage is used")
    parser.add_argument("--out")
    parser.add_argument("--plot")
    args = parser.parse_args()
    recipe = yaml.safe_load((Path(__file__).resolve().parents[1] / "recipes" / "vision" / "lewis.yaml").read_text())
    recipe.update(dataset=args.dataset, task=args.task)
    if args.initial_labels:
        recipe["initial_labels"] = args.initial_labels
    if args.backbones:
        recipe["backbones"] = args.backbones
    if args.tails:
        recipe["synthetic"] = {**recipe["synthetic"], "tails": args.tails}
    samplers = {"max_lewis": {"sampler": "max_lewis"}, "uniform": {"sampler": "uniform"},
                **{f"leverage_single[{recipe['backbones'][r]}]": {"sampler": "leverage_single", "reference": r}
                   for r in args.references}}
    results, diagnostics, seconds, runs = {}, {}, {}, []
    for budget in args.budgets:
        for sampler, options in samplers.items():
            errors, times, facts = [], [], []
            for seed in args.seeds:
                config = {**recipe, "seed": seed, "budget": budget, "method": {**recipe["method"], **options}}
                started = time.perf_counter()
                result = run_experiment("lewis", config)
                times.append(time.perf_counter() - started)
                errors.append(result["final"]["mean_test_error"])
                facts.append(result["query"])
                query = result["query"]
                runs.append({"budget": budget, "sampler": sampler, "seed": seed, "error": errors[-1],
                             "head_errors": [round(h["test_error"], 5) for h in result["heads"]],
                             **{k: query[k] for k in ("T", "draws", "imbalance_ratio") if k in query}})
            results[sampler, budget], diagnostics[sampler, budget], seconds[sampler, budget] = errors, facts, times
            print(f"budget {budget:4d} {sampler:>24}: {statistics.fmean(errors):.4g}", flush=True)
    metric = result["final"]["metric"]
    rows = []
    for budget in args.budgets:
        for sampler in samplers:
            errors, facts = results[sampler, budget], diagnostics[sampler, budget]
            diffs = [a - b for a, b in zip(errors, results["uniform", budget])]
            imbalance = [f["imbalance_ratio"] for f in facts if "imbalance_ratio" in f]
            rows.append([budget, sampler, f"{statistics.fmean(errors):.4g} ± {statistics.pstdev(errors):.3g}",
                         "-" if sampler == "uniform" else interval(diffs),
                         "-" if sampler == "uniform" else f"{sum(d < 0 for d in diffs)}/{len(diffs)}",
                         round(statistics.fmean(f["draws"] for f in facts), 1),
                         f"{statistics.median(imbalance):.2f}" if imbalance else "-",
                         round(statistics.fmean(seconds[sampler, budget]), 2)])
    first = diagnostics["max_lewis", args.budgets[0]][0]
    command = (f"python benchmarks/vision_lewis.py --seeds {' '.join(map(str, args.seeds))} --budgets "
               f"{' '.join(map(str, args.budgets))} --dataset {args.dataset} --task {args.task}"
               + (f" --initial-labels {args.initial_labels}" if args.initial_labels else "")
               + (f" --backbones {' '.join(args.backbones)}" if args.backbones else "")
               + (f" --tails {args.tails}" if args.tails else "")
               + f" --references {' '.join(map(str, args.references))}")
    name = f"vision_lewis_{args.dataset}_{args.task}" + (f"_{args.tails}" if args.tails else "")
    plot_path = Path(args.plot) if args.plot else RESULTS / f"{name}.png"
    plot(results, list(samplers), args.budgets, metric, plot_path)
    print(f"backbones {recipe['backbones']}; seed {args.seeds[0]}: pool {first['pool']}, ranks {first['ranks']} (sum {sum(first['ranks'])}), "
          f"T {first['T']:.2f}, coherence max_i tau_i n/rank {[round(c, 1) for c in first['coherence']]}")
    report(name, command, ["budget", "sampler", f"mean {metric} ± std", "paired diff vs uniform [95% CI]", "seeds better than uniform",
                           "draws m", "imbalance ratio (median)", "seconds/run"], rows,
           {"runs": runs, "plot": str(plot_path), "recipe": recipe}, args.out)


if __name__ == "__main__":
    main()

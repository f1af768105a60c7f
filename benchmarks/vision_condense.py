"""Dataset condensation on scikit-learn digits: final-epoch test accuracy of a fresh ConvNet trained
on the synthetic set only, for every method of the "condense" family in the registry (random, DM,
ECHO, and DANCE once registered), at IPC 1 and 10 over seeds; mean ± std, seconds per run
(condensation and evaluation), and the paired difference to DM (same seed: same split, same initial
images, same evaluation seed).

Each method runs its recipe (recipes/vision/METHOD.yaml; the family's defaults without one) with
the benchmark's ipc, seeds, iterations and evaluation epochs put over it; lr_img scales linearly with
IPC from the recipe's (lr_img · ipc / recipe ipc: the per-image gradient of a mean-based loss falls
as 1/IPC; DANCE's 0.01·IPC rule). ``--preset gpu`` is the papers' CIFAR-10 setting (torchvision,
32×32, ConvNet-3 width 128, 20 000 iterations, batch_real 256, evaluation 1 000 epochs; IPC 1/10/50)
and was not run here.

    python benchmarks/vision_condense.py                       # CPU: digits, IPC 1 and 10, seeds 0 1 2
    python benchmarks/vision_condense.py --preset gpu --device cuda --root data
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from common import mean_std, report

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PRESETS = {
    "cpu": {"dataset": "digits", "ipcs": [1, 10], "iterations": 300, "eval_epochs": 200,
            "train": {"width": 32, "batch_real": 64}, "evaluate": {"backbone": "convnet:32"}},
    "gpu": {"dataset": "cifar10", "ipcs": [1, 10, 50], "iterations": 20000, "eval_epochs": 1000,
            "train": {"width": 128, "depth": 3, "batch_real": 256, "batch_syn_max": 256},
            "evaluate": {"backbone": "convnet", "batch_size": 256}},
}


def main() -> None:
    import torch
    import yaml

    from vision.registry import METHODS
    from vision.run import run_experiment

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ipcs", type=int, nargs="+")
    parser.add_argument("--iterations", type=int)
    parser.add_argument("--eval-epochs", type=int)
    parser.add_argument("--methods", nargs="+", default=[n for n, e in METHODS.items() if e.family == "condense"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--root", help="torchvision download folder (gpu preset)")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)
    preset = PRESETS[args.preset]
    ipcs, iterations = args.ipcs or preset["ipcs"], args.iterations or preset["iterations"]
    eval_epochs = args.eval_epochs or preset["eval_epochs"]
    recipes = Path(__file__).resolve().parents[1] / "recipes" / "vision"
    results: dict[tuple[int, str], list[dict]] = {}
    runs = []
    for ipc in ipcs:
        for method in args.methods:
            recipe = recipes / f"{method}.yaml"
            base = yaml.safe_load(recipe.read_text()) if recipe.exists() else {}
            for seed in args.seeds:
                train = {**(base.get("train") or {}), **preset["train"]}
                if "lr_img" in train:
                    train["lr_img"] = train["lr_img"] * ipc / train.get("ipc", 10)
                train.update(iterations=iterations, ipc=ipc, seed=seed, device=args.device, progress=False)
                config = {**base, "dataset": preset["dataset"], "root": args.root, "seed": seed, "out_dir": None,
                          "train": train,
                          "evaluate": {**(base.get("evaluate") or {}), **preset["evaluate"], "epochs": eval_epochs,
                                       "seed": seed}}
                started = time.perf_counter()
                result = run_experiment(method, config)
                run = {"ipc": ipc, "method": method, "seed": seed, "test_accuracy": result["final"]["test_accuracy"],
                       "condense_seconds": result["condensation"]["seconds"],
                       "evaluate_seconds": result["evaluation"]["seconds"],
                       "seconds": round(time.perf_counter() - started, 2), "lr_img": train.get("lr_img")}
                runs.append(run)
                results.setdefault((ipc, method), []).append(run)
                print(f"ipc {ipc:>2} {method:>8} seed {seed}: accuracy {run['test_accuracy']:.3f} "
                      f"({run['condense_seconds']:.1f}s + {run['evaluate_seconds']:.1f}s)", flush=True)
    rows, ordering = [], {}
    for (ipc, method), group in results.items():
        accuracies = [r["test_accuracy"] for r in group]
        dm = {r["seed"]: r["test_accuracy"] for r in results.get((ipc, "dm"), [])}
        paired = [r["test_accuracy"] - dm[r["seed"]] for r in group if r["seed"] in dm]
        rows.append([ipc, method, mean_std(accuracies), "-" if method == "dm" else mean_std(paired),
                     round(statistics.fmean(r["condense_seconds"] for r in group), 1),
                     round(statistics.fmean(r["evaluate_seconds"] for r in group), 1)])
    for ipc in ipcs:
        means = {m: statistics.fmean(r["test_accuracy"] for r in results[(ipc, m)]) for m in args.methods
                 if (ipc, m) in results}
        if all(m in means for m in ("dm", "random")):  # each paper's claim: method > DM > random
            ordering[f"ipc{ipc}"] = {**{f"{m}>dm>random": means[m] > means["dm"] > means["random"]
                                        for m in means if m not in ("dm", "random")},
                                     **{m: round(100 * v, 2) for m, v in means.items()}}
    command = (f"python benchmarks/vision_condense.py --preset {args.preset} --seeds {' '.join(map(str, args.seeds))} "
               f"--ipcs {' '.join(map(str, ipcs))} --iterations {iterations} --eval-epochs {eval_epochs} "
               f"--methods {' '.join(args.methods)}")
    report("vision_condense", command,
           ["ipc", "method", "test accuracy %", "vs DM (paired) pp", "condense s/run", "evaluate s/run"],
           rows, {"runs": runs, "ordering": ordering}, args.out)
    print(f"ordering: {ordering}")


if __name__ == "__main__":
    main()

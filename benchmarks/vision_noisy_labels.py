"""Noisy-label methods on scikit-learn digits: test accuracy of CE, Sel-CL and DPC under 40%
symmetric and 40% asymmetric (pair-flip) noise, over seeds, with the precision and recall of each
method's clean-sample selection at the last epoch; optionally the time of one epoch at 32x32.

    python benchmarks/vision_noisy_labels.py [--seeds 0 1 2] [--epochs 40] [--time-epoch-32]
        [--validation 0.2] [--method-options '{"dpc": {...}}'] [--train-options '{"dpc": {"lr": 0.01}}']

``--validation S`` evaluates on a held-out share S of the noisy training set against its noisy
labels instead of the test set: the numbers to choose settings on (the test set stays unseen).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from common import mean_std, report

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from curate.core.io import read_yaml
    from vision.run import run_experiment

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--warmup-epochs", type=int, default=10)
    parser.add_argument("--methods", nargs="+", default=["ce", "selcl", "dpc"])
    parser.add_argument("--kinds", nargs="+", default=["symmetric", "asymmetric"], choices=["symmetric", "asymmetric"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--time-epoch-32", action="store_true", help="also time one epoch at 32x32 per method")
    parser.add_argument("--out")
    parser.add_argument("--method-options", type=json.loads, default={},
                        help="JSON {method: {option: value}} over the recipes' method sections")
    parser.add_argument("--train-options", type=json.loads, default={},
                        help="JSON {method: {field: value}} over the recipes' train sections")
    parser.add_argument("--validation", type=float, default=0.0,
                        help="evaluate on this held-out share of the noisy training set (noisy labels)")
    args = parser.parse_args()
    recipes = Path(__file__).resolve().parents[1] / "recipes" / "vision"
    rows, runs = [], []
    for kind in args.kinds:
        for method in args.methods:
            accuracies, precisions, recalls, seconds = [], [], [], []
            for seed in args.seeds:
                config = read_yaml(recipes / f"{method}.yaml", "recipe")
                config.update(seed=seed, noise={"kind": kind, "rate": 0.4, "seed": seed})
                if method == "dpc":  # the paper's settings: the ramp from warmup, negative entropy under pair flips
                    config["method"] = {**config.get("method", {}), "rampup_start": args.warmup_epochs,
                                        "confidence_penalty": kind == "asymmetric"}
                config["method"] = {**config.get("method", {}), **args.method_options.get(method, {})}
                config["train"] = {**config["train"], "epochs": args.epochs, "warmup_epochs": args.warmup_epochs,
                                   "seed": seed, "device": args.device, "progress": False,
                                   **args.train_options.get(method, {})}
                config["validation"] = args.validation
                started = time.perf_counter()
                result = run_experiment(method, config)
                seconds.append(time.perf_counter() - started)
                accuracies.append(result["final"]["test_accuracy"])
                if result["final"]["selection"]:
                    precisions.append(result["final"]["selection"]["precision"])
                    recalls.append(result["final"]["selection"]["recall"])
                runs.append({"noise": kind, "method": method, "seed": seed, "final": result["final"],
                             "curve": [round(h["test_accuracy"], 4) for h in result["epochs"]],
                             "seconds": round(seconds[-1], 1)})
                print(f"{kind:>10} {method:>6} seed {seed}: accuracy {result['final']['test_accuracy']:.3f}", flush=True)
            rows.append([f"{kind} 40%", method, mean_std(accuracies), mean_std(precisions), mean_std(recalls),
                         round(statistics.fmean(seconds), 1)])
    timing = []
    if args.time_epoch_32:
        for method in args.methods:
            config = read_yaml(recipes / f"{method}.yaml", "recipe")
            config.update(image_size=32)
            config["train"] = {**config["train"], "epochs": 2, "warmup_epochs": 1, "device": args.device,
                               "progress": False}
            result = run_experiment(method, config)
            timing.append({"method": method, "seconds_per_epoch_32x32": result["epochs"][-1]["seconds"]})
    command = (f"python benchmarks/vision_noisy_labels.py --seeds {' '.join(map(str, args.seeds))} "
               f"--epochs {args.epochs} --warmup-epochs {args.warmup_epochs}"
               + (f" --methods {' '.join(args.methods)}" if args.methods != ["ce", "selcl", "dpc"] else "")
               + (f" --kinds {' '.join(args.kinds)}" if args.kinds != ["symmetric", "asymmetric"] else "")
               + (f" --validation {args.validation}" if args.validation else "")
               + (f" --method-options '{json.dumps(args.method_options)}'" if args.method_options else "")
               + (f" --train-options '{json.dumps(args.train_options)}'" if args.train_options else ""))
    report("vision_noisy_labels", command,
           ["noise", "method", "test accuracy %", "selection precision %", "selection recall %", "seconds/run"],
           rows, {"runs": runs, "epoch_timing_32x32": timing}, args.out)
    for t in timing:
        print(f"{t['method']}: {t['seconds_per_epoch_32x32']:.2f} s per epoch at 32x32")


if __name__ == "__main__":
    main()

"""Learning from crowds on scikit-learn digits: test accuracy (last epoch, no model selection) of
majority vote + CE, CrowdLayer and CCC (and AIDTM when registered) on simulated Beta-sparse crowds
(100 annotators, 2.5 labels per instance, independent and correlated confusions, or AIDTM's
instance-dependent noise with 3 annotator types: --regimes idn), over seeds; the
test accuracy at the last warm-up epoch, the
raw annotation and majority-vote accuracies, CCC's distilled-set label accuracy, seconds per run.

    python benchmarks/vision_crowds.py [--seeds 0 1 2] [--epochs 30] [--warmup-epochs 10] [--regimes corr ind]
    python benchmarks/vision_crowds.py --regimes idn --out benchmarks/results/vision_crowds_idn.json
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from common import mean_std, report

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import yaml

    from vision.registry import METHODS
    from vision.run import run_experiment

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--warmup-epochs", type=int, default=10)
    parser.add_argument("--regimes", nargs="+", default=["corr", "ind"])
    parser.add_argument("--idn-types", type=int, default=3)
    parser.add_argument("--idn-rate", type=float, default=0.4)
    parser.add_argument("--methods", nargs="+", default=[m for m in ("mv", "crowdlayer", "ccc", "aidtm") if m in METHODS])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out")
    args = parser.parse_args()
    recipes = Path(__file__).resolve().parents[1] / "recipes" / "vision"
    rows, runs = [], []
    for regime in args.regimes:
        for method in args.methods:
            accuracies, warm, seconds, raw, vote, distilled = [], [], [], [], [], []
            for seed in args.seeds:
                config = yaml.safe_load((recipes / f"{method}.yaml").read_text())
                crowd = {**config["annotators"], "regime": regime, "seed": seed}
                if regime == "idn":  # AIDTM's code: 3 annotator types, instance-dependent noise
                    crowd.update(groups=args.idn_types, flip_rate=args.idn_rate)
                config.update(seed=seed, annotators=crowd)
                config["train"] = {**config["train"], "epochs": args.epochs, "warmup_epochs": args.warmup_epochs,
                                   "seed": seed, "device": args.device, "progress": False}
                started = time.perf_counter()
                result = run_experiment(method, config)
                seconds.append(time.perf_counter() - started)
                accuracies.append(result["final"]["test_accuracy"])
                if args.warmup_epochs:  # the last warm-up epoch (CCC: the two CrowdLayers' ensemble)
                    warm.append(result["epochs"][args.warmup_epochs - 1]["test_accuracy"])
                raw.append(result["annotators"]["annotation_accuracy"])
                vote.append(result["annotators"]["majority_vote_accuracy"])
                distilled += result["crowd_metrics"].get("distilled_label_accuracy", [])
                runs.append({"regime": regime, "method": method, "seed": seed, "final": result["final"],
                             "annotators": result["annotators"], "crowd_metrics": result["crowd_metrics"],
                             "seconds": round(seconds[-1], 1)})
                print(f"{regime:>5} {method:>10} seed {seed}: accuracy {accuracies[-1]:.3f}", flush=True)
            rows.append([regime, method, mean_std(accuracies), mean_std(warm), mean_std(raw), mean_std(vote), mean_std(distilled),
                         round(statistics.fmean(seconds), 1)])
    command = (f"python benchmarks/vision_crowds.py --seeds {' '.join(map(str, args.seeds))} "
               f"--epochs {args.epochs} --warmup-epochs {args.warmup_epochs} --regimes {' '.join(args.regimes)}")
    report("vision_crowds", command,
           ["regime", "method", "test accuracy %", "at end of warm-up %", "annotation accuracy %", "majority-vote accuracy %",
            "distilled-set label accuracy %", "seconds/run"], rows, {"runs": runs}, args.out)


if __name__ == "__main__":
    main()

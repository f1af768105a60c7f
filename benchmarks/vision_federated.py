"""Federated learning under label skew on scikit-learn digits: FedAvg vs FedNTD vs FedLMD vs
FedLMD-Tf (the recipes: 20 clients, 5 per round, 2 local epochs, MLP 64-128-10, lr 0.01 x
0.99^round), with the authors' sharding (2 class-shards per client) and a Dirichlet(alpha 0.1)
split, at the spec's CPU size (50 rounds, 2 local epochs) and with the authors' 5 local epochs,
over seeds (a seed sets the train/test split, the client split, the initialisation, the sampled
clients and batch orders; the methods of one seed share all of them, so differences are
paired). Reported: the final global test accuracy, its mean over the last 10 rounds, the paired
difference to FedAvg, the local models' accuracy on their clients' minority classes (mean over the
last 10 rounds: how much local training forgot of what the client rarely sees, the mechanism's
observable), the client split and seconds per run (in-process driver).

    python benchmarks/vision_federated.py [--seeds 0 1 2] [--settings 50:2 50:5] [--partitions shards dirichlet]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from common import mean_std, report

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

METHODS = ("fedavg", "fedntd", "fedlmd", "fedlmd_tf")


def _diff(values: list[float], base: list[float]) -> str:
    return mean_std([a - b for a, b in zip(values, base)])


def main() -> None:
    import torch
    import yaml

    from vision.run import run_experiment

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--settings", nargs="+", default=["50:2", "50:5"],
                        help="ROUNDS:LOCAL_EPOCHS per block of rows (50:2 the spec's CPU size, 50:5 the authors' E)")
    parser.add_argument("--partitions", nargs="+", default=["shards", "dirichlet"], choices=["shards", "dirichlet"])
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    recipes = Path(__file__).resolve().parents[1] / "recipes" / "vision"
    rows, runs, claims, splits = [], [], {}, {}
    started_all = time.perf_counter()
    settings = [tuple(int(x) for x in item.split(":")) for item in args.settings]
    for (rounds, local_epochs), kind in ((setting, kind) for setting in settings for kind in args.partitions):
        name = f"{kind} R{rounds} E{local_epochs}"
        final: dict[str, list[float]] = {}
        tail: dict[str, list[float]] = {}
        for method in args.methods:
            final[method], tail[method], minority, seconds = [], [], [], []
            for seed in args.seeds:
                config = yaml.safe_load((recipes / f"{method}.yaml").read_text())
                config["seed"] = seed
                config["partition"] = {**config["partition"], "kind": kind, "alpha": args.alpha, "seed": seed}
                config["train"] = {**config["train"], "rounds": rounds, "local_epochs": local_epochs, "seed": seed,
                                   "device": "cpu", "progress": False}
                began = time.perf_counter()
                result = run_experiment(method, config)
                seconds.append(time.perf_counter() - began)
                history = result["rounds"]
                final[method].append(result["final"]["test_accuracy"])
                tail[method].append(statistics.fmean(h["test_accuracy"] for h in history[-10:]))
                minority.append(result["final"]["local_minority_accuracy"])
                split = result["partition"]
                splits[f"{kind} seed {seed}"] = {k: split[k] for k in ("clients", "sizes", "classes_per_client",
                                                                        "majority_per_client")}
                runs.append({"partition": kind, "rounds": rounds, "local_epochs": local_epochs, "method": method,
                             "seed": seed, "final": result["final"],
                             "accuracy_by_round": [round(h["test_accuracy"], 4) for h in history],
                             "local_minority_by_round": [h["local_minority_accuracy"] for h in history],
                             "seconds": round(seconds[-1], 2)})
                print(f"{name:>18} {method:>9} seed {seed}: final {final[method][-1]:.3f}, "
                      f"last-10 {tail[method][-1]:.3f}, local minority {minority[-1]:.3f}", flush=True)
            rows.append([kind, rounds, local_epochs, method, mean_std(final[method]),
                         _diff(final[method], final.get("fedavg", final[method])),
                         mean_std(tail[method]), _diff(tail[method], tail.get("fedavg", tail[method])),
                         mean_std(minority), round(statistics.fmean(seconds), 2)])
        if set(METHODS) <= set(final):
            claims[name] = {}
            for what, values in (("final", final), ("last_10_rounds", tail)):
                m = {k: statistics.fmean(v) for k, v in values.items()}
                claims[name][what] = {"FedLMD >= FedNTD >= FedAvg": m["fedlmd"] >= m["fedntd"] >= m["fedavg"],
                                      "FedLMD-Tf >= FedAvg": m["fedlmd_tf"] >= m["fedavg"]}
    command = (f"python benchmarks/vision_federated.py --seeds {' '.join(map(str, args.seeds))} "
               f"--settings {' '.join(args.settings)} --partitions {' '.join(args.partitions)}"
               + (f" --alpha {args.alpha}" if args.alpha != 0.1 else ""))
    report("vision_federated", command,
           ["partition", "rounds", "local epochs", "method", "final accuracy %", "vs FedAvg (paired)",
            "last-10-round accuracy %", "vs FedAvg (paired) ", "local minority-class accuracy %", "seconds/run"], rows,
           {"claims": claims, "splits": splits, "runs": runs, "total_seconds": round(time.perf_counter() - started_all, 1)},
           args.out)
    for kind, claim in claims.items():
        print(f"{kind}: {claim}")


if __name__ == "__main__":
    main()

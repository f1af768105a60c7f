"""Semi-supervised multi-label learning on jittered digit mosaics (5% labelled): D2L + MAT against
labelled-only BCE (0.5 threshold) and CAP-style pseudo-labels (class-prior thresholds), over seeds;
test mAP, CF1 and OF1 of the student at the method's thresholds (and the EMA teacher's mAP), the
paired mAP differences to both baselines (mean and 95% t-interval over seeds), seconds per run.
``--ablations`` adds D2L + MAT without patches, with one shared head per branch, both (MAT with a
single head), and with F1 in place of Fbeta.

    python benchmarks/vision_ssmll.py [--seeds 0 1 2] [--epochs 30] [--warmup-epochs 12] [--ablations]
    python benchmarks/vision_ssmll.py --seeds 0 --train-size 300 --epochs 3 --warmup-epochs 1   # a smoke run
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from common import mean_std, paired_interval, report

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BASELINES = ("ssmll_bce", "ssmll_cap")
VARIANTS = {"d2l_mat": ("d2l_mat", {}), "ssmll_bce": ("ssmll_bce", {}), "ssmll_cap": ("ssmll_cap", {}),
            "d2l_mat_no_patches": ("d2l_mat", {"patches": False}),
            "d2l_mat_shared_head": ("d2l_mat", {"decouple": False}),
            "mat_single_head": ("d2l_mat", {"patches": False, "decouple": False}),
            "d2l_mat_f1": ("d2l_mat", {"metric": "f1"})}


def main() -> None:
    import torch
    import yaml

    from vision.run import run_experiment

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--warmup-epochs", type=int, default=12)
    parser.add_argument("--train-size", type=int, default=3000)
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument("--labelled", type=float, default=0.05)
    parser.add_argument("--backbone", default="convnet:32")
    parser.add_argument("--ablations", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    recipes = Path(__file__).resolve().parents[1] / "recipes" / "vision"
    names = [*BASELINES, "d2l_mat", *([k for k in VARIANTS if k.startswith(("d2l_mat_", "mat_"))] if args.ablations else [])]
    found: dict[str, dict[str, list[float]]] = {}
    runs = []
    for name in names:
        method, options = VARIANTS[name]
        found[name] = {key: [] for key in ("map", "cf1", "of1", "ema_map", "seconds")}
        for seed in args.seeds:
            config = yaml.safe_load((recipes / f"{method}.yaml").read_text())
            config.update(seed=seed, labelled=args.labelled,
                          mosaic={**config["mosaic"], "train_size": args.train_size, "test_size": args.test_size,
                                  "seed": seed})
            config["train"] = {**config["train"], "epochs": args.epochs, "warmup_epochs": args.warmup_epochs,
                               "backbone": args.backbone, "seed": seed, "device": args.device, "progress": False}
            config["method"] = {**config["method"], **options}
            started = time.perf_counter()
            result = run_experiment(method, config)
            seconds = time.perf_counter() - started
            final = result["final"]
            for key, value in (("map", final["test_map"]), ("cf1", final["test_cf1"]), ("of1", final["test_of1"]),
                               ("ema_map", final["ema_test_map"]), ("seconds", seconds)):
                found[name][key].append(value)
            runs.append({"method": name, "seed": seed, "final": final, "split": result["split"],
                         "thresholds": result["student"]["thresholds"], "seconds": round(seconds, 1)})
            print(f"{name:>20} seed {seed}: mAP {final['test_map']:.3f} CF1 {final['test_cf1']:.3f} "
                  f"OF1 {final['test_of1']:.3f} ({seconds:.0f} s)", flush=True)
    rows = [[name, mean_std(f["map"]), mean_std(f["cf1"]), mean_std(f["of1"]), mean_std(f["ema_map"]),
             *(paired_interval(f["map"], found[b]["map"]) for b in BASELINES),
             round(statistics.fmean(f["seconds"]), 1)] for name, f in found.items()]
    command = (f"python benchmarks/vision_ssmll.py --seeds {' '.join(map(str, args.seeds))} --epochs {args.epochs} "
               f"--warmup-epochs {args.warmup_epochs} --train-size {args.train_size} --test-size {args.test_size} "
               f"--labelled {args.labelled} --backbone {args.backbone}" + (" --ablations" if args.ablations else ""))
    report("vision_ssmll", command,
           ["method", "test mAP %", "CF1 %", "OF1 %", "EMA mAP %", "mAP vs labelled-only (pts)", "mAP vs CAP (pts)",
            "seconds/run"], rows, {"runs": runs}, args.out)


if __name__ == "__main__":
    main()

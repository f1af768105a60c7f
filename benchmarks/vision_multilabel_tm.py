"""Noisy multi-label transition-matrix estimation on digit mosaics (2x2 scikit-learn digits,
q = 10, offline): per noise setting (rho-, rho+) and seed, the estimation error (sum over classes
of the entrywise L1 error relative to ||T^j||_1, the paper's metric) of the method (``ours``: GMM
small-loss selection; classes it cannot serve take Dual-T), of the same solve on the truly
clean-for-j samples (``gold``), of the anchor-point estimate (T-estimator 97%), of Dual-T (Yao et
al. 2020: anchor-point T_club @ counted T_spade) and of the identity guess, and the
method with the authors' code's least-residual aggregation instead of the paper's medoid; and the test mAP
(sklearn's macro average precision) and CF1 of the Reweight classifier with each T, ``identity``
being plain BCE on the noisy labels. Seconds per run (warm-up + Reweight).

    python benchmarks/vision_multilabel_tm.py [--seeds 0 1 2] [--settings 0.2,0.2 0,0.6 0.6,0]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from common import mean_std, report

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = {"ours": {"estimator": "ours"}, "ours, code's residual": {"estimator": "ours", "aggregate": "residual"},
            "gold": {"estimator": "gold"}, "anchor": {"estimator": "anchor"}, "dualt": {"estimator": "dualt"},
            "identity (plain BCE)": {"estimator": "identity"}}


def main() -> None:
    import yaml

    from vision.run import run_experiment

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--settings", nargs="+", default=["0.2,0.2", "0,0.6", "0.6,0"], help="rho-,rho+ pairs")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out")
    args = parser.parse_args()
    recipe = yaml.safe_load((Path(__file__).resolve().parents[1] / "recipes" / "vision" / "mltm.yaml").read_text())
    rows, runs = [], []
    for setting in args.settings:
        rho_minus, rho_plus = (float(v) for v in setting.split(","))
        for estimator, options in VARIANTS.items():
            errors, maps, cf1s, fallback, seconds = [], [], [], [], []
            for seed in args.seeds:
                config = {**recipe, "seed": seed, "mosaic": {**recipe["mosaic"], "seed": seed},
                          "noise": {"rho_minus": rho_minus, "rho_plus": rho_plus, "seed": seed},
                          "train": {**recipe["train"], "seed": seed, "device": args.device, "progress": False},
                          "method": {**recipe["method"], **options}}
                started = time.perf_counter()
                result = run_experiment("mltm", config)
                seconds.append(time.perf_counter() - started)
                estimate, final = result["estimate"], result["final"]
                errors.append(estimate["error"])
                maps.append(final["test_map"])
                cf1s.append(final["test_cf1"])
                fallback.append(len(estimate["fallback_classes"]))
                runs.append({"setting": [rho_minus, rho_plus], "estimator": estimator, "seed": seed,
                             "estimate": estimate, "final": final, "seconds": round(seconds[-1], 1)})
                print(f"({rho_minus}, {rho_plus}) {estimator:>22} seed {seed}: error {errors[-1]:.3f} "
                      f"mAP {maps[-1]:.4f} CF1 {cf1s[-1]:.4f}", flush=True)
            rows.append([f"({rho_minus:g}, {rho_plus:g})", estimator,
                         f"{statistics.fmean(errors):.2f} ± {statistics.pstdev(errors):.2f}",
                         mean_std(maps), mean_std(cf1s), round(statistics.fmean(fallback), 1),
                         round(statistics.fmean(seconds), 1)])
    command = (f"python benchmarks/vision_multilabel_tm.py --seeds {' '.join(map(str, args.seeds))} "
               f"--settings {' '.join(args.settings)}")
    report("vision_multilabel_tm", command,
           ["(rho-, rho+)", "estimator", "T est. error (sum of 10 classes)", "test mAP %", "test CF1 %",
            "fallback classes", "seconds/run"], rows, {"runs": runs}, args.out)


if __name__ == "__main__":
    main()

"""DPDFD on scikit-learn digits: the teacher's test accuracy, the data-free student's at epsilon =
inf (sigma 0), 10 and 1 (sigma from Opacus get_noise_multiplier for iterations x batch releases at
sample rate 1), the random-init student, and the non-private baseline that trains the student on
the generator's samples by plain loss.backward() (no normalisation, no noise); epsilon per row,
over seeds (the split, the teacher and the loop all seeded by it), seconds per run.

The teacher is trained once per seed (on the 80% split) and handed to every row as saved weights.
Offline anchors (spec): sigma = 0 student >= 80% of the teacher; acc(inf) >= acc(10) >= acc(1) - 2 pp.

    python benchmarks/vision_dpdfd.py [--seeds 0 1 2] [--iterations 2000] [--teacher-epochs 20]
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import mean_std, report

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROWS = {  # row name -> method options over the recipe's
    "DPDFD eps=inf (sigma 0)": {"noise_multiplier": 0.0, "target_epsilon": None},
    "DPDFD eps=10": {"noise_multiplier": None, "target_epsilon": 10.0},
    "DPDFD eps=1": {"noise_multiplier": None, "target_epsilon": 1.0},
    "G samples, no DP (plain backward)": {"sanitiser": "none", "noise_multiplier": 0.0, "target_epsilon": None},
}


def main() -> None:
    import torch
    import yaml

    from vision.data import load_images
    from vision.distill.dpdfd import DPDFDExperimentConfig
    from vision.distill.experiment import train_teacher
    from vision.run import build_config, run_experiment

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--teacher-epochs", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    recipe = yaml.safe_load((Path(__file__).resolve().parents[1] / "recipes" / "vision" / "dpdfd.yaml").read_text())
    started_all = time.perf_counter()
    acc: dict[str, list[float]] = {name: [] for name in ("teacher", "random-init student", *ROWS)}
    eps: dict[str, list[float]] = {name: [] for name in ROWS}
    sigmas: dict[str, list[float]] = {name: [] for name in ROWS}
    seconds: dict[str, list[float]] = {name: [] for name in ("teacher", *ROWS)}
    runs = []
    with tempfile.TemporaryDirectory(prefix="dpdfd-bench-") as tmp:
        for seed in args.seeds:
            base = {**recipe, "seed": seed,
                    "teacher": {**recipe["teacher"], "epochs": args.teacher_epochs, "seed": seed,
                                "device": args.device, "progress": False},
                    "train": {**recipe["train"], "iterations": args.iterations, "seed": seed,
                              "eval_every": args.iterations, "device": args.device, "progress": False}}
            config = build_config(base, "dpdfd")
            assert isinstance(config, DPDFDExperimentConfig)
            started = time.perf_counter()
            teacher, summary = train_teacher(load_images("digits", seed=seed), config)
            seconds["teacher"].append(time.perf_counter() - started)
            acc["teacher"].append(summary["test_accuracy"])
            weights = Path(tmp) / f"teacher-{seed}.pt"
            torch.save(teacher.state_dict(), weights)
            for name, method in ROWS.items():
                row = {**base, "teacher_weights": str(weights), "method": {**recipe["method"], **method}}
                started = time.perf_counter()
                result = run_experiment("dpdfd", row)
                seconds[name].append(time.perf_counter() - started)
                acc[name].append(result["final"]["test_accuracy"])
                eps[name].append(math.inf if result["privacy"]["epsilon"] is None else result["privacy"]["epsilon"])
                sigmas[name].append(result["privacy"]["sigma"])
                if name == next(iter(ROWS)):
                    acc["random-init student"].append(result["final"]["initial_test_accuracy"])
                runs.append({"seed": seed, "row": name, "final": result["final"], "privacy": result["privacy"],
                             "teacher": result["teacher"], "seconds": round(seconds[name][-1], 1)})
                print(f"seed {seed} {name:>36}: accuracy {acc[name][-1]:.3f}, epsilon {eps[name][-1]:.3g}, "
                      f"sigma {sigmas[name][-1]:.4g}, {seconds[name][-1]:.0f}s", flush=True)

    def epsilon_cell(name: str) -> str:
        values = eps.get(name)
        if not values:
            return "-"
        return "inf" if math.isinf(values[0]) else f"{statistics.fmean(values):.3g}"

    rows = []
    for name in acc:
        sigma = f"{statistics.fmean(sigmas[name]):.4g}" if name in sigmas else "-"
        secs = round(statistics.fmean(seconds[name]), 1) if name in seconds else "-"
        rows.append([name, mean_std(acc[name]), epsilon_cell(name), sigma, secs])
    mean = {name: statistics.fmean(values) for name, values in acc.items()}
    anchors = {
        "sigma0_student_ge_80pct_teacher": mean["DPDFD eps=inf (sigma 0)"] >= 0.8 * mean["teacher"],
        "acc_inf_ge_acc_10": mean["DPDFD eps=inf (sigma 0)"] >= mean["DPDFD eps=10"],
        "acc_10_ge_acc_1_minus_2pp": mean["DPDFD eps=10"] >= mean["DPDFD eps=1"] - 0.02,
    }
    total = time.perf_counter() - started_all
    print(f"\nanchors: {anchors}; total wall time {total:.0f}s")
    command = (f"python benchmarks/vision_dpdfd.py --seeds {' '.join(map(str, args.seeds))} "
               f"--iterations {args.iterations} --teacher-epochs {args.teacher_epochs}")
    report("vision_dpdfd", command, ["row", "test accuracy %", "epsilon (delta 1e-5)", "sigma", "seconds/run"], rows,
           {"anchors": anchors, "total_seconds": round(total, 1), "iterations": args.iterations,
            "batch_size": recipe["train"]["batch_size"], "releases": args.iterations * recipe["train"]["batch_size"],
            "runs": runs}, args.out)


if __name__ == "__main__":
    main()

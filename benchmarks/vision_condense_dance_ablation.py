"""DANCE's two views on digits: the recipe (inner + calibration, ``iter_calib: 1``) against
``iter_calib: 0`` (DM under middle encoders, no calibration), same seeds and settings as the cpu
preset of benchmarks/vision_condense.py (300 iterations, 200 evaluation epochs, lr_img · ipc / 10).

    python benchmarks/vision_condense_dance_ablation.py
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

from common import mean_std, report

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import torch
    import yaml

    from vision.run import run_experiment

    torch.set_num_threads(1)
    recipe = yaml.safe_load((Path(__file__).resolve().parents[1] / "recipes/vision/dance.yaml").read_text())
    rows, runs = [], []
    for ipc in (1, 10):
        for iter_calib in (1, 0):
            accuracies = []
            for seed in (0, 1, 2):
                train = {**recipe["train"], "width": 32, "batch_real": 64, "iterations": 300, "ipc": ipc, "seed": seed,
                         "lr_img": recipe["train"]["lr_img"] * ipc / recipe["train"]["ipc"]}
                config = {**recipe, "seed": seed, "out_dir": None, "train": train,
                          "evaluate": {**recipe["evaluate"], "epochs": 200, "seed": seed},
                          "method": {**recipe["method"], "iter_calib": iter_calib}}
                accuracy = run_experiment("dance", config)["final"]["test_accuracy"]
                accuracies.append(accuracy)
                runs.append({"ipc": ipc, "iter_calib": iter_calib, "seed": seed, "test_accuracy": accuracy})
                print(f"ipc {ipc} iter_calib {iter_calib} seed {seed}: {accuracy:.3f}", flush=True)
            rows.append([ipc, iter_calib, mean_std(accuracies), round(100 * statistics.fmean(accuracies), 2)])
    report("vision_condense_dance_ablation", "python benchmarks/vision_condense_dance_ablation.py",
           ["ipc", "iter_calib", "test accuracy %", "mean %"], rows, {"runs": runs})


if __name__ == "__main__":
    main()

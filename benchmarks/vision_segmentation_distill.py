"""Segmentation distillation on procedural shape scenes (recipes/vision/rdd.yaml): dataset-level test
mIoU (last epoch, no model selection) of the student alone (CE), plain pixel KD (CE + KD, tau 1,
weight 1) and RDD (TFE-RDD then TSE-RDD, plus the same KD), over seeds; and the paper's
"OHEM on the student only" ablation (RDD with selection: student) to tell RDD's XOR selection
from plain hard-pixel mining. Per seed the scenes, the
teacher (trained once, CE) and the student's initialisation are the same for the three students;
the paired differences per seed are reported too, with the teacher's mIoU and seconds per run.

    python benchmarks/vision_segmentation_distill.py [--seeds 0 1 2] [--epochs 30] [--teacher-epochs 40]
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
    import torch
    import yaml

    from vision.distill.rdd import RDD, PixelKD, PixelKDConfig, RDDConfig, SegmentationCE
    from vision.distill.segmentation import train_segmentation_teacher, run_segmentation_experiment
    from vision.distill.shapes import make_shapes
    from vision.run import build_config

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, help="student epochs (default: the recipe's)")
    parser.add_argument("--teacher-epochs", type=int, help="default: the recipe's")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    recipe = yaml.safe_load((Path(__file__).resolve().parents[1] / "recipes/vision/rdd.yaml").read_text())
    names = ("CE", "KD", "RDD", "RDD student-only OHEM")
    miou: dict[str, list[float]] = {n: [] for n in names}
    seconds: dict[str, list[float]] = {n: [] for n in (*names, "teacher")}
    teacher_miou, runs = [], []
    started_all = time.perf_counter()
    for seed in args.seeds:
        raw = yaml.safe_load(yaml.safe_dump(recipe))
        raw["data"]["seed"] = seed
        for section, epochs in (("teacher", args.teacher_epochs), ("train", args.epochs)):
            raw[section].update(seed=seed, device=args.device, progress=False, **({"epochs": epochs} if epochs else {}))
        config = build_config(raw, "rdd", "recipes/vision/rdd.yaml")
        started = time.perf_counter()
        teacher = train_segmentation_teacher(make_shapes(config.data), config)
        seconds["teacher"].append(time.perf_counter() - started)
        teacher_miou.append(teacher[1]["test_miou"])
        kd = {k: config.method[k] for k in ("temperature", "kd_weight")}
        methods = {"CE": SegmentationCE(), "KD": PixelKD(PixelKDConfig(**kd)), "RDD": RDD(RDDConfig(**config.method)),
                   "RDD student-only OHEM": RDD(RDDConfig(**{**config.method, "selection": "student"}))}
        for name, method in methods.items():
            started = time.perf_counter()
            result = run_segmentation_experiment(method, config, teacher=teacher)
            seconds[name].append(time.perf_counter() - started)
            miou[name].append(result["final"]["test_miou"])
            runs.append({"seed": seed, "method": name, "test_miou": miou[name][-1], "epochs": result["epochs"],
                         "seconds": round(seconds[name][-1], 1)})
            print(f"seed {seed} {name:>21}: mIoU {miou[name][-1]:.4f} (teacher {teacher_miou[-1]:.4f})", flush=True)
    rows = [[name, mean_std(miou[name]), round(statistics.fmean(seconds[name]), 1)] for name in names]
    rows.append(["teacher (width 24, aux head)", mean_std(teacher_miou), round(statistics.fmean(seconds["teacher"]), 1)])
    pairs = {f"{a} - {b}": [x - y for x, y in zip(miou[a], miou[b])] for a, b in (("RDD", "KD"), ("KD", "CE"), ("RDD", "CE"),
                                                                               ("RDD", "RDD student-only OHEM"))}
    rows += [[f"paired {pair}", mean_std(diffs), "-"] for pair, diffs in pairs.items()]
    means = {n: statistics.fmean(miou[n]) for n in names}
    held = {"RDD >= KD": means["RDD"] >= means["KD"], "KD >= CE": means["KD"] >= means["CE"]}
    wall = time.perf_counter() - started_all
    print(f"\nmean mIoU: RDD {means['RDD']:.4f}, KD {means['KD']:.4f}, CE {means['CE']:.4f}; "
          f"RDD >= KD: {held['RDD >= KD']}, KD >= CE: {held['KD >= CE']}; wall {wall:.0f} s")
    command = f"python benchmarks/vision_segmentation_distill.py --seeds {' '.join(map(str, args.seeds))}" + (
        f" --epochs {args.epochs}" if args.epochs else "") + (f" --teacher-epochs {args.teacher_epochs}" if args.teacher_epochs else "")
    report("vision_segmentation_distill", command, ["method", "test mIoU %", "seconds/run"], rows,
           {"recipe": recipe, "miou": miou, "teacher_miou": teacher_miou, "paired_differences": pairs,
            "claim_held": held, "wall_seconds": round(wall, 1), "runs": runs}, args.out)


if __name__ == "__main__":
    main()

"""Knowledge distillation on scikit-learn digits: test accuracy (last epoch, no model selection) of a
narrow student trained alone (CE), with plain KD (Hinton et al.; RepDistiller's T 4, CE 0.1, KD 0.9),
with BinaryKL-Norm alone on its one head (BKL), with CE + BinaryKL-Norm on the one head (single, the
paper's ablation) and with DHKD (dual head; GA off and on), over seeds. Per seed, one teacher is
trained and every student distils from it; the paired differences against KD and CE are per seed.

    python benchmarks/vision_distill.py [--seeds 0 1 2] [--epochs 100] [--teacher-epochs 40]
    python benchmarks/vision_distill.py --validation 0.2   # tuning: a held-out share of the training set
    python benchmarks/vision_distill.py --diagnostic 10 300 --teacher-epochs 20   # neural-collapse cosines

The offline anchor of the spec (ours, not the paper's): acc(DHKD) >= acc(CE) and
acc(single) <= max(acc(CE), acc(BKL)), over the seeds' means.
"""
from __future__ import annotations

import argparse
import statistics
from dataclasses import asdict, is_dataclass
import sys
import time
from pathlib import Path

from common import mean_std, report

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = {  # name: (registered method, its options); "ce" is the student alone
    "ce": ("ce", {}),
    "kd": ("kd", {}),
    "bkl": ("dhkd", {"heads": "single", "gamma": 0.0, "ga": False}),
    "single": ("dhkd", {"heads": "single", "ga": False}),
    "dhkd": ("dhkd", {"ga": False}),
    "dhkd-ga": ("dhkd", {"ga": True}),
}


def subset(data, share: float, seed: int):
    """``data`` with a seeded ``share`` of its training images (the test images unchanged)."""
    import numpy as np

    from vision.data import ImageData

    keep = np.sort(np.random.default_rng([seed, 11]).permutation(len(data.train_labels))[:max(1, round(share * len(data.train_labels)))])
    return ImageData(data.train_images[keep], data.train_labels[keep], data.test_images, data.test_labels,
                     data.num_classes, f"{data.name}-train{share}")


def collapse_diagnostic(seed: int, epochs: int, student: str, teacher_epochs: int, lr: float) -> dict:
    """The spec's (non-gating) neural-collapse diagnostic: a single head trained on CE + BKL-Norm
    without augmentation for ``epochs``; at the end, on the whole training set, the cosine between
    the CE and BKL gradients of the classifier (W, b) and of the backbone, and the training accuracy."""
    import torch
    from torch.nn import functional as F

    from vision.data import load_images
    from vision.distill.dhkd import DHKD, DHKDConfig, bkl_norm
    from vision.distill.experiment import DistillExperimentConfig, StudentTrainConfig, TeacherTrainConfig, train_teacher
    from vision.train import fit

    class Probe(DHKD):
        def modules(self, model, data):
            self.model = model
            return super().modules(model, data)

    common = {"lr": lr, "augment": False, "device": "cpu", "progress": False, "seed": seed}
    data = load_images("digits", seed=seed)
    config = DistillExperimentConfig(seed=seed, teacher=TeacherTrainConfig(epochs=teacher_epochs, **common),
                                     train=StudentTrainConfig(backbone=student, epochs=epochs, **common))
    teacher, _ = train_teacher(data, config)
    method = Probe(DHKDConfig(heads="single", ga=False))
    method.set_teacher(teacher)
    result = fit(method, data, data.train_labels, config.train)
    model = method.model.eval()
    z = model(data.train_images)
    with torch.no_grad():
        t = teacher(data.train_images)
    parts = {"ce": F.cross_entropy(z, data.train_labels), "bkl": bkl_norm(z, t, 2.0)}
    groups = {"classifier": list(model.classifier.parameters()), "backbone": list(model.body.parameters())}
    cosines = {}
    for group, params in groups.items():
        flat = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params, retain_graph=True)]) for loss in parts.values()]
        cosines[group] = float(F.cosine_similarity(flat[0], flat[1], dim=0))
    train_accuracy = float((z.argmax(1) == data.train_labels).float().mean())
    return {"seed": seed, "epochs": epochs, "train_accuracy": train_accuracy, "cosine_ce_bkl": cosines,
            "test_accuracy": result["final"]["test_accuracy"]}


def main() -> None:
    import torch

    from vision.data import load_images
    from vision.distill.base import Distiller
    from vision.distill.experiment import DistillExperimentConfig, StudentTrainConfig, TeacherTrainConfig, train_teacher
    from vision.registry import build_method
    from vision.run import noisy_validation_split
    from vision.train import fit

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--teacher", default="convnet")
    parser.add_argument("--student", default="mlp:32")
    parser.add_argument("--teacher-epochs", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--train-share", type=float, default=1.0,
                        help="train teacher and students on this seeded share of the training split (less data: more room to distil)")
    parser.add_argument("--validation", type=float, default=0.0,
                        help="> 0: evaluate on this held-out share of the training set (for tuning), not the test set")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out")
    parser.add_argument("--diagnostic", type=int, nargs="+", metavar="EPOCHS",
                        help="only the neural-collapse diagnostic (single head, no augmentation) after each of these epoch counts")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.diagnostic:
        from common import RESULTS, markdown_table
        from curate.core.io import atomic_write_json

        found = [collapse_diagnostic(seed, epochs, args.student, args.teacher_epochs, args.lr)
                 for epochs in args.diagnostic for seed in args.seeds]
        print(markdown_table(["epochs", "seed", "train accuracy", "cos(CE, BKL) classifier", "cos(CE, BKL) backbone"],
                             [[d["epochs"], d["seed"], d["train_accuracy"], d["cosine_ce_bkl"]["classifier"],
                               d["cosine_ce_bkl"]["backbone"]] for d in found]))
        atomic_write_json(Path(args.out) if args.out else RESULTS / "vision_distill_diagnostic.json", {"diagnostic": found})
        return
    common = {"lr": args.lr, "augment": not args.no_augment, "device": args.device, "progress": False}
    accuracy: dict[str, dict[int, float]] = {v: {} for v in args.variants}
    seconds: dict[str, list[float]] = {v: [] for v in args.variants}
    teachers, runs = [], []
    for seed in args.seeds:
        data = load_images("digits", seed=seed)
        if args.validation > 0:
            data, _, _ = noisy_validation_split(data, data.train_labels.numpy(), None, args.validation, seed)
        if args.train_share < 1:
            data = subset(data, args.train_share, seed)
        config = DistillExperimentConfig(
            seed=seed, teacher=TeacherTrainConfig(backbone=args.teacher, epochs=args.teacher_epochs, seed=seed, **common),
            train=StudentTrainConfig(backbone=args.student, epochs=args.epochs, seed=seed, **common))
        started = time.perf_counter()
        teacher, summary = train_teacher(data, config)
        teachers.append({"seed": seed, **summary, "seconds": round(time.perf_counter() - started, 1)})
        print(f"seed {seed}: teacher ({args.teacher}) accuracy {summary['test_accuracy']:.3f}", flush=True)
        for variant in args.variants:
            name, options = VARIANTS[variant]
            method = build_method(name, options)
            if isinstance(method, Distiller):
                method.set_teacher(teacher)
            started = time.perf_counter()
            result = fit(method, data, data.train_labels, config.train)
            seconds[variant].append(time.perf_counter() - started)
            accuracy[variant][seed] = result["final"]["test_accuracy"]
            settings = asdict(method.config) if is_dataclass(getattr(method, "config", None)) else {}
            runs.append({"variant": variant, "method": name, "options": settings, "seed": seed,
                         "test_accuracy": accuracy[variant][seed], "seconds": round(seconds[variant][-1], 1)})
            print(f"seed {seed} {variant:>8}: accuracy {accuracy[variant][seed]:.3f} ({seconds[variant][-1]:.0f} s)", flush=True)

    def paired(variant: str, baseline: str) -> str:
        if baseline not in accuracy:
            return "-"
        return mean_std([accuracy[variant][s] - accuracy[baseline][s] for s in args.seeds])

    rows = [[v, mean_std(list(accuracy[v].values())), paired(v, "kd"), paired(v, "ce"),
             round(statistics.fmean(seconds[v]), 1)] for v in args.variants]
    means = {v: statistics.fmean(accuracy[v].values()) for v in args.variants}
    anchor = {}
    if {"dhkd", "ce"} <= means.keys():
        anchor["dhkd >= ce"] = means["dhkd"] >= means["ce"]
    if {"dhkd-ga", "ce"} <= means.keys():
        anchor["dhkd-ga >= ce"] = means["dhkd-ga"] >= means["ce"]
    if {"single", "ce", "bkl"} <= means.keys():
        anchor["single <= max(ce, bkl)"] = means["single"] <= max(means["ce"], means["bkl"])
    evaluated = f"held-out {args.validation} of the training set" if args.validation > 0 else "test set"
    command = (f"python benchmarks/vision_distill.py --seeds {' '.join(map(str, args.seeds))} --teacher {args.teacher} "
               f"--student {args.student} --teacher-epochs {args.teacher_epochs} --epochs {args.epochs} --lr {args.lr}"
               + (" --no-augment" if args.no_augment else "") + (f" --train-share {args.train_share}" if args.train_share < 1 else "") + (f" --validation {args.validation}" if args.validation else ""))
    report("vision_distill", command,
           ["student", f"accuracy % ({evaluated})", "minus KD (paired) pp", "minus CE (paired) pp", "seconds/run"],
           rows, {"teachers": teachers, "anchor": anchor, "evaluated_on": evaluated, "runs": runs}, args.out)
    print("anchor: " + ", ".join(f"{k}: {'held' if v else 'FAILED'}" for k, v in anchor.items()))


if __name__ == "__main__":
    main()

"""NACO against the end-to-end supervised baseline on procedural face videos (vision/video/faces.py):
both with the same CNN + Transformer + head (recipes/vision/naco.yaml and supervised.yaml); the
head (NACO, on its frozen backbone pre-trained on real clips only) or the whole network
(supervised) trained on real + the seen forgery kinds (swap, reenact); tested on those and on the
unseen kinds (flicker, temporal). A seed sets the clips and the training; both methods of one seed
share the clips, so differences are paired.

Reported per method: test AUC on the unseen kinds (mean of the per-kind AUCs, and each kind), on
the seen kinds, the paired difference to ``--reference`` (mean and 95% t-interval over seeds), and
seconds per run. The paper's claim (NACO generalises to unseen manipulations better than a
supervised detector) holds here if NACO's unseen AUC beats the baseline's with an interval above 0.

    python benchmarks/vision_naco.py [--seeds 0 1 2] [--methods naco supervised] [--set train.pretrain_epochs=10 ...]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from common import mean_std, paired_interval, report

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "vision"


def overrides(items: list[str]) -> dict[str, dict]:
    """'section.field=value' (or 'field=value' at the top level) -> {section: {field: value}}."""
    import yaml

    out: dict[str, dict] = {}
    for item in items:
        key, _, value = item.partition("=")
        section, _, name = key.rpartition(".")
        out.setdefault(section, {})[name] = yaml.safe_load(value)
    return out


def main() -> None:
    import torch
    import yaml

    from vision.run import run_experiment

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["naco", "supervised"])
    parser.add_argument("--reference", default="supervised", help="the paired differences are against this method")
    parser.add_argument("--set", nargs="*", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override recipe fields for every method (e.g. clips.real_train=32 for a smoke test)")
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    changes = overrides(args.set)
    found: dict[str, dict[str, list]] = {}
    runs = []
    started_all = time.perf_counter()
    for name in args.methods:
        found[name] = {"unseen": [], "seen": [], "pooled": [], "seconds": [], "per_kind": []}
        for seed in args.seeds:
            config = yaml.safe_load((RECIPES / f"{name}.yaml").read_text())
            config["seed"] = seed
            config["train"] = {**config["train"], "seed": seed, "device": "cpu", "progress": False}
            for section, fields in changes.items():
                if section:
                    config[section] = {**(config.get(section) or {}), **fields}
                else:
                    config.update(fields)
            if name != "naco":  # the baseline has no pre-training nor its options
                config["method"] = {k: v for k, v in config["method"].items()
                                    if k in yaml.safe_load((RECIPES / f"{name}.yaml").read_text())["method"]}
            began = time.perf_counter()
            result = run_experiment(name, config)
            seconds = time.perf_counter() - began
            final = result["final"]
            for key, value in (("unseen", final["auc_unseen"]), ("seen", final["auc_seen"]),
                               ("pooled", final["auc_unseen_pooled"]), ("seconds", seconds),
                               ("per_kind", final["auc_per_kind"])):
                found[name][key].append(value)
            runs.append({"method": name, "seed": seed, "final": final, "seconds": round(seconds, 2)})
            print(f"{name:>12} seed {seed}: {result['summary']} ({seconds:.0f}s)", flush=True)
    reference = found.get(args.reference)
    kinds = list(found[args.methods[0]]["per_kind"][0])
    rows = []
    for name, values in found.items():
        diff = (lambda key: paired_interval(values[key], reference[key])) if reference and name != args.reference \
            else (lambda key: "-")
        per_kind = [mean_std([r[k] for r in values["per_kind"]]) for k in kinds]
        rows.append([name, mean_std(values["unseen"]), diff("unseen"), mean_std(values["seen"]), diff("seen"),
                     *per_kind, round(statistics.fmean(values["seconds"]), 1)])
    command = (f"python benchmarks/vision_naco.py --seeds {' '.join(map(str, args.seeds))} --methods "
               f"{' '.join(args.methods)} --reference {args.reference}" + (f" --set {' '.join(args.set)}" if args.set else ""))
    means = {name: {k: statistics.fmean(v) for k, v in values.items() if k != "per_kind"} for name, values in found.items()}
    report("vision_naco", command,
           ["method", "unseen AUC %", f"vs {args.reference}", "seen AUC %", f"vs {args.reference} ",
            *[f"{k} AUC %" for k in kinds], "seconds/run"], rows,
           {"means": means, "runs": runs, "total_seconds": round(time.perf_counter() - started_all, 1)}, args.out)


if __name__ == "__main__":
    main()

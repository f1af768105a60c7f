"""``curate vision METHOD --config recipes/vision/METHOD.yaml``: train one vision method. The methods,
their help and the choices come from the registry in :mod:`vision.registry` (names and one-line
descriptions; no torch until a method runs)."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from curate.cli import common_options
    from vision.registry import FAMILIES, METHODS

    families = "; ".join(f"{family}: {', '.join(n for n, e in METHODS.items() if e.family == family)}"
                         for family in FAMILIES)
    parser = subparsers.add_parser("vision", help=f"vision data-curation methods ({families})",
                                   description="Train a vision data-curation method. Families: "
                                               + "; ".join(f"{k} ({v.description})" for k, v in FAMILIES.items()) + ".")
    methods = parser.add_subparsers(dest="vision_method", metavar="METHOD", required=True)
    for name, entry in METHODS.items():
        method = methods.add_parser(name, parents=[common_options()], help=f"[{entry.family}] {entry.description}",
                                    description=f"{entry.description} (family: {FAMILIES[entry.family].description})")
        method.add_argument("--config", required=True, help="YAML: dataset, noise (or annotators; multilabel: mosaic, noise), train, method")
        method.add_argument("--out", help="result JSON (default: runs/vision/METHOD-DATASET.json)")
        method.add_argument("--epochs", type=int, help="override train.epochs")
        method.add_argument("--warmup-epochs", type=int, help="override train.warmup_epochs")
        method.add_argument("--device", help="override train.device (cpu, cuda, auto)")
        method.add_argument("--checkpoint-dir", help="per-epoch checkpoints; a rerun resumes from them")
        method.set_defaults(func=run_vision, out_kind="file", positive=("epochs",))


def run_vision(args: argparse.Namespace) -> int:
    from pathlib import Path

    from curate.core.io import atomic_write_json
    from vision.run import load_config, run_experiment

    overrides = {"epochs": args.epochs, "warmup_epochs": args.warmup_epochs, "device": args.device,
                 "checkpoint_dir": args.checkpoint_dir}
    config = load_config(args.config, args.vision_method,
                         {key: value for key, value in overrides.items() if value is not None})
    result = run_experiment(args.vision_method, config)
    out = Path(args.out or f"runs/vision/{args.vision_method}-{config.dataset}.json")
    atomic_write_json(out, result)
    final = result["final"]
    selection = final.get("selection")
    if "summary" in result:  # the family's one-line result
        print(f"{args.vision_method}: {result['summary']}")
        print(f"result: {out}")
        return 0
    if "annotators" in result:  # the crowds family
        crowd = result["annotators"]
        print(f"{args.vision_method} on {result['dataset']} ({crowd['annotators']} {crowd['regime']} annotators, "
              f"{crowd['labels_per_instance']:.2f} labels/instance, {100 * crowd['annotation_accuracy']:.1f}% right): "
              f"test accuracy {100 * final['test_accuracy']:.1f}%")
        print(f"result: {out}")
        return 0
    if "estimate" in result:  # the multilabel family
        noise, estimate = result["noise"], result["estimate"]
        print(f"{args.vision_method} on {result['dataset']} (rho- {noise['rho_minus']}, rho+ {noise['rho_plus']}): "
              f"T estimation error {estimate['error']:.3f} (identity {estimate['identity_error']:.3f}, "
              f"{len(estimate['fallback_classes'])} classes on the fallback); test mAP {100 * final['test_map']:.1f}%")
        print(f"result: {out}")
        return 0
    print(f"{args.vision_method} on {result['dataset']} ({result['noise']['kind']} noise, "
          f"{100 * result['noise']['actual_rate']:.1f}% flipped): test accuracy {100 * final['test_accuracy']:.1f}%"
          + (f"; selection precision {selection['precision']:.3f}, recall {selection['recall']:.3f} "
             f"({selection['selected']} samples)" if selection else ""))
    print(f"result: {out}")
    return 0

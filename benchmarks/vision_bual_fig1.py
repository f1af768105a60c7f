"""BUAL's integration check (paper Fig. 1; spec ``bual.md``): after RLNL, are the negative head's
predictions on unlabelled *unknown* images more confident than on unlabelled *known* ones? On
digits with 6 known and 4 unknown classes, per seed: the target model on the initial labelled set
(the family's round 0), then RLNL (a copy of its backbone, a new head, fresh complementary labels
every epoch, snapshots averaged) with the given settings; reported: the mean max-probability of the
averaged negative head over the unlabelled unknown and known images, and their difference.

    python benchmarks/vision_bual_fig1.py [--seeds 0 1 2] [--nl-epochs 100] [--every 5] [--subset 1200] [--lr 0.01] [--initial 0.03]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

from common import report

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import numpy as np
    import torch

    from vision import rng
    from vision.active.base import RoundState, Strategy
    from vision.active.bual import BUALConfig, negative_probabilities
    from vision.active.experiment import ActiveTrainConfig, round_seed
    from vision.active.pool import OpenSetConfig, open_set_pool
    from vision.data import load_images

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--nl-epochs", type=int, default=100)  # the paper's E
    parser.add_argument("--every", type=int, default=5)  # the paper's m
    parser.add_argument("--subset", type=int, default=1200)  # all of the unlabelled pool
    parser.add_argument("--lr", type=float, default=0.01)  # the code's
    parser.add_argument("--initial", type=float, default=0.03)
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    options = BUALConfig(nl_epochs=args.nl_epochs, snapshot_every=args.every, subset=args.subset, nl_lr=args.lr)
    rows, diffs = [], []
    for seed in args.seeds:
        started = time.perf_counter()
        pool = open_set_pool(load_images("digits", seed=seed), OpenSetConfig(seed=seed, initial=args.initial))
        labeled = pool.initial
        unlabeled = np.setdiff1d(np.arange(len(pool.classes)), labeled)
        round0 = round_seed(seed, 0)
        rng.seed_globals(round0)
        state = RoundState(0, pool.images, pool.num_known, labeled, pool.answers()[labeled], np.zeros(0, np.int64),
                           unlabeled, [], replace(ActiveTrainConfig(progress=False), seed=round0), round0)
        confidence = negative_probabilities(Strategy().train(state), state, options).max(1).values.numpy()
        known = pool.is_known(unlabeled)
        unknown_mean, known_mean = float(confidence[~known].mean()), float(confidence[known].mean())
        diffs.append(unknown_mean - known_mean)
        rows.append([seed, len(labeled), round(unknown_mean, 4), round(known_mean, 4), round(diffs[-1], 4),
                     round(time.perf_counter() - started, 1)])
    rows.append(["mean", "-", "-", "-", round(statistics.fmean(diffs), 4), "-"])
    command = (f"python benchmarks/vision_bual_fig1.py --seeds {' '.join(map(str, args.seeds))} --nl-epochs {args.nl_epochs} "
               f"--every {args.every} --subset {args.subset} --lr {args.lr} --initial {args.initial}")
    report("vision_bual_fig1", command, ["seed", "labelled", "mean max P- unknown", "mean max P- known",
                                         "unknown - known", "seconds"], rows,
           {"holds": all(d > 0 for d in diffs)}, args.out)


if __name__ == "__main__":
    main()

"""An open-set active-learning experiment from a config: dataset, the open-set split and budget
(``openset``), the target model's training settings (``train``), the strategy's options.

    dataset: digits
    openset: {known: 6, initial: 0.03, budget: 50, rounds: 5, seed: 0}
    train: {backbone: "convnet:32", epochs: 40, batch_size: 32, lr: 0.05, augment: false, seed: 0}
    method: {measure: entropy}

Each round trains the target model from scratch on the labelled known images (seeded by
``train.seed`` and the round), scores it on the known-class test images, then queries ``budget``
unlabelled images; the oracle answers with the known label or "unknown". Reported per round:
labelled count, test accuracy, query precision (share of known-class queries) and the queried
indices; overall: the area under the accuracy-vs-queries curve (normalised, in [0, 1]), mean
precision and the final accuracy. With ``train.checkpoint_dir`` the loop saves its state after
every round (atomically) and a rerun resumes to the identical result; the test hook
``CURATEKIT_KILL_AFTER_EPOCH=k`` SIGKILLs after the checkpoint of round k (1-based).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from vision.active.pool import OpenSetConfig
from vision.data import DataFields
from vision.train import TrainConfig


@dataclass
class ActiveTrainConfig(TrainConfig):
    """The target model's training settings (each round, from scratch): a narrow ConvNet, no
    augmentation (per-image crops were ~90% of a round's CPU time on 8x8 digits)."""
    backbone: str = "convnet:32"
    epochs: int = 40
    warmup_epochs: int = 0
    batch_size: int = 32
    lr: float = 0.05
    augment: bool = False


@dataclass
class ActiveExperimentConfig(DataFields):
    openset: OpenSetConfig = field(default_factory=OpenSetConfig)
    train: ActiveTrainConfig = field(default_factory=ActiveTrainConfig)
    method: dict[str, Any] = field(default_factory=dict)


CHECKPOINT_FORMAT = 1


def round_seed(seed: int, round: int) -> int:
    return int(np.random.SeedSequence([seed, round]).generate_state(1)[0] % (2**31))


def _checkpoint_path(method: Any, pool: Any, config: ActiveExperimentConfig) -> Path | None:
    from curate.core.cache import digest

    if not config.train.checkpoint_dir:
        return None
    settings = {k: v for k, v in asdict(config.train).items() if k not in ("checkpoint_dir", "progress", "device")}
    identity = [CHECKPOINT_FORMAT, method.name, method.identity(), pool.name, asdict(config.openset), settings,
                len(pool.classes), float(pool.images.sum())]
    key = digest(json.dumps(identity, sort_keys=True, default=str))
    return Path(config.train.checkpoint_dir) / f"active-{method.name}-{key}.pt"


def area_under_curve(spent: list[int], accuracy: list[float]) -> float:
    """Trapezoid area under accuracy against queries spent, over the spent range (in [0, 1])."""
    if len(spent) < 2 or spent[-1] == spent[0]:
        return float(accuracy[-1]) if accuracy else 0.0
    return float(np.trapezoid(accuracy, spent) / (spent[-1] - spent[0]))


def check_query(chosen: Any, unlabeled: np.ndarray, budget: int, name: str) -> np.ndarray:
    """The strategy's query as int64 indices: distinct, unlabelled, exactly min(budget, pool) many."""
    chosen = np.asarray(chosen, dtype=np.int64).reshape(-1)
    expected = min(budget, len(unlabeled))
    if len(chosen) != expected or len(np.unique(chosen)) != len(chosen) or not np.isin(chosen, unlabeled).all():
        raise RuntimeError(f"strategy '{name}' queried {len(chosen)} indices ({len(np.unique(chosen))} distinct, "
                           f"{int(np.isin(chosen, unlabeled).sum())} unlabelled); expected {expected} distinct unlabelled")
    return chosen


def run_active_experiment(method: Any, config: ActiveExperimentConfig) -> dict[str, Any]:
    """Rounds of train -> query -> label for the strategy ``method``; the result JSON."""
    import torch
    from tqdm.auto import tqdm

    from vision import rng
    from vision.active.base import RoundState
    from vision.active.pool import UNKNOWN, Oracle, open_set_pool
    from vision.data import load_images
    from vision.train import kill_hook, save_checkpoint

    data = load_images(config.dataset, root=config.root, seed=config.seed, image_size=config.image_size)
    pool = open_set_pool(data, config.openset)
    budget, rounds = config.openset.budget, config.openset.rounds
    labeled = pool.initial.copy()
    labels = pool.answers()[labeled]  # the initial labels (not queries)
    unknown = np.zeros(0, dtype=np.int64)
    history: list[dict[str, Any]] = []
    start = 0
    checkpoint = _checkpoint_path(method, pool, config)
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        labeled, labels, unknown, history, start = (state["labeled"], state["labels"], state["unknown"],
                                                    state["history"], state["round"] + 1)
    oracle = Oracle(pool.answers(), asked=np.concatenate([pool.initial, labeled, unknown]))
    oracle.calls = len(labeled) + len(unknown) - len(pool.initial)  # the queries of the rounds resumed from
    started_all = time.monotonic()
    for r in tqdm(range(start, rounds + 1), desc=f"{method.name} ({pool.name})", unit="round",
                  disable=not config.train.progress):
        started = time.monotonic()
        seed = round_seed(config.train.seed, r)
        rng.seed_globals(seed)
        unlabeled = np.setdiff1d(np.arange(len(pool.classes)), np.concatenate([labeled, unknown]))
        state = RoundState(r, pool.images, pool.num_known, labeled, labels, unknown, unlabeled,
                           [h["query_precision"] for h in history if "query_precision" in h],
                           replace(config.train, seed=seed), seed)
        target = method.train(state)
        predicted = target.predict(pool.test_images).argmax(1).cpu()
        entry: dict[str, Any] = {"round": r, "queries": r * budget, "labeled": len(labeled), "unknown": len(unknown),
                                 "test_accuracy": float((predicted == pool.test_labels).float().mean())}
        if r < rounds and len(unlabeled):
            chosen = check_query(method.query(state, target, budget), unlabeled, budget, method.name)
            answers = oracle.label(chosen)
            known = answers != UNKNOWN
            labeled = np.concatenate([labeled, chosen[known]])
            labels = np.concatenate([labels, answers[known]])
            unknown = np.concatenate([unknown, chosen[~known]])
            entry.update(query_precision=float(known.mean()), queried=chosen.tolist(), **method.round_metrics())
        entry["seconds"] = round(time.monotonic() - started, 3)
        history.append(entry)
        if checkpoint is not None:
            save_checkpoint(checkpoint, {"labeled": labeled, "labels": labels, "unknown": unknown,
                                         "history": history, "round": r})
            kill_hook(r + 1)
    accuracy = [h["test_accuracy"] for h in history]
    precision = [h["query_precision"] for h in history if "query_precision" in h]
    auc = area_under_curve([h["queries"] for h in history], accuracy)
    final = {"test_accuracy": accuracy[-1], "auc": auc, "mean_precision": float(np.mean(precision)) if precision else None,
             "labeled": int(len(labeled)), "unknown_queried": int(len(unknown))}
    return {"method": method.name, "dataset": pool.name, "config": asdict(config),
            "openness": pool.openness, "known_classes": pool.known_classes, "initial": int(len(pool.initial)),
            "oracle_calls": oracle.calls, "rounds": history, "final": final,
            "seconds": round(time.monotonic() - started_all, 3),
            "summary": (f"{method.name} on {pool.name} (openness {pool.openness:.1f}), {rounds} rounds of {budget}: "
                        f"final known-class accuracy {100 * accuracy[-1]:.1f}%, AUC {100 * auc:.1f}, "
                        f"query precision {100 * (final['mean_precision'] or 0):.1f}%")}

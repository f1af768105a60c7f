"""The PAT experiment (and the dependent baseline's, and InT's): confounded mosaics, training with
an EMA and per-epoch checkpoints (SIGKILL-safe resume), PAT-I scoring of a trained baseline, and the
i.i.d. and confounding metrics. The method's pieces are in :mod:`vision.multilabel.pat`."""
from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from curate.core.cache import digest
from curate.core.errors import BadInputError
from vision.multilabel.confounded import ConfoundedConfig
from vision.multilabel.pat import (PAT, BaselineConfig, DeTBaseline, LossFields, PATConfig, PATExperimentConfig,
                                   PatchHeads, criterion, multi_scores, pat_t_loss)
from vision.train import kill_hook, save_checkpoint

CHECKPOINT_FORMAT = 1


def checkpoint_path(config: PATExperimentConfig, method: Any, tag: str = "") -> Path | None:
    train = config.train
    if not train.checkpoint_dir:
        return None
    settings = {k: v for k, v in asdict(config).items() if k not in ("train", "method")}
    settings["train"] = {k: v for k, v in asdict(train).items() if k not in ("checkpoint_dir", "progress", "device")}
    key = digest(json.dumps([CHECKPOINT_FORMAT, method.name, asdict(method.config), settings],
                            sort_keys=True, default=str))
    return Path(train.checkpoint_dir) / f"{method.name}{tag}-{key}.pt"


def train_net(method: Any, config: PATExperimentConfig, x: torch.Tensor, y: np.ndarray, val_x: torch.Tensor,
              val_y: np.ndarray, classes: list[int] | None = None
              ) -> tuple[PatchHeads, list[dict[str, Any]], dict[str, Any]]:
    """Train the baseline (global head only: DeT, and PAT-I's model) or PAT-T; every epoch the
    student and the EMA are scored on the validation split (by the mode's own score) and the best
    (epoch, which) kept. ``classes``: the labels the loss and the validation read (InT: one);
    None: all. Returns the net with the best weights, the history and that choice."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from curate.core.device import resolve_device
    from vision import rng
    from vision.backbones import build_backbone
    from vision.multilabel.metrics import multilabel_scores

    options, train = method.config, config.train
    pat_t = isinstance(options, PATConfig) and options.mode == "train"
    device = resolve_device(train.device)
    rng.seed_globals(train.seed)
    backbone = build_backbone(train.backbone, x.shape[1], y.shape[1], x.shape[-1], train.seed)
    net = PatchHeads(backbone, y.shape[1], options.heads if pat_t else "none").to(device)
    ema = (AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)
           if config.ema_decay > 0 else None)
    optimizer = torch.optim.AdamW(net.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    steps = -(-len(x) // train.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=train.lr, epochs=train.epochs,
                                                    steps_per_epoch=steps, pct_start=0.2)
    generators = {"order": torch.Generator().manual_seed(train.seed),
                  "patches": torch.Generator().manual_seed(train.seed + 1)}
    augment = None
    if train.augment:
        from vision.augment import Augmenter

        augmenter = Augmenter(x.shape[-1], flip=train.flip, seed=train.seed)
        generators["augment"], augment = augmenter.generator, augmenter.weak
    use_amp = train.amp and device.type == "cuda"
    score_options = options if pat_t else BaselineConfig(**{f: getattr(options, f) for f in
                                                            ("loss", "gamma_neg", "gamma_pos", "clip", "threshold")})
    history, best, start = [], None, 0
    checkpoint = checkpoint_path(config, method, "" if classes is None else "-class" + "-".join(map(str, classes)))
    cols = list(range(y.shape[1])) if classes is None else list(classes)
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        net.load_state_dict(state["net"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        rng.restore(state["rng"], generators)
        history, best, start = state["history"], state["best"], state["epoch"] + 1
    targets = torch.as_tensor(y)
    for epoch in tqdm(range(start, train.epochs), desc=method.name, unit="epoch", disable=not train.progress):
        started = time.monotonic()
        net.train()
        total = 0.0
        for rows in torch.randperm(len(x), generator=generators["order"]).split(train.batch_size):
            xb, yb = x[rows].to(device), targets[rows].to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                if pat_t:
                    loss = pat_t_loss(net, xb, yb, options, generators["patches"], augment)
                else:
                    loss = criterion(net(augment(xb) if augment else xb)[:, cols], yb[:, cols], options)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(net)
            total += float(loss.detach())
        scored = {"student": net, **({"ema": ema.module} if ema is not None else {})}
        val_map, val_bce = {}, {}
        for which, model in scored.items():
            probs = multi_scores(model, val_x, score_options, train.seed + 2)["pat" if pat_t else "global"][:, cols]
            val_map[which] = multilabel_scores(val_y[:, cols], probs, 0.5)["map"]
            clipped = torch.as_tensor(probs).double().clamp(1e-7, 1 - 1e-7)
            val_bce[which] = float(nn.functional.binary_cross_entropy(clipped, torch.as_tensor(val_y[:, cols]).double()))
        which = max(val_map, key=val_map.get)
        if best is None or val_map[which] > best["val_map"]:
            best = {"epoch": epoch, "which": which, "val_map": val_map[which],
                    "state": copy.deepcopy(scored[which].state_dict())}
        history.append({"epoch": epoch, "loss": total / len(x), "val_map": val_map, "val_bce": val_bce,
                        "seconds": round(time.monotonic() - started, 3)})
        if checkpoint is not None:
            save_checkpoint(checkpoint, {"net": net.state_dict(), "ema": ema.state_dict() if ema is not None else None,
                                         "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                         "rng": rng.capture(generators), "history": history, "best": best,
                                         "epoch": epoch})
            kill_hook(epoch + 1)
    net.load_state_dict(best["state"])
    return net, history, {k: v for k, v in best.items() if k != "state"}


def metrics_of(probs: dict[str, np.ndarray], splits: dict[str, tuple[torch.Tensor, np.ndarray]],
               options: LossFields, mosaic: ConfoundedConfig, classes: list[int] | None = None) -> dict[str, Any]:
    """mAP, CF1, OF1 and per-class F1 on ``iid`` (over ``classes``; None: all), and the conditional
    TPR/FPR per pair (:func:`vision.multilabel.confounded.confounding_metrics`), of the
    probabilities per split."""
    from vision.multilabel.confounded import confounding_metrics
    from vision.multilabel.metrics import multilabel_scores

    targets = {name: s[1] for name, s in splits.items()}
    cols = slice(None) if classes is None else list(classes)
    return {**multilabel_scores(targets["iid"][:, cols], probs["iid"][:, cols], options.threshold),
            "confounding": confounding_metrics(targets, probs, mosaic, options.threshold)}


def run_pat_experiment(method: Any, config: PATExperimentConfig) -> dict[str, Any]:
    """Confounded mosaics, training (baseline, InT, PAT-I's baseline or PAT-T), the scores: the
    result JSON."""
    from vision.multilabel.confounded import confounded_mosaics

    if not isinstance(method, (PAT, DeTBaseline)):
        raise BadInputError(f"run_pat_experiment runs pat or det_baseline, got '{getattr(method, 'name', method)}'")
    options, train = method.config, config.train
    started = time.monotonic()
    splits = confounded_mosaics(config.mosaic, config.seed)
    x, y = splits.pop("train")
    order = np.random.default_rng([config.seed, 3]).permutation(len(x))
    held = int(round(config.val_fraction * len(x)))
    val, fit_rows = np.sort(order[:held]), np.sort(order[held:])
    seed = train.seed + 3  # the evaluation's patch order
    result: dict[str, Any] = {"method": method.name, "dataset": config.dataset, "config": asdict(train),
                              "options": asdict(options), "mosaic": asdict(config.mosaic), "ema_decay": config.ema_decay}
    if getattr(options, "independent", False):  # InT: one model per target class, its column only
        classes = list(config.mosaic.targets)
        probs = {name: np.zeros(s[1].shape, dtype=np.float32) for name, s in splits.items()}
        result["epochs"], result["chosen"] = {}, {}
        for t in classes:
            net, history, chosen = train_net(method, config, x[fit_rows], y[fit_rows], x[val], y[val], [t])
            for name, (images, _) in splits.items():
                probs[name][:, t] = multi_scores(net, images, options, seed)["global"][:, t]
            result["epochs"][str(t)], result["chosen"][str(t)] = history, chosen
        final, label = metrics_of(probs, splits, options, config.mosaic, classes), "InT (target classes only)"
        final["classes"] = classes
    else:
        net, result["epochs"], result["chosen"] = train_net(method, config, x[fit_rows], y[fit_rows], x[val], y[val])
        probs = {name: multi_scores(net, images, options, seed) for name, (images, _) in splits.items()}
        by_score = {score: metrics_of({n: p[score] for n, p in probs.items()}, splits, options, config.mosaic)
                    for score in probs["iid"]}
        if isinstance(options, PATConfig):
            final, label = by_score["pat"], ("PAT-T" if options.mode == "train" else "PAT-I")
            # PAT-I: the baseline it starts from; PAT-T: its global head alone (the ablation)
            result["global_only"] = by_score["global"]
        else:
            final, label = by_score["global"], "DeT baseline"
    result["final"] = final
    result["seconds"] = round(time.monotonic() - started, 1)
    fpr = ", ".join(f"FPR({t}|{m['context']} only) {100 * m['fpr_context_only']:.1f}%"
                    for t, m in final["confounding"].items())
    result["summary"] = (f"{label} on confounded mosaics: mAP {100 * final['map']:.1f}%, CF1 {100 * final['cf1']:.1f}%, "
                         f"OF1 {100 * final['of1']:.1f}%; {fpr}")
    return result

"""The D2L + MAT experiment (and its baselines'): mosaics, the labelled/unlabelled split, the
weak and strong views, warm-up, the main stage with per-epoch MAT or CAP thresholds, per-epoch
checkpoints (SIGKILL-safe resume) and the test metrics. The method's pieces (configs, heads,
thresholds, losses, the EMA teacher) are in :mod:`vision.multilabel.ssmll`."""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from curate.core.cache import digest
from curate.core.errors import BadInputError
from vision.augment import Augmenter
from vision.multilabel.metrics import multilabel_scores
from vision.multilabel.ssmll import (D2LMAT, FourHeads, LabelledOnlyConfig, SSMLLExperimentConfig, ema_of,
                                     main_loss, pseudo_thresholds, scores_of, student_loss)
from vision.train import kill_hook, save_checkpoint


@dataclass
class MosaicAugmenter(Augmenter):
    """weak: a random shift (reflect-padded crop); strong: weak + RandAugment + a square Cutout of
    ``cutout`` times the side (``RandomErasing``, noise fill; 0: none). No flips: digits."""

    cutout: float = 0.5

    def __post_init__(self) -> None:
        from torchvision.transforms import v2

        self.flip = False
        super().__post_init__()
        erase = ([v2.RandomErasing(p=1.0, scale=(self.cutout ** 2,) * 2, ratio=(1, 1), value="random")]
                 if self.cutout > 0 else [])
        self.strong_transform = v2.Compose([self.weak_transform, v2.RandAugment(), *erase])


def jittered(images: torch.Tensor, jitter: int, rng: np.random.Generator) -> torch.Tensor:
    """Each image at a random offset on a zero canvas ``jitter`` pixels wider and taller."""
    n, c, h, w = images.shape
    canvas = torch.zeros(n, c, h + jitter, w + jitter)
    offsets = rng.integers(0, jitter + 1, (n, 2))
    for i, (dy, dx) in enumerate(offsets):
        canvas[i, :, dy:dy + h, dx:dx + w] = images[i]
    return canvas


def semi_supervised_split(n: int, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(labelled rows, unlabelled rows): the first floor(share n) of a seeded permutation."""
    order = np.random.default_rng([seed, 23]).permutation(n)
    cut = max(1, int(math.floor(share * n)))
    if cut >= n:
        raise BadInputError(f"labelled: {share} of {n} mosaics leaves nothing unlabelled")
    return np.sort(order[:cut]), np.sort(order[cut:])


CHECKPOINT_FORMAT = 1


def checkpoint_path(config: SSMLLExperimentConfig, method: D2LMAT) -> Path | None:
    train = config.train
    if not train.checkpoint_dir:
        return None
    settings = {k: v for k, v in asdict(config).items() if k != "train"}
    settings["train"] = {k: v for k, v in asdict(train).items() if k not in ("checkpoint_dir", "progress", "device")}
    key = digest(json.dumps([CHECKPOINT_FORMAT, method.name, asdict(method.config), settings], sort_keys=True,
                            default=str))
    return Path(train.checkpoint_dir) / f"{method.name}-{key}.pt"


def evaluate(net: FourHeads, method: D2LMAT, patches: bool, data: dict[str, Any]) -> dict[str, Any]:
    """Test mAP/CF1/OF1 at the method's thresholds (fitted on this model's train scores) and at 0.5."""
    test = scores_of(net, data["test_x"], patches)
    options = method.config
    if isinstance(options, LabelledOnlyConfig):
        tau, empty = np.full(test.shape[1], options.threshold), []
    else:
        fit_x, fit_y = data["mat_x"], data["mat_y"]
        unlabelled = scores_of(net, data["unl_x"], patches) if options.thresholds == "cap" else None
        tau, empty = pseudo_thresholds(options, scores_of(net, fit_x, patches) if options.thresholds == "mat" else None,
                                       fit_y, unlabelled)
    at_tau, at_half = multilabel_scores(data["test_y"], test, tau), multilabel_scores(data["test_y"], test, 0.5)
    return {"map": at_tau["map"], "cf1": at_tau["cf1"], "of1": at_tau["of1"], "class_f1": at_tau["class_f1"],
            "cf1_at_0.5": at_half["cf1"], "of1_at_0.5": at_half["of1"], "thresholds": np.round(tau, 4).tolist(),
            "empty_classes": empty}


def run_ssmll_experiment(method: D2LMAT, config: SSMLLExperimentConfig) -> dict[str, Any]:
    """Mosaics, the labelled/unlabelled split, warm-up, the main stage: the result JSON."""
    from curate.core.device import resolve_device
    from vision import rng
    from vision.backbones import build_backbone
    from vision.multilabel.mosaics import digit_mosaics

    options, train = method.config, config.train
    config.check_with_method(options)
    baseline = isinstance(options, LabelledOnlyConfig)
    x, y, test_x, test_y = digit_mosaics(config.mosaic, config.seed)
    canvas = np.random.default_rng([config.mosaic.seed, 29])
    x, test_x = jittered(x, config.jitter, canvas), jittered(test_x, config.jitter, canvas)
    lab, unl = semi_supervised_split(len(x), config.labelled, config.seed)
    mat_rows = lab
    if not baseline and options.mat_holdout > 0:
        held = max(1, int(round(options.mat_holdout * len(lab))))
        if held >= len(lab):
            raise BadInputError(f"method.mat_holdout: {options.mat_holdout} holds out all {len(lab)} labelled mosaics")
        mat_rows, lab = lab[:held], lab[held:]
    y_t = torch.as_tensor(y, dtype=torch.float32)
    data = {"test_x": test_x, "test_y": test_y, "mat_x": x[mat_rows], "mat_y": y[mat_rows], "unl_x": x[unl]}
    patches = False if baseline else options.patches
    device = resolve_device(train.device)
    rng.seed_globals(train.seed)
    size = x.shape[-1]
    net = FourHeads(build_backbone(train.backbone, 1, y.shape[1], size, train.seed), y.shape[1],
                    1 if baseline else options.grid).to(device)
    augmenter = MosaicAugmenter(size, flip=False, seed=train.seed, cutout=0.0 if baseline else options.cutout)
    order = torch.Generator().manual_seed(train.seed)
    patch_order = torch.Generator().manual_seed(train.seed + 1)
    generators = {"order": order, "augment": augmenter.generator, "patches": patch_order}
    decay = 0.0 if baseline else options.ema_decay
    teacher = ema_of(net, decay)
    main_epochs = train.epochs - (train.epochs if baseline else train.warmup_epochs)
    warm_epochs = train.epochs - main_epochs
    warm_batch = train.batch_size  # the code: 16 for p <= 0.05
    steps_warm = -(-len(lab) // warm_batch) * options.warmup_passes
    steps_main = -(-len(unl) // (1 if baseline else options.unlabelled_batch))

    def optimiser(epochs: int, steps: int) -> tuple[torch.optim.Optimizer, Any]:
        opt = torch.optim.AdamW(net.parameters(), lr=train.lr, weight_decay=train.weight_decay)
        return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=train.lr, total_steps=max(epochs * steps, 2),
                                                        pct_start=0.2)

    opt, sched = optimiser(warm_epochs, steps_warm)
    history: list[dict[str, Any]] = []
    tau = None
    start = 0
    checkpoint = checkpoint_path(config, method)
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        if state["epoch"] + 1 > warm_epochs:  # resumed in the main stage
            opt, sched = optimiser(math.ceil(main_epochs / options.schedule_fraction), steps_main)
        net.load_state_dict(state["net"])
        teacher.load_state_dict(state["teacher"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        rng.restore(state["rng"], generators)
        history, start = state["history"], state["epoch"] + 1
    for epoch in range(start, train.epochs):
        started = time.monotonic()
        net.train()
        total = 0.0
        if epoch < warm_epochs:  # labelled only, fixed order (the code's warm-up loader does not shuffle)
            for rows in torch.as_tensor(lab).split(warm_batch) * options.warmup_passes:
                xb, yb = augmenter.weak(x[rows]).to(device), y_t[rows].to(device)
                if baseline:
                    loss = nn.functional.binary_cross_entropy_with_logits(net(xb, ("h1",), False)["h1"], yb)
                else:
                    loss = student_loss(net, options, xb, yb, generator=patch_order)
                total += _step(loss, opt, sched, teacher, net)
            stage, steps = "warmup", steps_warm
        else:
            if epoch == warm_epochs:  # the transfer, a fresh EMA and a fresh OneCycle
                net.transfer()
                teacher = ema_of(net, options.ema_decay)
                opt, sched = optimiser(math.ceil(main_epochs / options.schedule_fraction), steps_main)
            cap = options.thresholds == "cap"
            tau, _ = pseudo_thresholds(options, None if cap else scores_of(teacher.module, data["mat_x"], patches),
                                       data["mat_y"], scores_of(teacher.module, data["unl_x"], patches) if cap else None)
            tau_t = torch.as_tensor(tau, dtype=torch.float32, device=device)
            unl_rows = torch.as_tensor(unl)[torch.randperm(len(unl), generator=order)]
            need = steps_main * options.labelled_batch
            lab_rows = torch.as_tensor(lab)[torch.cat([torch.randperm(len(lab), generator=order)
                                                       for _ in range(-(-need // len(lab)))])]
            for step, rows in enumerate(unl_rows.split(options.unlabelled_batch)):
                lrows = lab_rows[step * options.labelled_batch:(step + 1) * options.labelled_batch]
                weak, strong = augmenter.views(x[rows])
                loss = main_loss(net, teacher.module, options, augmenter.strong(x[lrows]).to(device),
                                 y_t[lrows].to(device), weak.to(device), strong.to(device), tau_t, patch_order)
                total += _step(loss, opt, sched, teacher, net)
            stage, steps = "main", steps_main
        student, ema = evaluate(net, method, patches, data), evaluate(teacher.module, method, patches, data)
        record = {"epoch": epoch, "stage": stage, "loss": total / steps, "test_map": student["map"],
                  "ema_test_map": ema["map"], "seconds": round(time.monotonic() - started, 3)}
        if tau is not None:
            record["pseudo_thresholds"] = np.round(tau, 4).tolist()
        history.append(record)
        if checkpoint is not None:
            save_checkpoint(checkpoint, {"epoch": epoch, "net": net.state_dict(), "teacher": teacher.state_dict(),
                                         "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                         "rng": rng.capture(generators), "history": history})
            kill_hook(epoch + 1)
    student, ema = evaluate(net, method, patches, data), evaluate(teacher.module, method, patches, data)
    final = {"test_map": student["map"], "test_cf1": student["cf1"], "test_of1": student["of1"],
             "ema_test_map": ema["map"], "ema_test_cf1": ema["cf1"], "ema_test_of1": ema["of1"]}
    return {"method": method.name, "dataset": config.dataset, "config": asdict(train), "options": asdict(options),
            "split": {"labelled": len(lab), "unlabelled": len(unl), "threshold_fit": len(mat_rows), "test": len(test_x)},
            "student": student, "ema": ema, "epochs": history, "final": final,
            "summary": (f"{len(lab)} labelled + {len(unl)} unlabelled mosaics; test mAP {100 * final['test_map']:.1f}%, "
                        f"CF1 {100 * final['test_cf1']:.1f}%, OF1 {100 * final['test_of1']:.1f}% "
                        f"(EMA mAP {100 * final['ema_test_map']:.1f}%)")}


def _step(loss: torch.Tensor, opt: torch.optim.Optimizer, sched: Any, teacher: Any, net: nn.Module) -> float:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    teacher.update_parameters(net)
    return float(loss.detach())


"""Noisy multi-label transition-matrix estimation with label correlations, then Reweight
(Li et al., NeurIPS 2022; spec ``specs/multilabel_tm.md``).

1. Warm-up: BCE on the noisy multi-hot targets (Adam, grad-norm clip 10); the sigmoid outputs of
   every training sample are recorded after every epoch.
2. Per class j and noisy value z: BCE of the records at the ``window`` epochs ending at
   ``sample_epoch``, min-max normalised per epoch, averaged; a 2-component 1-D GaussianMixture;
   samples whose lower-mean component posterior exceeds ``tau`` form D_s^j (their noisy y_j is
   taken as clean).
3. Per auxiliary class i != j: E = P(noisy_j, noisy_i) on all samples, M = P(noisy_i | Y_j) on
   D_s^j, the bilinear solve of :mod:`vision.multilabel.transition`; aggregation: the paper's
   medoid (Eq. 7) by default, the code's least residual with ``aggregate: residual``.
4. Reweight from the warm-up epoch of lowest noisy-val BCE, fresh Adam; the epoch of best noisy-val
   mAP is kept (10% of the noisy train set held out).

The fallback, for a class with < ``min_selected`` selected positives or negatives or no valid
candidate, is Dual-T (:func:`vision.multilabel.transition.dual_t_rates`) as in the paper, for both
cases (the code keeps a zero T for the first); ``fallback: anchor`` uses the anchor-point estimate
(T-estimator, ``anchor_percentile``) instead. The result lists the classes that took it
(``fallback_classes``) and which one (``fallback``).

Deviations (stated): both fallbacks read the posteriors of the warm-up epoch of lowest noisy-val
BCE over all classes (the code: per class), on the training split; in Dual-T's counted T_spade a
y' value no sample takes keeps an identity row (the code: a zero row); posteriors are recorded on
un-augmented images; the code's known-zero-rho step (it reads the TRUE T) is an
explicit, off-by-default prior ``known_zero_rho: minus|plus``: that rate is set to 0 and every
sample of the noiseless side joins D_s^j. ``estimator``: ``ours`` (the method), ``gold`` (D_s^j = the samples whose noisy y_j is
right: the paper's unbiased-selection reference), ``anchor`` (the anchor-point estimate for every class),
``dualt`` (Dual-T for every class), ``identity`` (T = I: plain BCE, the baseline). Every result also
reports the errors of the identity guess and of Dual-T on the same warm-up (``identity_error``,
``dualt_error``).

From :class:`vision.train.TrainConfig` it uses backbone, epochs (warm-up + Reweight), warmup_epochs,
batch_size, lr and weight_decay (Adam), device, seed and checkpoint_dir (every epoch is checkpointed
atomically; a rerun resumes where the last run stopped, in either stage, with the same result);
momentum, flip and amp are unused, and augment is refused (no augmentation in this loop).
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from curate.core.cache import digest
from curate.core.errors import BadInputError
from vision.multilabel.mosaics import FlipConfig, MosaicConfig
from vision.multilabel import transition as tm
from vision.multilabel.metrics import multilabel_scores
from vision.train import TrainConfig, kill_hook, save_checkpoint

ESTIMATORS = ("ours", "gold", "anchor", "dualt", "identity")
FALLBACKS = ("dualt", "anchor")


@dataclass(frozen=True)
class MLTMConfig:
    estimator: str = "ours"
    aggregate: str = "medoid"  # the paper's Eq. 7; "residual": the authors' code
    known_zero_rho: str | None = None  # "minus"/"plus": a prior that this rate is 0 (the code reads it from the true T)
    sample_epoch: int = 10  # the paper's VOC value (warm-up 20): selection at the 5 epochs ending here
    window: int = 5
    tau: float = 0.5  # posterior of the small-loss component
    gmm_max_iter: int = 10
    gmm_tol: float = 1e-2
    reg_covar: float = 5e-4
    min_selected: int = 50  # selected positives and negatives a class needs, else the fallback
    fallback: str = "dualt"  # the paper's; "anchor": the T-estimator
    anchor_percentile: float = 97.0
    val_fraction: float = 0.1
    clip_norm: float = 10.0

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise BadInputError(f"estimator must be one of {', '.join(ESTIMATORS)}, got '{self.estimator}'")
        if self.aggregate not in ("medoid", "residual"):
            raise BadInputError(f"aggregate must be medoid or residual, got '{self.aggregate}'")
        if self.fallback not in FALLBACKS:
            raise BadInputError(f"fallback must be one of {', '.join(FALLBACKS)}, got '{self.fallback}'")
        if self.known_zero_rho not in (None, "minus", "plus"):
            raise BadInputError(f"known_zero_rho must be minus, plus or null, got '{self.known_zero_rho}'")
        if not 1 <= self.window <= self.sample_epoch:
            raise BadInputError(f"window must be in [1, sample_epoch], got {self.window}")
        if not 0 < self.tau < 1:
            raise BadInputError(f"tau must be in (0, 1), got {self.tau}")
        if not 0 < self.val_fraction < 0.5:
            raise BadInputError(f"val_fraction must be in (0, 0.5), got {self.val_fraction}")
        if not 50 <= self.anchor_percentile <= 100:
            raise BadInputError(f"anchor_percentile must be in [50, 100], got {self.anchor_percentile}")


@dataclass
class MultiLabelExperimentConfig:
    dataset: str = "digit_mosaics"
    seed: int = 0  # the digits train/test split
    mosaic: MosaicConfig = field(default_factory=MosaicConfig)
    noise: FlipConfig = field(default_factory=FlipConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    method: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dataset != "digit_mosaics":
            raise BadInputError(f"dataset must be digit_mosaics (multi-label family), got '{self.dataset}'")


class MLTM:
    name = "mltm"
    config_class = MLTMConfig

    def __init__(self, config: MLTMConfig | None = None):
        self.config = config or MLTMConfig()


def reweight_loss(logits: torch.Tensor, noisy: torch.Tensor, rates: torch.Tensor) -> torch.Tensor:
    """mean_ij beta_ij BCE(g_j(x_i), noisy_ij), beta = P(Y_j = noisy | x) / P(noisy_j = noisy | x)
    with P(noisy_j = 1 | x) = (1 - g) rho_minus + g (1 - rho_plus); ``rates`` (q, 2) =
    (rho_minus, rho_plus). beta is a constant (detached)."""
    g = torch.sigmoid(logits.detach().float())
    noisy_one = (1 - g) * rates[:, 0] + g * (1 - rates[:, 1])
    beta = torch.where(noisy == 1, g / noisy_one.clamp_min(1e-6), (1 - g) / (1 - noisy_one).clamp_min(1e-6))
    bce = nn.functional.binary_cross_entropy_with_logits(logits, noisy.float(), reduction="none")
    return (beta * bce).mean()


def small_loss_selection(history: np.ndarray, noisy: np.ndarray, config: MLTMConfig, seed: int = 0) -> np.ndarray:
    """Bool (n, q): D_s^j per class, from the recorded sigmoid outputs ``history`` (epochs, n, q)."""
    from sklearn.mixture import GaussianMixture

    window = history[config.sample_epoch - config.window:config.sample_epoch]
    selected = np.zeros(noisy.shape, dtype=bool)
    for j in range(noisy.shape[1]):
        for z in (0, 1):
            rows = np.flatnonzero(noisy[:, j] == z)
            if len(rows) < 2:
                continue
            g = np.clip(window[:, rows, j], 1e-7, 1 - 1e-7)
            loss = -np.log(g if z == 1 else 1 - g)  # (window, rows)
            span = loss.max(1, keepdims=True) - loss.min(1, keepdims=True)
            loss = ((loss - loss.min(1, keepdims=True)) / np.maximum(span, 1e-12)).mean(0)[:, None]
            gmm = GaussianMixture(2, max_iter=config.gmm_max_iter, tol=config.gmm_tol,
                                  reg_covar=config.reg_covar, random_state=seed).fit(loss)
            selected[rows, j] = gmm.predict_proba(loss)[:, gmm.means_.argmin()] > config.tau
    return selected


def fallback_method(config: MLTMConfig) -> str | None:
    """The estimate of the classes the selection cannot serve: ``config.fallback`` for ours and gold,
    the estimator itself for anchor and dualt (every class), None for identity."""
    if config.estimator in ("ours", "gold"):
        return config.fallback
    return None if config.estimator == "identity" else config.estimator


def baseline_rates(noisy: np.ndarray, posterior: np.ndarray, method: str, percentile: float) -> np.ndarray:
    """Rates (q, 2) of every class by ``anchor`` or ``dualt`` from the warm-up posteriors (n, q)."""
    if method == "anchor":
        return np.array([tm.anchor_rates(posterior[:, j], percentile) for j in range(noisy.shape[1])])
    return np.array([tm.dual_t_rates(posterior[:, j], noisy[:, j], percentile) for j in range(noisy.shape[1])])


def estimate(noisy: np.ndarray, selected: np.ndarray | None, posterior: np.ndarray, config: MLTMConfig
             ) -> tuple[np.ndarray, list[int]]:
    """Rates (q, 2) = (rho_minus, rho_plus) per class and the classes that took the fallback
    (:func:`fallback_method`); ``selected`` None: the fallback everywhere."""
    rates = baseline_rates(noisy, posterior, fallback_method(config), config.anchor_percentile)
    if selected is None:
        return rates, list(range(noisy.shape[1]))
    fallback = []
    for j in range(noisy.shape[1]):
        found, chosen = None, noisy[selected[:, j], j]
        if min(int(chosen.sum()), int(len(chosen) - chosen.sum())) >= config.min_selected:
            found, _ = tm.estimate_class(noisy, j, selected[:, j], config.aggregate)
        if found is None:
            fallback.append(j)
        else:
            rates[j] = found
    return rates, fallback


CHECKPOINT_FORMAT = 1


def checkpoint_path(config: "MultiLabelExperimentConfig", options: MLTMConfig) -> Path | None:
    """``train.checkpoint_dir``/mltm-<key>.pt, the key a digest of every setting that changes the run."""
    train = config.train
    if not train.checkpoint_dir:
        return None
    settings = {k: v for k, v in asdict(config).items() if k != "train"}
    settings["train"] = {k: v for k, v in asdict(train).items() if k not in ("checkpoint_dir", "progress", "device")}
    key = digest(json.dumps([CHECKPOINT_FORMAT, asdict(options), settings], sort_keys=True, default=str))
    return Path(train.checkpoint_dir) / f"mltm-{key}.pt"


def run_multilabel_experiment(method: MLTM, config: MultiLabelExperimentConfig) -> dict[str, Any]:
    """Mosaics, flips, warm-up, estimation, Reweight: the result JSON."""
    from curate.core.device import resolve_device
    from vision import rng
    from vision.backbones import build_backbone
    from vision.multilabel.mosaics import digit_mosaics, flip

    options, train = method.config, config.train
    if train.augment:  # not in this loop: refused rather than ignored
        raise BadInputError(f"train.augment: not supported by the multilabel family (got {train.augment!r})")
    if options.estimator != "identity" and options.sample_epoch > train.warmup_epochs:
        raise BadInputError(f"method.sample_epoch ({options.sample_epoch}) must not exceed train.warmup_epochs "
                            f"({train.warmup_epochs})")
    x, clean, test_x, test_y = digit_mosaics(config.mosaic, config.seed)
    noisy, true_t = flip(clean, config.noise)
    order = np.random.default_rng(config.seed + 1).permutation(len(x))
    held = int(round(options.val_fraction * len(x)))
    val, fit_rows = order[:held], order[held:]
    device = resolve_device(train.device)
    rng.seed_globals(train.seed)
    model = build_backbone(train.backbone, 1, clean.shape[1], 16, train.seed).to(device)
    generator = torch.Generator().manual_seed(train.seed)
    x_fit, y_fit = x[fit_rows], torch.as_tensor(noisy[fit_rows])

    def outputs(images: torch.Tensor) -> np.ndarray:
        model.eval()
        with torch.no_grad():
            out = torch.cat([model(images[s:s + 1024].to(device)).float().cpu() for s in range(0, len(images), 1024)])
        model.train()
        return out.numpy()

    checkpoint = checkpoint_path(config, options)
    saved = torch.load(checkpoint, map_location=device, weights_only=False) if checkpoint and checkpoint.exists() else None

    def run_epochs(epochs: int, rates: torch.Tensor, keep: str,
                   warmup: tuple | None = None) -> tuple[list[dict[str, Any]], dict, list[np.ndarray]]:
        """``epochs`` epochs of the ``keep`` stage, resumed from the checkpoint when it is of this
        stage; every epoch is checkpointed (``warmup``: the finished warm-up's outputs, kept in the
        Reweight stage's checkpoints)."""
        optimizer = torch.optim.Adam(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
        history, records, best, best_score, start = [], [], None, None, 0
        if saved is not None and saved["stage"] == keep:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            generator.set_state(saved["generator"])
            history, records, best, best_score = saved["history"], saved["records"], saved["best"], saved["best_score"]
            start = saved["epoch"] + 1
        for epoch in range(start, epochs):
            started = time.monotonic()
            for rows in torch.randperm(len(fit_rows), generator=generator).split(train.batch_size):
                loss = reweight_loss(model(x_fit[rows].to(device)), y_fit[rows].to(device), rates)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), options.clip_norm)
                optimizer.step()
            records.append(1 / (1 + np.exp(-outputs(x_fit))))
            val_logits = outputs(x[val])
            val_bce = float(nn.functional.binary_cross_entropy_with_logits(torch.as_tensor(val_logits),
                                                                           torch.as_tensor(noisy[val]).float()))
            scores = multilabel_scores(noisy[val], val_logits)
            history.append({"epoch": epoch, "stage": keep, "val_bce": val_bce, "val_map": scores["map"],
                            "seconds": round(time.monotonic() - started, 3)})
            score = -val_bce if keep == "warmup" else scores["map"]
            if best_score is None or score > best_score:
                best_score, best = score, {"epoch": epoch, "state": copy.deepcopy(model.state_dict())}
            if checkpoint is not None:
                save_checkpoint(checkpoint, {"stage": keep, "epoch": epoch, "model": model.state_dict(),
                                             "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
                                             "history": history, "records": records, "best": best,
                                             "best_score": best_score, "warmup": warmup})
                kill_hook(epoch + 1 + (train.warmup_epochs if keep == "reweight" else 0))
        return history, best, records

    identity = torch.zeros(clean.shape[1], 2, device=device)
    if saved is not None and saved["stage"] == "reweight":  # the warm-up finished before the crash
        history, best, records = saved["warmup"]
    else:
        history, best, records = run_epochs(train.warmup_epochs, identity, "warmup")
    posterior = records[best["epoch"]]
    selected = None
    if options.estimator == "ours":
        selected = small_loss_selection(np.stack(records), noisy[fit_rows], options, train.seed)
    elif options.estimator == "gold":
        selected = noisy[fit_rows] == clean[fit_rows]
    if selected is not None and options.known_zero_rho:  # the noiseless side's noisy labels are all right
        selected[noisy[fit_rows] == (1 if options.known_zero_rho == "minus" else 0)] = True
    if options.estimator == "identity":
        rates, fallback = np.zeros((clean.shape[1], 2)), []
    else:
        rates, fallback = estimate(noisy[fit_rows], selected, posterior, options)
        if options.known_zero_rho:
            rates[:, 0 if options.known_zero_rho == "minus" else 1] = 0.0
    estimated = np.stack([tm.transition(*r) for r in rates])
    dualt = baseline_rates(noisy[fit_rows], posterior, "dualt", options.anchor_percentile)  # the reference
    model.load_state_dict(best["state"])
    more, best2, _ = run_epochs(train.epochs - train.warmup_epochs,
                                torch.as_tensor(rates, dtype=torch.float32, device=device), "reweight",
                                (history, best, records))
    if best2 is not None:
        model.load_state_dict(best2["state"])
    final = multilabel_scores(test_y, outputs(test_x))
    picked = None
    if selected is not None:
        right = noisy[fit_rows] == clean[fit_rows]
        picked = {"per_class": selected.sum(0).tolist(),
                  "precision": float((selected & right).sum() / max(selected.sum(), 1))}
    return {"method": method.name, "dataset": config.dataset, "config": asdict(train), "options": asdict(options),
            "noise": {**asdict(config.noise), "actual_flip_rate": float((noisy != clean).mean()),
                      "true_transition": true_t[0].tolist()},
            "estimate": {"rates": rates.round(4).tolist(), "error": tm.estimation_error(true_t, estimated),
                         "identity_error": tm.estimation_error(true_t, np.stack([np.eye(2)] * len(true_t))),
                         "dualt_error": tm.estimation_error(true_t, np.stack([tm.transition(*r) for r in dualt])),
                         "fallback_classes": fallback, "fallback": fallback_method(options), "selection": picked},
            "epochs": history + [{**h, "epoch": h["epoch"] + train.warmup_epochs} for h in more],
            "final": {"test_map": final["map"], "test_cf1": final["cf1"], "test_of1": final["of1"]}}

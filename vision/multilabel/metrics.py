"""Multi-label metrics shared by the family: mAP (macro average precision, scikit-learn), per-class
F1, CF1 (from the macro precision and recall) and OF1 (overall), at a threshold on the scores that
may differ per class (a fixed 0 on logits / 0.5 on probabilities, or thresholds a method adapts)."""
from __future__ import annotations

import numpy as np


def multilabel_scores(targets: np.ndarray, scores: np.ndarray, threshold: float | np.ndarray = 0.0
                      ) -> dict[str, float | list[float]]:
    """``scores`` >= ``threshold`` (a scalar or one per class) is predicted positive; ``targets`` 0/1."""
    from sklearn.metrics import average_precision_score

    targets = np.asarray(targets).astype(bool)
    predicted = np.asarray(scores) >= np.asarray(threshold)
    hits = (predicted & targets).sum(0)
    precision = hits / np.maximum(predicted.sum(0), 1)
    recall = hits / np.maximum(targets.sum(0), 1)
    cp, cr = float(np.mean(precision)), float(np.mean(recall))
    op, or_ = hits.sum() / max(predicted.sum(), 1), hits.sum() / max(targets.sum(), 1)
    per_class = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return {"map": float(average_precision_score(targets, scores, average="macro")),
            "cf1": 2 * cp * cr / max(cp + cr, 1e-12), "of1": float(2 * op * or_ / max(op + or_, 1e-12)),
            "class_f1": per_class.round(6).tolist()}

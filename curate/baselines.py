"""Selection baselines shared by every method: random, and top-n by a score column."""
from __future__ import annotations

import math

import datasets
import numpy as np

from curate.core.errors import BadInputError


def count_for_ratio(total: int, ratio: float) -> int:
    """``floor(ratio * total)`` after checking ``ratio`` is in (0, 1]."""
    if not 0 < ratio <= 1:
        raise BadInputError(f"ratio must be in (0, 1], got {ratio}")
    return int(math.floor(ratio * total + 1e-9))


def select_random(ds: datasets.Dataset, n: int, seed: int = 0, eligible: np.ndarray | None = None
                  ) -> datasets.Dataset:
    """``n`` rows drawn uniformly without replacement (from the ``eligible`` ones), in dataset order."""
    pool = np.flatnonzero(eligible) if eligible is not None else np.arange(len(ds))
    if n > len(pool):
        raise BadInputError(f"cannot select {n} rows from {len(pool)} eligible rows")
    picked = np.random.default_rng(seed).choice(pool, size=n, replace=False)
    return ds.select(np.sort(picked))


def select_top(ds: datasets.Dataset, column: str, n: int, descending: bool = True,
               eligible: np.ndarray | None = None) -> datasets.Dataset:
    """The ``n`` rows with the largest (or smallest) ``column``; ties keep dataset order."""
    if column not in ds.column_names:
        raise BadInputError(f"column '{column}' not found; available columns: {', '.join(ds.column_names)}")
    values = np.asarray(ds[column], dtype=float)
    ok = ~np.isnan(values) if eligible is None else (eligible & ~np.isnan(values))
    pool = np.flatnonzero(ok)
    if n > len(pool):
        raise BadInputError(f"cannot select {n} rows: only {len(pool)} rows have a '{column}' score")
    keys = -values[pool] if descending else values[pool]
    picked = pool[np.argsort(keys, kind="stable")[:n]]
    return ds.select(np.sort(picked))

"""Label-skewed client partitions of a training split, and each client's majority classes.

- :func:`shard_partition`: the authors' sharding (FedNTD/FedLMD ``datasetter.sharding_partition``,
  rewritten): each class's indices are cut into ``shards_per_class = shards_per_client * K / C``
  whole class-shards (the remainder spread one index each over the first shards), a multiset of
  shard labels (every class ``shards_per_class`` times) is shuffled and dealt
  ``shards_per_client`` to each client, and each client takes a random remaining shard of each
  dealt label. Flower's ``ShardPartitioner`` is not used: it cuts equal shards from label-sorted
  data, which straddle classes when class counts differ (as in digits).
- :func:`dirichlet_partition`: per class, client shares ~ Dir(alpha), a client already holding
  N/K samples gets no more (the authors' ``lda_partition`` cap, Flower's ``self_balancing``);
  redrawn until every client holds ``min_samples``. ``flwr_datasets`` (Flower's
  ``DirichletPartitioner``) is not installed here, so this is our own seeded version of the same
  scheme.
- :func:`majority_classes`: M_k = {c : n_kc > mean over all C classes of n_kc'} (zeros included,
  strict), computed once from the partition, on the client.

Every draw comes from ``numpy.random.default_rng(seed)``, the partition's own seed (the authors
seed the split apart from training).
"""
from __future__ import annotations

import numpy as np

from curate.core.errors import BadInputError


def shard_partition(labels: np.ndarray, clients: int, shards_per_client: int, num_classes: int,
                    seed: int) -> list[np.ndarray]:
    """Indices of ``labels`` per client: whole class-shards, ``shards_per_client`` each."""
    labels = np.asarray(labels)
    total = shards_per_client * clients
    if total % num_classes:
        raise BadInputError(f"partition: shards_per_client * clients = {total} must be a multiple of the "
                            f"{num_classes} classes (whole class-shards)")
    per_class = total // num_classes
    rng = np.random.default_rng(seed)
    shards: dict[int, list[np.ndarray]] = {}
    for c in range(num_classes):
        index = np.flatnonzero(labels == c)
        if len(index) < per_class:
            raise BadInputError(f"partition: class {c} has {len(index)} samples, fewer than its {per_class} shards")
        shards[c] = [np.asarray(s) for s in np.array_split(index, per_class)]  # sizes differ by at most one
    deal = rng.permutation(np.repeat(np.arange(num_classes), per_class)).reshape(clients, shards_per_client)
    parts = []
    for dealt in deal:
        parts.append(np.sort(np.concatenate([shards[c].pop(int(rng.integers(len(shards[c])))) for c in dealt])))
    return parts


def dirichlet_partition(labels: np.ndarray, clients: int, alpha: float, num_classes: int, seed: int,
                        min_samples: int = 10, max_tries: int = 1000) -> list[np.ndarray]:
    """Indices of ``labels`` per client: per-class Dir(alpha) shares, clients capped at N/K."""
    labels = np.asarray(labels)
    n = len(labels)
    if min_samples * clients > n:
        raise BadInputError(f"partition: min_samples {min_samples} x {clients} clients exceeds the {n} training samples")
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        parts: list[list[int]] = [[] for _ in range(clients)]
        for c in range(num_classes):
            index = rng.permutation(np.flatnonzero(labels == c))
            share = rng.dirichlet(np.full(clients, alpha))
            share = share * np.array([len(p) < n / clients for p in parts])  # full clients take no more
            share = share / share.sum()
            cuts = (np.cumsum(share) * len(index)).astype(int)[:-1]
            for part, piece in zip(parts, np.split(index, cuts)):
                part.extend(piece.tolist())
        if min(len(p) for p in parts) >= min_samples:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise BadInputError(f"partition: no Dirichlet(alpha={alpha}) split gave every one of {clients} clients "
                        f"{min_samples} samples in {max_tries} draws; lower min_samples or raise alpha")


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)


def majority_classes(counts: np.ndarray) -> np.ndarray:
    """Bool mask over classes: n_c > mean of all C counts (zeros included; equal counts: none)."""
    counts = np.asarray(counts, dtype=np.float64)
    return counts > counts.mean()


def split_summary(parts: list[np.ndarray], labels: np.ndarray, num_classes: int) -> dict:
    """Sizes, classes present and majority classes per client (and their means)."""
    counts = np.stack([class_counts(labels[p], num_classes) for p in parts])
    majority = np.stack([majority_classes(c) for c in counts])
    sizes = counts.sum(1)
    return {"clients": len(parts), "sizes": {"min": int(sizes.min()), "mean": float(sizes.mean()), "max": int(sizes.max())},
            "classes_per_client": float((counts > 0).sum(1).mean()), "majority_per_client": float(majority.sum(1).mean()),
            "counts": counts.tolist(), "majority": [np.flatnonzero(m).tolist() for m in majority]}

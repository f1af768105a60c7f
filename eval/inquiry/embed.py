"""Text embedders for LaMAI's uncertainty (step 1) and semantic clusters (the EIG scorer).

An embedder maps texts to L2-normalised rows. Offline the default is a stateless hashing TF-IDF-like
bag of word uni- and bigrams (``HashingVectorizer``: nothing is fitted, so a text's vector never
depends on which other texts came with it); ``SentenceEmbedder`` wraps a sentence-transformers
model from a local folder (e.g. all-MiniLM-L6-v2) or a hub id online.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from curate.core.errors import BadInputError


class Embedder(Protocol):
    name: str

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class HashingEmbedder:
    """Word uni- and bigrams hashed into ``n_features`` columns, L2-normalised (an empty text is the
    zero row). Vectors are memoised per text (the loop embeds the same short answers many times)."""

    name = "hashing"

    def __init__(self, n_features: int = 2 ** 12) -> None:
        from sklearn.feature_extraction.text import HashingVectorizer

        self.vectorizer = HashingVectorizer(n_features=n_features, ngram_range=(1, 2), alternate_sign=False,
                                            norm="l2", token_pattern=r"(?u)\b\w+\b")
        self._memo: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        new = list(dict.fromkeys(t for t in texts if t not in self._memo))
        if new:
            if len(self._memo) > 100_000:
                self._memo.clear()
            self._memo.update(zip(new, self.vectorizer.transform(new).toarray()))
        if not texts:
            return np.zeros((0, self.vectorizer.n_features))
        return np.stack([self._memo[t] for t in texts])


class SentenceEmbedder:
    """A sentence-transformers model (local folder or hub id), rows L2-normalised."""

    name = "sentence-transformers"

    def __init__(self, model: str, device: str | None = None) -> None:
        from sentence_transformers import SentenceTransformer

        self.name = f"sentence-transformers:{model}"
        self.model = SentenceTransformer(model, device=device)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.model.encode(list(texts), normalize_embeddings=True, show_progress_bar=False))


def load_embedder(name: str) -> Embedder:
    """``hashing`` (offline default) or a sentence-transformers model folder / hub id."""
    if name == "hashing":
        return HashingEmbedder()
    try:
        return SentenceEmbedder(name)
    except (OSError, ValueError) as err:
        raise BadInputError(f"--embedder '{name}': not 'hashing' and not a sentence-transformers model ({err})") from None


def spread(embeddings: np.ndarray) -> float:
    """LaMAI's uncertainty u: the mean squared distance of the samples' embeddings to their mean,
    i.e. the trace of their (biased) covariance over samples; 0 for identical samples."""
    embeddings = np.asarray(embeddings, dtype=float)
    if embeddings.ndim != 2 or len(embeddings) == 0:
        raise ValueError(f"spread needs a (samples, dim) array with at least one row, got shape {embeddings.shape}")
    centred = embeddings - embeddings.mean(axis=0, keepdims=True)
    return float((centred ** 2).sum(axis=1).mean())


def semantic_classes(texts: Sequence[str], embedder: Embedder, threshold: float = 0.85) -> np.ndarray:
    """Cluster labels of ``texts``: average-linkage agglomerative clustering of their embeddings on
    cosine distance, merging while the mean cosine similarity is at least ``threshold``. Equal texts
    share a label (clustered once); an empty text has no direction and forms its own class."""
    from sklearn.cluster import AgglomerativeClustering

    unique, inverse = np.unique(np.asarray(list(texts), dtype=object).astype(str), return_inverse=True)
    if len(unique) <= 1:
        return np.zeros(len(inverse), dtype=int)
    vectors = embedder.embed(list(unique))
    empty = (np.linalg.norm(vectors, axis=1) == 0)[:, None].astype(float)
    labels = AgglomerativeClustering(n_clusters=None, metric="cosine", linkage="average",
                                     distance_threshold=1.0 - threshold).fit_predict(np.hstack([vectors, empty]))
    return labels[inverse.ravel()]

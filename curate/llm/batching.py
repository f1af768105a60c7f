"""Length-sorted, token-budget batches: similar lengths share a batch, so little is padding, and a
batch's padded size (rows x longest row) stays under a budget, so long rows come in small batches."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def token_budget_batches(lengths: Sequence[int], max_tokens: int, max_batch_size: int | None = None
                         ) -> list[list[int]]:
    """Indices of ``lengths`` grouped into batches, longest first, each with
    ``len(batch) * max(lengths in batch) <= max_tokens`` (a row longer than the budget goes alone)."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]  # sorted: the first is the longest
        full = max_batch_size is not None and len(current) >= max_batch_size
        if current and (full or (len(current) + 1) * longest > max_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def padded_targets(seqs: Sequence[Sequence[int]], starts: Sequence[int], pad_id: int, device: Any = "cpu"
                   ) -> tuple[Any, Any, Any, Any]:
    """Right-padded ``ids`` and attention ``mask`` of token sequences, and the (row, col) of every
    target token: positions ``starts[r]`` to the end of row r (what IFD and the GRPO gradients score)."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    rows: list[int] = []
    cols: list[int] = []
    for r, (seq, start) in enumerate(zip(seqs, starts)):
        ids[r, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[r, : len(seq)] = 1
        rows += [r] * (len(seq) - start)
        cols += range(start, len(seq))
    as_long = lambda values: torch.as_tensor(values, dtype=torch.long).to(device)  # noqa: E731
    return as_long(ids), as_long(mask), as_long(rows), as_long(cols)

"""Dynamic Pack (CodeACT, arXiv 2408.02193): sort a batch by length and concatenate its samples into
rows of at most ``max_length`` tokens, so a step carries little padding.

Unlike the public CodeACT code (one all-ones attention mask, positions running on across samples,
so a sample attends to the ones packed before it), every sample here restarts its ``position_ids``
at 0 and no attention mask is passed: transformers then derives a block-diagonal causal mask from
the position ids (sdpa/eager) or variable-length kernels (flash attention), and attention never
crosses samples. The first token of each sample gets label -100, so no sample is trained to
predict the next one's start. The loss of a packed batch therefore equals the loss of the same
samples unpacked (tested). The model must run without a KV cache (``use_cache=False``, as
SFTTrainer does): with one, transformers does not derive the packed-sequence mask.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


def _first_fit_decreasing(lengths: Sequence[int], order: list[int], max_length: int) -> list[list[int]]:
    rows: list[list[int]] = []
    room: list[int] = []
    for i in order:
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(max_length - lengths[i])
    return rows


def _balanced(lengths: Sequence[int], order: list[int], n_rows: int, max_length: int) -> list[list[int]] | None:
    """Longest first onto the emptiest row with room; None if some sample finds no room."""
    rows: list[list[int]] = [[] for _ in range(n_rows)]
    fill = [0] * n_rows
    for i in order:
        open_rows = [r for r in range(n_rows) if fill[r] + lengths[i] <= max_length or not rows[r]]
        if not open_rows:
            return None
        r = min(open_rows, key=lambda k: fill[k])
        rows[r].append(i)
        fill[r] += lengths[i]
    return rows


def _even_out(rows: list[list[int]], lengths: Sequence[int], max_length: int, rounds: int = 200) -> list[list[int]]:
    """Local search: move a sample out of the fullest row, or swap it for a shorter one, while that
    lowers the fullest row without making another row as full."""
    rows = [list(row) for row in rows]
    for _ in range(rounds):
        fills = [sum(lengths[i] for i in row) for row in rows]
        top = max(range(len(rows)), key=fills.__getitem__)
        move = next(((a, r, b) for a, i in enumerate(rows[top]) for r in range(len(rows)) if r != top
                     for b, j in enumerate(rows[r] + [None])
                     if 0 < (d := lengths[i] - (lengths[j] if j is not None else 0))
                     and fills[r] + d < fills[top] and fills[r] + d <= max_length), None)
        if move is None:
            break
        a, r, b = move
        sample = rows[top].pop(a)
        if b < len(rows[r]):
            rows[top].append(rows[r].pop(b))
        rows[r].append(sample)
    return rows


def pack_rows(lengths: Sequence[int], max_length: int, extra_rows: int = 3) -> list[list[int]]:
    """Indices grouped into rows summing to at most ``max_length`` tokens (a longer sample is a row
    of its own; the trainer truncates to max_length first). A batch is padded to its longest row, so
    of first-fit decreasing and balanced packings into as many rows or up to ``extra_rows`` more,
    each evened out by local search, the one with the fewest token slots (rows x longest row) wins."""
    order = sorted(range(len(lengths)), key=lambda k: -lengths[k])
    ffd = _first_fit_decreasing(lengths, order, max_length)
    counts = range(len(ffd), min(len(lengths), len(ffd) + extra_rows) + 1)
    candidates = [ffd] + [rows for n in counts if (rows := _balanced(lengths, order, n, max_length)) is not None]

    def slots(rows: list[list[int]]) -> int:
        return len(rows) * max(sum(lengths[i] for i in row) for row in rows) if rows else 0

    return min((_even_out(rows, lengths, max_length) for rows in candidates), key=slots)


@dataclass
class DynamicPackCollator:
    """Collates tokenized examples (``input_ids``, optional ``labels``) into packed rows with
    ``input_ids``, ``labels`` and per-sample ``position_ids`` (no attention mask), plus
    ``num_real_tokens`` for :class:`DynamicPackSFTTrainer`'s token count (not a model input)."""

    pad_token_id: int
    max_length: int

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids = [list(ex["input_ids"]) for ex in examples]
        labels = [list(ex.get("labels", ex["input_ids"])) for ex in examples]
        rows = pack_rows([len(x) for x in ids], self.max_length)
        width = max(sum(len(ids[i]) for i in row) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        out_labels = torch.full((len(rows), width), -100, dtype=torch.long)
        # Padding continues each row's positions as one more "sample": it sees only itself.
        position_ids = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            at = 0
            for i in row:
                n = len(ids[i])
                input_ids[r, at:at + n] = torch.tensor(ids[i])
                out_labels[r, at:at + n] = torch.tensor(labels[i])
                out_labels[r, at] = -100  # never predict a sample's first token from the previous sample
                position_ids[r, at:at + n] = torch.arange(n)
                at += n
            position_ids[r, at:] = torch.arange(width - at)
        return {"input_ids": input_ids, "labels": out_labels, "position_ids": position_ids,
                "num_real_tokens": torch.tensor(sum(len(x) for x in ids))}


def make_trainer_class():
    """``SFTTrainer`` that takes Dynamic Pack batches: it drops ``num_real_tokens`` before the model
    call and logs ``num_tokens`` as the real tokens seen (TRL would count a packed row's width, as a
    batch without an attention mask looks to it). Public API only: ``compute_loss``, the
    accelerator's ``gather_for_metrics`` and ``Trainer.log``, which a mixin placed after
    SFTTrainer in the method order overrides, so it sees the logs after TRL has filled them in."""
    from transformers import Trainer
    from trl import SFTTrainer

    class RealTokenCount(Trainer):
        real_tokens = 0

        def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
            if "num_tokens" in logs and self.real_tokens:
                logs["num_tokens"] = float(self.real_tokens)
            super().log(logs, *args, **kwargs)

    class DynamicPackSFTTrainer(SFTTrainer, RealTokenCount):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            real = inputs.pop("num_real_tokens", None)
            result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if real is not None and model.training:
                self.real_tokens += int(self.accelerator.gather_for_metrics(real.to(inputs["input_ids"].device)).sum())
            return result

    return DynamicPackSFTTrainer

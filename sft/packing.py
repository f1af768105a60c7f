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


def pack_rows(lengths: Sequence[int], max_length: int) -> list[list[int]]:
    """First-fit decreasing: indices grouped into rows whose lengths sum to at most ``max_length``
    (a sample longer than that is a row of its own; the trainer truncates to max_length first)."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda k: -lengths[k]):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(max_length - lengths[i])
    return rows


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
    call and counts real tokens (TRL counts one row's width when a batch has no attention mask)."""
    from trl import SFTTrainer

    class DynamicPackSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            real = inputs.pop("num_real_tokens", None)
            width = inputs["position_ids"].size(1) if "position_ids" in inputs else None
            result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if real is not None and width is not None and model.training:
                correction = self.accelerator.gather_for_metrics(real.to(inputs["input_ids"].device) - width)
                self._total_train_tokens += int(correction.sum().item()) // self._tp_size
                self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
            return result

    return DynamicPackSFTTrainer


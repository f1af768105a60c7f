"""Dynamic Pack: packed rows never let attention cross samples, so the loss of a packed batch equals
the loss of the same samples unpacked; CodeACT's all-ones-mask concatenation does not."""
from __future__ import annotations

import copy
import json
import random

import pytest
import torch

from sft.packing import DynamicPackCollator, _first_fit_decreasing, pack_rows


def test_pack_rows_fits_every_sample_once():
    rng = random.Random(0)
    lengths = [rng.randint(5, 300) for _ in range(200)]
    rows = pack_rows(lengths, 512)
    assert sorted(i for row in rows for i in row) == list(range(200))
    assert all(sum(lengths[i] for i in row) <= 512 for row in rows)
    assert len(rows) <= sum(lengths) / 512 * 1.1 + 1  # first-fit decreasing: close to the bound


def test_pack_rows_balances_rows_of_a_batch():
    """A batch pads to its longest row, so rows are balanced: for batches of 16 GSM8K-like lengths the
    token slots (rows x longest row) never exceed first-fit decreasing's, and padding drops overall."""
    rng = random.Random(1)
    padded, padded_ffd, real = 0, 0, 0
    for _ in range(50):
        lengths = [rng.randint(120, 420) for _ in range(16)]
        rows = pack_rows(lengths, 1024)
        ffd = _first_fit_decreasing(lengths, sorted(range(16), key=lambda k: -lengths[k]), 1024)
        fills = [sum(lengths[i] for i in row) for row in rows]
        assert max(fills) <= 1024 and sorted(i for row in rows for i in row) == list(range(16))
        slots = len(rows) * max(fills)
        assert slots <= len(ffd) * max(sum(lengths[i] for i in row) for row in ffd)
        padded, real = padded + slots, real + sum(lengths)
        padded_ffd += len(ffd) * max(sum(lengths[i] for i in row) for row in ffd)
    assert 1 - real / padded < 0.5 * (1 - real / padded_ffd)


@pytest.fixture(scope="module")
def examples(tiny_model, gsm8k_dir):
    """Tokenized prompt+answer samples with the prompt masked out of the labels, as SFTTrainer makes them."""
    _, tokenizer = tiny_model
    rows = [json.loads(line) for line in (gsm8k_dir / "train.jsonl").read_text().splitlines()[:12]]
    out = []
    for r in rows:
        prompt = tokenizer(f"Question: {r['question']}\nAnswer:", add_special_tokens=False).input_ids
        answer = tokenizer(" " + r["answer"], add_special_tokens=False).input_ids[:120]
        out.append({"input_ids": prompt + answer, "labels": [-100] * len(prompt) + answer})
    return out


def _loss(model, batch):
    # As in training (TRL passes use_cache=False): with a KV cache transformers skips packed-sequence masks.
    with torch.no_grad():
        return float(model(**batch, use_cache=False).loss)


def _context_sensitive(model):
    """A copy of the random tiny model with sharper attention and logits, so that what a token can
    attend to visibly moves the loss (the random model is near-uniform; the equality holds for any weights)."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight", "lm_head.weight", "embed_tokens.weight")):
                param.mul_(4.0)
    return model


def test_collator_restarts_positions_and_masks_boundaries(examples):
    batch = DynamicPackCollator(pad_token_id=0, max_length=512)(examples)
    assert batch.keys() == {"input_ids", "labels", "position_ids", "num_real_tokens"}
    assert batch["num_real_tokens"] == sum(len(ex["input_ids"]) for ex in examples)
    starts = (batch["position_ids"] == 0).sum()
    assert starts >= len(examples)  # one start per sample (plus one per padded row tail)
    assert torch.all(batch["labels"][batch["position_ids"] == 0] == -100)
    real = sum(len(ex["input_ids"]) for ex in examples)
    assert batch["input_ids"].shape[0] < len(examples) and batch["input_ids"].numel() >= real


def test_packed_loss_equals_unpacked_loss(tiny_model, examples):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    model, tokenizer = tiny_model
    assert model.config._attn_implementation == "sdpa"
    model = _context_sensitive(model)
    padded = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)(examples)
    packed = DynamicPackCollator(tokenizer.pad_token_id, max_length=512)(examples)
    packed.pop("num_real_tokens")
    assert packed["input_ids"].shape[0] < len(examples)  # several samples share rows
    unpacked_loss, packed_loss = _loss(model, padded), _loss(model, packed)
    assert abs(packed_loss - unpacked_loss) / unpacked_loss < 1e-4

    # CodeACT's public version: the same rows under an all-ones mask with positions running on.
    wrong = {"input_ids": packed["input_ids"], "labels": packed["labels"],
             "attention_mask": torch.ones_like(packed["input_ids"]),
             "position_ids": torch.arange(packed["input_ids"].shape[1]).expand_as(packed["input_ids"])}
    # The same check fails for it ...
    assert abs(_loss(model, wrong) - unpacked_loss) / unpacked_loss > 1e-4
    # ... and token by token the samples after the first in each row are clearly wrong.
    right_tokens, wrong_tokens = _token_nll(model, packed), _token_nll(model, wrong)
    assert (wrong_tokens - right_tokens).abs().max() > 0.05


def _token_nll(model, batch):
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits
    labels = batch["labels"][:, 1:]
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels, reduction="none")
    return nll[labels != -100]


def test_packed_loss_equals_unpacked_loss_when_nothing_is_masked(tiny_model, examples):
    """Samples whose labels are their whole input (no prompt masking): a packed sample's first token
    must not be trained as the next token of the sample before it. Kills a collator that keeps the
    example's label on each sample's first token (the fixture above masks every prompt, hiding it)."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    model, tokenizer = tiny_model
    model = _context_sensitive(model)
    unmasked = [{"input_ids": ex["input_ids"], "labels": list(ex["input_ids"])} for ex in examples]
    padded = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)(unmasked)
    packed = DynamicPackCollator(tokenizer.pad_token_id, max_length=512)(unmasked)
    packed.pop("num_real_tokens")
    assert packed["input_ids"].shape[0] < len(unmasked)
    starts = packed["position_ids"] == 0
    assert torch.all(packed["labels"][starts] == -100)
    assert int((packed["labels"] != -100).sum()) == sum(len(ex["input_ids"]) - 1 for ex in unmasked)
    assert abs(_loss(model, packed) - _loss(model, padded)) / _loss(model, padded) < 1e-4

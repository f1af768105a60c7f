"""Instruction-Following Difficulty (Li et al. 2024, "From Quantity to Quality"; used by CodeACT):

    IFD(Q, A) = PPL(A | Q) / PPL(A),    PPL(A | Q) = exp(-1/|A| sum_t log p(a_t | Q, a_<t)),
                                        PPL(A)     = exp(-1/|A| sum_t log p(a_t | a_<t)).

Both perplexities average over the same answer tokens: all of them when the tokenizer has a BOS
token (prepended to the answer-only sequence), else all but the first (which has no context in
the answer-only sequence). IFD < 1 means the instruction helps the model produce the answer.

The scorer is batched: the answer-only and the conditioned sequence of every sample go into one
pool, sorted by length and cut into token-budget batches; the LM head runs only on the hidden
states that predict answer tokens, a chunk of rows at a time, so full-vocabulary logits are never
materialised for whole sequences nor copied to fp32 at once. Prompts are cut from the left when a
sample does not fit ``max_length``, so the answer stays whole inside the window.
:func:`ifd_reference` is the plain way (batch size 1, two forwards per sample) for tests and
benchmarks.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from curate.llm.batching import padded_targets, token_budget_batches
from curate.llm.chat import PLAIN_TEMPLATE, check_template, render_pair
from curate.llm.models import target_logprobs
from curate.core.errors import BadInputError


@dataclass
class IFDConfig:
    """``chat`` and ``template`` render each sample as SFT trains on it (:func:`render_pair`): the
    chat template when the tokenizer has one, else the plain template; ``template="codeact"``
    with ``chat=False`` is CodeACT's own IFD format."""

    max_length: int = 1024  # window of the conditioned sequence, in tokens
    chat: bool | None = None  # None: the chat template when the tokenizer has one (as SFT does)
    template: str = PLAIN_TEMPLATE  # plain template ({prompt}) or a name: plain, codeact
    max_tokens_per_batch: int = 16384  # padded tokens per forward pass
    max_batch_size: int = 256
    logits_rows: int = 2048  # answer positions sent through the LM head at once

    def __post_init__(self) -> None:
        if self.max_length < 2:
            raise BadInputError(f"max_length must be at least 2, got {self.max_length}")
        self.template = check_template(self.template)
        if self.max_tokens_per_batch < self.max_length:
            raise BadInputError(f"max_tokens_per_batch ({self.max_tokens_per_batch}) must be at least "
                                f"max_length ({self.max_length})")


@dataclass
class Scored:
    """One sequence to score: token ids, and the first position whose token counts."""

    ids: list[int]
    start: int


@dataclass
class IFDResult:
    ppl_answer: list[float]  # NaN for skipped rows
    ppl_conditioned: list[float]
    ifd: list[float]
    skip_reason: list[str]  # '' for scored rows


def encode_pairs(prompts: Sequence[str], answers: Sequence[str], tokenizer, config: IFDConfig
                 ) -> tuple[list[tuple[Scored, Scored] | None], list[str]]:
    """The (answer-only, conditioned) sequences of every sample, or None with a reason to skip it."""
    if len(prompts) != len(answers):
        raise BadInputError(f"{len(prompts)} prompts but {len(answers)} answers")
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    first = 0 if bos else 1  # the first answer token counts only when BOS gives it a context
    pairs: list[tuple[Scored, Scored] | None] = []
    reasons: list[str] = []
    for prompt, answer in zip(prompts, answers):
        if not isinstance(prompt, str) or not prompt.strip():
            pairs.append(None), reasons.append("empty prompt")
            continue
        if not isinstance(answer, str) or not answer.strip():
            pairs.append(None), reasons.append("empty answer")
            continue
        prompt_text, completion = render_pair(tokenizer, prompt, answer, chat=config.chat, template=config.template)
        answer_ids = tokenizer(completion, add_special_tokens=False).input_ids
        if len(answer_ids) - first < 1:
            pairs.append(None), reasons.append("answer has too few tokens to score")
            continue
        if len(bos) + len(answer_ids) > config.max_length - 1:  # at least one prompt token must fit
            pairs.append(None), reasons.append(f"answer longer than max_length ({len(answer_ids)} tokens)")
            continue
        prompt_ids = bos + tokenizer(prompt_text, add_special_tokens=False).input_ids
        room = config.max_length - len(answer_ids)
        if len(prompt_ids) > room:  # keep the end of the prompt, next to the answer
            prompt_ids = bos + prompt_ids[len(prompt_ids) - room + len(bos):]
        alone = Scored(bos + answer_ids, len(bos) + first)
        conditioned = Scored(prompt_ids + answer_ids, len(prompt_ids) + first)
        pairs.append((alone, conditioned))
        reasons.append("")
    return pairs, reasons


def _result(pairs: list[tuple[Scored, Scored] | None], reasons: list[str], nll: list[float]) -> IFDResult:
    """Assemble per-row perplexities from the mean NLLs of the flattened (alone, conditioned) list."""
    ppl_a, ppl_c, ifd = [], [], []
    it = iter(nll)
    for pair in pairs:
        if pair is None:
            ppl_a.append(math.nan), ppl_c.append(math.nan), ifd.append(math.nan)
            continue
        alone, conditioned = math.exp(next(it)), math.exp(next(it))
        ppl_a.append(alone), ppl_c.append(conditioned), ifd.append(conditioned / alone)
    return IFDResult(ppl_a, ppl_c, ifd, reasons)


def _flatten(pairs: list[tuple[Scored, Scored] | None]) -> list[Scored]:
    return [seq for pair in pairs if pair is not None for seq in pair]


@torch.inference_mode()
def mean_nll(model, sequences: Sequence[Scored], config: IFDConfig, pad_id: int, progress: bool = False
             ) -> list[float]:
    """Mean negative log-likelihood of ``ids[start:]`` for every sequence, in token-budget batches."""
    device = next(model.parameters()).device
    lengths = [len(s.ids) for s in sequences]
    out = [math.nan] * len(sequences)
    batches = token_budget_batches(lengths, config.max_tokens_per_batch, config.max_batch_size)
    for batch in tqdm(batches, desc="IFD forward passes", unit="batch", disable=not progress):
        ids, mask, rows_t, cols_t = padded_targets([sequences[i].ids for i in batch],
                                                   [sequences[i].start for i in batch], pad_id, device)
        nll = -target_logprobs(model, ids, mask, rows_t, cols_t, config.logits_rows)
        sums = torch.zeros(len(batch), dtype=torch.float64, device=device).index_add_(0, rows_t, nll.double())
        counts = torch.bincount(rows_t, minlength=len(batch))
        for r, i in enumerate(batch):
            out[i] = float(sums[r] / counts[r])
    return out


def ifd_scores(prompts: Sequence[str], answers: Sequence[str], model, tokenizer,
               config: IFDConfig | None = None, progress: bool = True) -> IFDResult:
    """Batched IFD of every (prompt, answer) pair (see the module docstring)."""
    config = config or IFDConfig()
    pairs, reasons = encode_pairs(prompts, answers, tokenizer, config)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return _result(pairs, reasons, mean_nll(model, _flatten(pairs), config, pad, progress))


@torch.inference_mode()
def ifd_reference(prompts: Sequence[str], answers: Sequence[str], model, tokenizer,
                  config: IFDConfig | None = None, progress: bool = True) -> IFDResult:
    """The plain way: one sample at a time, two forward passes each, loss from the model itself."""
    config = config or IFDConfig()
    pairs, reasons = encode_pairs(prompts, answers, tokenizer, config)
    device = next(model.parameters()).device
    nll = []
    for seq in tqdm(_flatten(pairs), desc="IFD (reference loop)", disable=not progress):
        ids = torch.tensor([seq.ids], device=device)
        labels = ids.clone()
        labels[0, : seq.start] = -100
        nll.append(float(model(input_ids=ids, labels=labels).loss))
    return _result(pairs, reasons, nll)

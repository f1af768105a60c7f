"""Tiny-model factory: a small Qwen2-architecture causal LM and a BPE tokenizer trained on the fly.

Nothing comes from the Hub: the tokenizer is trained with ``tokenizers`` on the texts you give,
the model is initialised from a config, and both are written with ``save_pretrained`` so that
the ordinary ``from_pretrained`` loading code (transformers, TRL, vLLM) runs on them. Used by the
test suite and by the offline demo.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from curate.core.errors import BadInputError
from curate.core.io import atomic_dir, atomic_write_json

if TYPE_CHECKING:  # torch and transformers load when a model is built, not when the CLI starts
    from transformers import PreTrainedTokenizerFast, Qwen2ForCausalLM

# Qwen2.5-Instruct's special tokens: <|endoftext|> pads, <|im_end|> ends an assistant turn.
PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass
class TinyModelConfig:
    """Shape of the tiny model. ``hidden_size / num_heads`` is the head dim; vLLM's CPU build needs 64."""

    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    num_kv_heads: int = 1
    intermediate_size: int = 384
    vocab_size: int = 1024
    max_position_embeddings: int = 2048
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size",
                     "vocab_size", "max_position_embeddings"):
            if getattr(self, name) <= 0:
                raise BadInputError(f"{name} must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise BadInputError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})"
            )
        if self.num_heads % self.num_kv_heads:
            raise BadInputError(
                f"num_heads ({self.num_heads}) must be divisible by num_kv_heads ({self.num_kv_heads})"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024, chat_template: bool = True) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer (every string encodes) with ChatML special tokens (and the
    ChatML chat template unless ``chat_template=False``: plain prompts everywhere)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token=IM_END, pad_token=PAD, unk_token=None,
        model_max_length=2048, clean_up_tokenization_spaces=False,
    )
    if chat_template:
        wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def build_tiny_model(
    out_dir: str | os.PathLike,
    texts: Iterable[str],
    config: TinyModelConfig | None = None,
    chat_template: bool = True,
) -> Path:
    """Train a tokenizer on ``texts``, initialise a Qwen2 model, save both to ``out_dir``.

    The folder is written atomically and also holds ``tiny_config.json`` (the config used).
    Returns ``out_dir``.
    """
    config = config or TinyModelConfig()
    texts = list(texts)
    if not texts:
        raise BadInputError("texts is empty: the tokenizer needs some text to train on")
    tokenizer = train_tokenizer(texts, vocab_size=config.vocab_size, chat_template=chat_template)
    model = init_model(config, tokenizer)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "tiny_config.json", asdict(config))
    return out_dir


def init_model(config: TinyModelConfig, tokenizer: PreTrainedTokenizerFast) -> Qwen2ForCausalLM:
    """A randomly initialised (seeded) Qwen2 causal LM sized for ``tokenizer``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    qwen_config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(config.seed)
    model = Qwen2ForCausalLM(qwen_config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model

"""Model and tokenizer loading (with the checks a user needs), shared by eval/, sft/, rl/ and the
selectors, and the memory-lean target log-probabilities that IFD and the gradient features use."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from curate.core.device import resolve_device, resolve_dtype
from curate.core.errors import BadInputError, first_line

# A local model folder holds one of these configs and weights with one of these suffixes.
MODEL_CONFIGS = ("config.json", "adapter_config.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


def check_model_path(name_or_path: str | os.PathLike, flag: str = "--model") -> None:
    """Fail fast, before any data is read, unless a local ``name_or_path`` is a model folder (a
    readable config with a model type, and weights). A name that is not a local path is taken as
    a hub id and left to the loader."""
    from curate.llm.data import looks_like_path

    path = Path(name_or_path).expanduser()
    if not path.exists():
        # 'runs/tiny' is meant as a path when ./runs exists; 'Qwen/Qwen2.5-1.5B' is a hub id
        if looks_like_path(str(name_or_path)) or (path.parent != Path(".") and path.parent.is_dir()):
            raise BadInputError(f"{flag} {name_or_path}: no such model folder")
        return
    if not path.is_dir():
        raise BadInputError(f"{flag} {path}: not a model folder (a file; give the folder holding config.json)")
    config = next((path / name for name in MODEL_CONFIGS if (path / name).is_file()), None)
    if config is None:
        raise BadInputError(f"{flag} {path}: not a model folder (no config.json)")
    try:
        fields = json.loads(config.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise BadInputError(f"{flag} {path}: unreadable {config.name}: {first_line(err)}") from err
    if not isinstance(fields, dict) or (config.name == "config.json" and "model_type" not in fields):
        raise BadInputError(f"{flag} {path}: {config.name} names no model_type; not a model folder")
    if not any(p.name.endswith(WEIGHT_SUFFIXES) for p in path.iterdir()):
        raise BadInputError(f"{flag} {path}: no weights ({', '.join('*' + s for s in WEIGHT_SUFFIXES)})")


def load_tokenizer(
    name_or_path: str | os.PathLike, *, padding_side: str = "left", **kwargs: Any
) -> PreTrainedTokenizerBase:
    """Load a tokenizer with a pad token (the EOS token when it has none) and left padding.

    Left padding is what batched generation needs; pass ``padding_side="right"`` for training.
    """
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), **kwargs)
    except Exception as err:  # noqa: BLE001 - OSError, ValueError, hub errors
        raise BadInputError(f"cannot load tokenizer from '{name_or_path}': {first_line(err)}") from err
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise BadInputError(f"tokenizer '{name_or_path}' has no pad, eos or unk token to pad with")
        tokenizer.pad_token = fallback
    tokenizer.padding_side = padding_side
    return tokenizer


def load_model(
    name_or_path: str | os.PathLike,
    *,
    dtype: str | torch.dtype | None = "auto",
    device: str | torch.device | None = "auto",
    attn_implementation: str | None = None,
    **kwargs: Any,
) -> PreTrainedModel:
    """Load a causal LM in eval mode on ``device`` with ``dtype`` (``sdpa`` attention by default).
    ``dtype``: a name (float32, bf16, ...), a torch dtype, ``auto`` (bf16 on a GPU that supports it,
    else fp32) or None (the checkpoint's own). ``device`` None: left where it loads (a trainer
    places it). A model that cannot be loaded is one :class:`BadInputError` line."""
    target = None if device is None else resolve_device(device)
    torch_dtype = "auto" if dtype is None else resolve_dtype(dtype, target)  # transformers' "auto": as saved
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(name_or_path), dtype=torch_dtype, attn_implementation=attn_implementation or "sdpa", **kwargs
        )
    except Exception as err:  # noqa: BLE001
        raise BadInputError(f"cannot load model from '{name_or_path}': {first_line(err)}") from err
    return (model if target is None else model.to(target)).eval()


def training_model(model_args: Any, name_or_path: str | os.PathLike | None = None) -> PreTrainedModel:
    """The model a TRL trainer trains (and places): ``model_args`` is TRL's ``ModelConfig`` (its
    ``dtype`` None or ``auto``: the checkpoint's own; its attention implementation); ``name_or_path``
    replaces its model (e.g. a reference model)."""
    dtype = None if model_args.dtype in (None, "auto") else model_args.dtype
    return load_model(name_or_path or model_args.model_name_or_path, dtype=dtype, device=None,
                      attn_implementation=model_args.attn_implementation)


def load_model_and_tokenizer(
    name_or_path: str | os.PathLike, *, padding_side: str = "left", **model_kwargs: Any
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Both at once; the model's generation config learns the tokenizer's pad token."""
    tokenizer = load_tokenizer(name_or_path, padding_side=padding_side)
    model = load_model(name_or_path, **model_kwargs)
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def target_logprobs(model, ids: torch.Tensor, attention_mask: torch.Tensor, rows: torch.Tensor,
                    cols: torch.Tensor, chunk_rows: int = 2048) -> torch.Tensor:
    """log p(ids[r, c] | ids[r, :c]) for each (r, c) in (rows, cols), in fp32, without the full
    (batch x length x vocabulary) logits: the decoder runs once and the output head only on the
    states that predict the targets, ``chunk_rows`` at a time. Differentiable (call under
    ``torch.no_grad()`` when no gradient is wanted). Use right padding (causal masks keep it exact)."""
    hidden = model.get_decoder()(input_ids=ids, attention_mask=attention_mask).last_hidden_state
    head = model.get_output_embeddings()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    states, targets = hidden[rows, cols - 1], ids[rows, cols]  # the state before a token predicts it
    parts = []
    for c in range(0, len(rows), chunk_rows):
        logits = head(states[c:c + chunk_rows])
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        logits = logits.float()  # only this chunk's rows in fp32
        picked = logits.gather(1, targets[c:c + chunk_rows, None]).squeeze(1)
        parts.append(picked - torch.logsumexp(logits, dim=-1))
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)

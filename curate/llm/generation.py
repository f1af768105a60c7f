"""Text generation behind one interface, used by evaluation, LearnAlign rollouts and the demo.

``generator.generate(prompts, n=..., temperature=..., top_p=..., max_new_tokens=..., stop=...,
seed=...)`` returns, for each prompt, ``n`` :class:`Completion` s (text and generated token count).

Backends:

- ``hf``: batched ``transformers`` generation: left padding, KV cache, length-sorted batches,
  ``num_return_sequences=n``; on CUDA out-of-memory the batch size halves and the batch is retried.
- ``vllm``: ``vllm.LLM`` with ``SamplingParams(n, seed, stop, ...)`` (CPU and CUDA builds alike), a
  seed per prompt derived from the call's ``seed``.
- ``auto``: vLLM when it is importable and a GPU is present, else ``hf``.
"""
from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from curate.core.cache import derive_seed
from curate.core.errors import BadInputError

BACKENDS = ("auto", "hf", "vllm")


@dataclass(frozen=True)
class Completion:
    """One sampled continuation: its text (cut before any stop string) and how many tokens it took."""

    text: str
    num_tokens: int
    finish_reason: str = "length"  # "stop" (EOS or a stop string) or "length" (max_new_tokens)


@dataclass
class SamplingConfig:
    """How to sample. ``temperature == 0`` is greedy decoding (then every one of the n is the same)."""

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int = 0
    ignore_eos: bool = False  # always generate max_new_tokens (benchmarks, length-controlled runs)

    def __post_init__(self) -> None:
        if self.n < 1:
            raise BadInputError(f"n must be at least 1, got {self.n}")
        if self.temperature < 0:
            raise BadInputError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise BadInputError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise BadInputError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        self.stop = tuple(s for s in self.stop if s)


class Generator(Protocol):
    name: str

    def generate(self, prompts: Sequence[str], **sampling: Any) -> list[list[Completion]]: ...


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the earliest stop string (excluded), and whether one was found."""
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


class HFGenerator:
    """Batched generation with a ``transformers`` model (see the module docstring)."""

    name = "hf"

    def __init__(self, model, tokenizer, batch_size: int = 32, progress: bool = True) -> None:
        if batch_size < 1:
            raise BadInputError(f"batch_size must be at least 1, got {batch_size}")
        self.model, self.tokenizer = model, tokenizer
        self.batch_size = batch_size
        self.progress = progress
        tokenizer.padding_side = "left"  # generation continues every row from its last token

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *, dtype: str = "auto",
                        device: str = "auto", batch_size: int = 32, progress: bool = True) -> HFGenerator:
        from curate.llm.models import load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(name_or_path, dtype=dtype, device=device)
        return cls(model, tokenizer, batch_size=batch_size, progress=progress)

    def generate(self, prompts: Sequence[str], **sampling: Any) -> list[list[Completion]]:
        config = SamplingConfig(**sampling)
        encoded = [self.tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
        # Longest first: similar lengths share a batch (little padding), and an OOM shows up early.
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        # transformers samples from the global RNG: seed it for this call only (the caller's state
        # comes back afterwards), so a call's samples depend on its seed and prompts alone.
        devices = [self.model.device] if self.model.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(config.seed)
            return self._generate_sorted(encoded, order, config)

    def _generate_sorted(self, encoded: list[list[int]], order: list[int], config: SamplingConfig
                         ) -> list[list[Completion]]:
        results: list[list[Completion] | None] = [None] * len(encoded)
        # Per batch, inside a caller's per-chunk bar (which moves only when a chunk is done).
        bar = tqdm(total=len(encoded), desc="  batches (hf)", unit="prompt", disable=not self.progress, leave=False)
        start = 0
        while start < len(order):
            batch = order[start:start + self.batch_size]
            try:
                outputs = self._generate_batch([encoded[i] for i in batch], config)
            except (torch.cuda.OutOfMemoryError, RuntimeError) as err:
                from accelerate.utils.memory import should_reduce_batch_size  # CUDA, MPS, XPU or CPU OOM

                if not should_reduce_batch_size(err) or self.batch_size == 1:
                    raise
                self.batch_size = len(batch) // 2  # halve what actually failed
                torch.cuda.empty_cache()
                bar.set_postfix(batch_size=self.batch_size)
                continue
            for i, completions in zip(batch, outputs):
                results[i] = completions
            start += len(batch)
            bar.update(len(batch))
        bar.close()
        return results  # type: ignore[return-value]

    @torch.inference_mode()
    def _generate_batch(self, ids: list[list[int]], config: SamplingConfig) -> list[list[Completion]]:
        tokenizer, model = self.tokenizer, self.model
        inputs = tokenizer.pad({"input_ids": ids}, return_tensors="pt").to(model.device)
        # Finished rows are filled with EOS (not the pad token, which a model may also generate),
        # so the first EOS in a row marks its end whether EOS or a stop string ended it.
        eos = _eos_ids(model, tokenizer)
        sample = config.temperature > 0
        kwargs: dict[str, Any] = dict(
            max_new_tokens=config.max_new_tokens, do_sample=sample, use_cache=True,
            num_return_sequences=config.n, pad_token_id=eos[0],
        )
        if config.ignore_eos:
            kwargs["min_new_tokens"] = config.max_new_tokens  # EOS is masked until the last step
        if sample:
            kwargs.update(temperature=config.temperature, top_p=config.top_p, top_k=0)
        else:  # a model's generation_config may default to sampling; greedy ignores these
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if config.stop:
            kwargs.update(stop_strings=list(config.stop), tokenizer=tokenizer)
        out = model.generate(**inputs, **kwargs)
        new = out[:, inputs.input_ids.shape[1]:].tolist()
        completions = []
        for tokens in new:
            ends = [k for k, token in enumerate(tokens) if token in eos]
            kept = tokens[: ends[0]] if ends else tokens
            text, stopped = cut_at_stop(tokenizer.decode(kept, skip_special_tokens=True), config.stop)
            reason = "stop" if ends or stopped else "length"
            # Tokens the model produced: an EOS counts, the fill after a stop string does not.
            completions.append(Completion(text, len(kept) + int(bool(ends) and not stopped), reason))
        n = config.n
        return [completions[i * n:(i + 1) * n] for i in range(len(ids))]


def _eos_ids(model, tokenizer) -> list[int]:
    ids = model.generation_config.eos_token_id if model.generation_config else None
    ids = ids if isinstance(ids, list) else [ids]
    found = list(dict.fromkeys(i for i in [*ids, tokenizer.eos_token_id] if i is not None))
    if not found:
        raise BadInputError("the model and tokenizer define no EOS token; generation cannot tell where to stop")
    return found


class VLLMGenerator:
    """Generation with ``vllm.LLM``; ``engine_kwargs`` go to ``LLM`` (e.g. ``tensor_parallel_size``)."""

    name = "vllm"

    def __init__(self, name_or_path: str | os.PathLike, *, dtype: str = "auto",
                 gpu_memory_utilization: float = 0.3, max_model_len: int | None = 2048,
                 progress: bool = True, **engine_kwargs: Any) -> None:
        if not vllm_available():
            raise BadInputError("backend 'vllm' needs vLLM: pip install 'curatekit[vllm]'")
        from vllm import LLM

        if not torch.cuda.is_available():
            dtype = "float32" if dtype == "auto" else dtype  # CPU: bf16 kernels are slow or missing
            engine_kwargs.setdefault("enforce_eager", True)
        self.llm = LLM(model=str(name_or_path), dtype=dtype, gpu_memory_utilization=gpu_memory_utilization,
                       max_model_len=max_model_len, **engine_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.progress = progress

    def generate(self, prompts: Sequence[str], **sampling: Any) -> list[list[Completion]]:
        from vllm import SamplingParams

        config = SamplingConfig(**sampling)
        # One seed per prompt (derived from the call's seed): prompts never share a random stream.
        params = [SamplingParams(
            n=config.n, temperature=config.temperature, top_p=config.top_p,
            max_tokens=config.max_new_tokens, stop=list(config.stop) or None, seed=derive_seed(config.seed, i),
            ignore_eos=config.ignore_eos,
        ) for i in range(len(prompts))]
        outputs = self.llm.generate(list(prompts), params, use_tqdm=self.progress)
        return [[Completion(c.text, len(c.token_ids), "stop" if c.finish_reason == "stop" else "length")
                 for c in out.outputs] for out in outputs]

    def close(self) -> None:
        """Stop vLLM's engine processes now rather than at interpreter exit."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def resolve_backend(backend: str = "auto") -> str:
    """``auto`` is vLLM when it is installed and a GPU is present, else ``hf``."""
    if backend not in BACKENDS:
        raise BadInputError(f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "vllm" if vllm_available() and torch.cuda.is_available() else "hf"
    return backend


def load_generator(name_or_path: str | os.PathLike, backend: str = "auto", *, dtype: str = "auto",
                   device: str = "auto", batch_size: int = 32, progress: bool = True,
                   **engine_kwargs: Any) -> Generator:
    """A generator for the model at ``name_or_path`` (a local folder or a hub id)."""
    backend = resolve_backend(backend)
    if backend == "vllm":
        return VLLMGenerator(name_or_path, dtype=dtype, progress=progress, **engine_kwargs)
    return HFGenerator.from_pretrained(name_or_path, dtype=dtype, device=device,
                                       batch_size=batch_size, progress=progress)

"""The base layer of curatekit's LLM side.

Shared plumbing that ``curate``, ``rl`` and ``sft`` import: dataset loading (:mod:`eval.data`),
model and tokenizer loading and prompt building (:mod:`eval.modeling`), the tiny-model factory
used by tests and the offline demo (:mod:`eval.tiny`), atomic writes (:mod:`eval.io`).
"""
from eval.errors import BadInputError

__all__ = ["BadInputError"]

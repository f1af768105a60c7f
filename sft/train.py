"""Supervised fine-tuning on TRL's SFTTrainer, with a choice of padding:

- ``pad``: pad every batch to its longest sample (TRL's default collator);
- ``dynamic_pack``: CodeACT's Dynamic Pack with per-sample positions (:mod:`sft.packing`);
- ``bfd``: TRL's best-fit-decreasing packing of the whole dataset, padding-free.

Loss is on completion (answer) tokens only. Launch:

    accelerate launch -m sft.train --config recipes/sft_gsm8k_tiny.yaml [--any_field value]

The YAML holds the fields of :class:`SFTScriptArguments`, TRL's ``SFTConfig`` and ``ModelConfig``
(e.g. ``use_peft: true``, ``lora_r: 16`` for LoRA via peft). ``dataset`` may be any dataset source,
including a selection written by ``curate select``. From Python, :func:`sft_configs` builds the same
objects from a recipe and fields.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import datasets

from curate.core.errors import BadInputError

if TYPE_CHECKING:
    from trl import ModelConfig, SFTConfig

PADDING_MODES = ("pad", "dynamic_pack", "bfd")


@dataclass
class SFTScriptArguments:
    """What to train on and how to batch it (TRL's SFTConfig and ModelConfig hold the rest)."""

    dataset: str = field(default="", metadata={"help": "hub id, data file, or save_to_disk folder"})
    dataset_split: str = field(default="train", metadata={"help": "split to train on"})
    dataset_config: str | None = field(default=None, metadata={"help": "hub dataset configuration"})
    prompt_column: str | None = field(default=None, metadata={"help": "default: prompt, question, ..."})
    response_column: str | None = field(default=None, metadata={"help": "default: response, answer, ..."})
    limit: int | None = field(default=None, metadata={"help": "train on the first N rows only"})
    padding: str = field(default="dynamic_pack", metadata={"help": "pad, dynamic_pack or bfd"})
    chat: bool | None = field(default=None, metadata={
        "help": "conversational samples through the chat template (default: when the tokenizer has one)"})

    def __post_init__(self) -> None:
        if self.padding not in PADDING_MODES:
            raise BadInputError(f"padding must be one of {', '.join(PADDING_MODES)}, got '{self.padding}'")
        if not self.dataset:
            raise BadInputError("dataset is required (a hub id, data file or save_to_disk folder)")


def to_prompt_completion(ds: datasets.Dataset, args: SFTScriptArguments, tokenizer: Any) -> datasets.Dataset:
    """TRL's prompt-completion format: conversational when chat templates are used, else plain text
    rendered by :func:`curate.llm.chat.render_pair` ("Question: ...\\nAnswer:" + " answer"), the
    text IFD scores. Datasets already in that format pass through."""
    from curate.llm.chat import render_pair, uses_chat
    from curate.llm.data import PROMPT_CANDIDATES, RESPONSE_CANDIDATES, resolve_column

    if "messages" in ds.column_names:
        return ds
    if {"prompt", "completion"} <= set(ds.column_names):  # as TRL reads it: the completion continues the prompt
        return ds.select_columns(["prompt", "completion"])
    prompt_col = resolve_column(ds, args.prompt_column, PROMPT_CANDIDATES, "prompt")
    response_col = resolve_column(ds, args.response_column, RESPONSE_CANDIDATES, "response")
    chat = uses_chat(tokenizer, args.chat)
    empty = [i for i, (p, r) in enumerate(zip(ds[prompt_col], ds[response_col])) if not p or not r]
    if empty:
        raise BadInputError(f"{len(empty)} rows have an empty prompt or response (rows {empty[:10]})")

    def convert(row: dict[str, Any]) -> dict[str, Any]:
        if chat:
            return {"prompt": [{"role": "user", "content": row[prompt_col]}],
                    "completion": [{"role": "assistant", "content": row[response_col]}]}
        prompt, completion = render_pair(tokenizer, row[prompt_col], row[response_col], chat=False)
        return {"prompt": prompt, "completion": completion}

    return ds.map(convert, remove_columns=ds.column_names, desc="prompt-completion")


def train(script_args: SFTScriptArguments, training_args, model_args):
    """Build the trainer, train, save the model to ``training_args.output_dir``; returns the trainer."""
    from trl import SFTTrainer, get_peft_config

    from curate.llm.data import load_data
    from curate.llm.models import load_tokenizer, training_model
    from sft.packing import DynamicPackCollator, make_trainer_class

    if not model_args.model_name_or_path:
        raise BadInputError("model_name_or_path is required")
    tokenizer = load_tokenizer(model_args.model_name_or_path, padding_side="right")
    ds = load_data(script_args.dataset, split=script_args.dataset_split, config=script_args.dataset_config,
                   limit=script_args.limit)
    ds = to_prompt_completion(ds, script_args, tokenizer)

    model = training_model(model_args)
    collator, trainer_class = None, SFTTrainer
    if script_args.padding == "pad":
        training_args.packing, training_args.padding_free = False, False
    elif script_args.padding == "bfd":
        training_args.packing, training_args.packing_strategy, training_args.padding_free = True, "bfd", True
    else:
        training_args.packing, training_args.padding_free = False, False
        collator = DynamicPackCollator(tokenizer.pad_token_id, training_args.max_length or 1024)
        trainer_class = make_trainer_class()
    trainer = trainer_class(model=model, args=training_args, train_dataset=ds, processing_class=tokenizer,
                         data_collator=collator, peft_config=get_peft_config(model_args))
    trainer.train()
    trainer.save_model(training_args.output_dir)
    if trainer.accelerator.is_main_process:
        from curate.llm.data import write_provenance

        write_provenance(training_args.output_dir, script_args.dataset)  # the selection it came from
    return trainer


def make_parser():
    """TRL's parser of (SFTScriptArguments, SFTConfig, ModelConfig), the fields of a run."""
    from trl import ModelConfig, SFTConfig, TrlParser

    return TrlParser((SFTScriptArguments, SFTConfig, ModelConfig))


def parse(argv: list[str] | None = None):
    from curate.llm.recipes import parse_recipe

    return parse_recipe(make_parser(), sys.argv[1:] if argv is None else argv)


def sft_configs(recipe: str | os.PathLike | None = None,
                **fields: Any) -> tuple[SFTScriptArguments, SFTConfig, ModelConfig]:
    """``(SFTScriptArguments, SFTConfig, ModelConfig)`` from Python: the recipe's fields (none
    without one) with ``fields`` on top (None: left out), built and checked as ``sft.train --config
    RECIPE`` builds them; an unknown field or a refused value is one :class:`BadInputError` line."""
    from curate.llm.recipes import build_configs, recipe_fields

    parser = make_parser()
    return build_configs(parser, recipe_fields(parser, recipe, fields))


def main(argv: list[str] | None = None) -> int:
    from curate.llm.recipes import script_main

    return script_main("sft.train", parse, train, argv)


if __name__ == "__main__":
    sys.exit(main())

"""Shared fixtures: offline data and a tiny model built once per test session."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# Nothing may come from the Hub in tests; fail fast instead of retrying a network call.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def gsm8k_dir() -> Path:
    from curate.llm.data import default_data_dir

    data_dir = default_data_dir()
    if data_dir is None or not (data_dir / "gsm8k" / "train.jsonl").exists():
        pytest.fail("offline GSM8K not found: expected ../shared/data/gsm8k or $CURATEKIT_DATA/gsm8k")
    return data_dir / "gsm8k"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, gsm8k_dir: Path) -> Path:
    """A 2-layer Qwen2 (head_dim 64) and a BPE tokenizer trained on GSM8K text, saved to disk."""
    from curate.llm.tiny import build_tiny_model

    with open(gsm8k_dir / "train.jsonl") as f:
        rows = [json.loads(line) for _, line in zip(range(1000), f)]
    texts = [r["question"] + "\n" + r["answer"] for r in rows]
    texts += ["def add(a, b):\n    return a + b\n", "for i in range(10):\n    print(i)\n"]
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", texts)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path):
    """(model, tokenizer) loaded back with from_pretrained, on CPU."""
    from curate.llm.models import load_model_and_tokenizer

    return load_model_and_tokenizer(tiny_model_dir, device="cpu")

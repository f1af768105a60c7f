"""Model/tokenizer loading, prompt rendering and the tiny-model factory."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from curate.core.errors import BadInputError
from curate.core.device import resolve_dtype
from curate.llm.chat import render_pair, render_prompt
from curate.llm.models import load_model, load_tokenizer
from curate.llm.tiny import TinyModelConfig, init_model, train_tokenizer


def test_tiny_model_is_qwen2_with_head_dim_64(tiny_model_dir):
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["model_type"] == "qwen2"
    assert config["hidden_size"] // config["num_attention_heads"] == 64
    assert config["num_hidden_layers"] == 2


def test_tiny_model_round_trips_through_from_pretrained(tiny_model_dir, tiny_model):
    model, tokenizer = tiny_model
    # A freshly initialised model with the same seed has the weights that were saved.
    fresh = init_model(TinyModelConfig(), tokenizer)
    ids = tokenizer(["Natalia sold 48 clips"], return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, fresh(ids).logits, atol=1e-5)
    reloaded = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert sum(p.numel() for p in reloaded.parameters()) == sum(p.numel() for p in model.parameters())


def test_tokenizer_pads_left_and_has_pad_token(tiny_model):
    _, tokenizer = tiny_model
    assert tokenizer.padding_side == "left"
    batch = tokenizer(["a", "a much longer text here"], padding=True, return_tensors="pt")
    assert batch.attention_mask[0, 0] == 0 and batch.attention_mask[0, -1] == 1
    assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.eos_token == "<|im_end|>"


def test_tokenizer_pad_falls_back_to_eos(tmp_path):
    tokenizer = train_tokenizer(["hello world"] * 10, vocab_size=300)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path, padding_side="right")
    assert loaded.pad_token == loaded.eos_token and loaded.padding_side == "right"


def test_tokenizer_round_trips_any_text(tiny_model):
    _, tokenizer = tiny_model
    text = "Ünïcode ✓ and code:\n\tdef f(x): return x**2  # 1,000 €"
    assert tokenizer.decode(tokenizer(text).input_ids) == text


def test_left_padded_batch_generates_what_each_prompt_generates_alone(tiny_model):
    model, tokenizer = tiny_model
    prompts = [render_prompt(tokenizer, q) for q in ("What is 2+2?", "A much longer question about apples?")]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    width = batch.input_ids.shape[1]
    out = model.generate(**batch, max_new_tokens=6, do_sample=False, min_new_tokens=6)
    assert out.shape == (2, width + 6)
    for i, prompt in enumerate(prompts):
        alone = tokenizer(prompt, return_tensors="pt")
        single = model.generate(**alone, max_new_tokens=6, do_sample=False, min_new_tokens=6)
        assert out[i, width:].tolist() == single[0, alone.input_ids.shape[1]:].tolist()


def test_render_prompt_uses_chat_template(tiny_model):
    _, tokenizer = tiny_model
    text = render_prompt(tokenizer, "What is 2+2?", system="Be brief.")
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n"
                    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")


def test_render_prompt_plain_template(tiny_model):
    _, tokenizer = tiny_model
    assert render_prompt(tokenizer, "What is 2+2?", chat=False) == "Question: What is 2+2?\nAnswer:"
    shots = render_prompt(tokenizer, [("1+1?", "2"), ("2+2?", "")], chat=False, system="Be brief.")
    assert shots == "Be brief.\n\nQuestion: 1+1?\nAnswer: 2\n\nQuestion: 2+2?\nAnswer:"
    assert render_prompt(tokenizer, "2+2?", chat=False, template="codeact") == "Question:\n2+2?\n\nAnswer:\n"


def test_render_prompt_without_chat_template_falls_back_to_plain():
    tokenizer = train_tokenizer(["hello world"] * 10, vocab_size=300)
    tokenizer.chat_template = None
    assert render_prompt(tokenizer, "hi") == "Question: hi\nAnswer:"
    with pytest.raises(BadInputError, match="no chat template"):
        render_prompt(tokenizer, "hi", chat=True)
    with pytest.raises(BadInputError, match="template"):
        render_prompt(tokenizer, "hi", template="Q: A:")


@pytest.mark.parametrize("chat", [True, False])
def test_render_pair_is_the_text_trl_trains_on(tiny_model, chat):
    # The oracle is TRL's own rendering of a prompt-completion row (what SFTTrainer tokenizes).
    # Kills: a completion without the end-of-turn tokens, or a plain answer glued to "Answer:".
    from trl.data_utils import apply_chat_template

    _, tokenizer = tiny_model
    prompt, answer = "What is 2+2?", "It is 4."
    if chat:
        row = {"prompt": [{"role": "user", "content": prompt}], "completion": [{"role": "assistant", "content": answer}]}
        expected = apply_chat_template(row, tokenizer)
        expected = (expected["prompt"], expected["completion"])
        assert expected[1] != answer  # the check can see the end-of-turn tokens
    else:
        expected = ("Question: What is 2+2?\nAnswer:", " It is 4.")
    assert render_pair(tokenizer, prompt, answer, chat=chat) == expected


def test_load_model_dtype_and_eval_mode(tiny_model_dir):
    model = load_model(tiny_model_dir, dtype="bf16", device="cpu")
    assert next(model.parameters()).dtype == torch.bfloat16 and not model.training
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32


def test_bad_model_path_and_dtype(tmp_path):
    with pytest.raises(BadInputError, match="cannot load model from"):
        load_model(tmp_path / "missing")
    with pytest.raises(BadInputError, match="cannot load tokenizer from"):
        load_tokenizer(tmp_path / "missing")
    with pytest.raises(BadInputError, match="unknown dtype 'fp8'"):
        resolve_dtype("fp8")


@pytest.mark.parametrize("kwargs, message", [
    ({"hidden_size": 100, "num_heads": 3}, "hidden_size \\(100\\) must be divisible by num_heads \\(3\\)"),
    ({"num_layers": 0}, "num_layers must be positive, got 0"),
    ({"num_heads": 2, "num_kv_heads": 3}, "num_heads \\(2\\) must be divisible by num_kv_heads \\(3\\)"),
])
def test_tiny_config_validation(kwargs, message):
    with pytest.raises(BadInputError, match=message):
        TinyModelConfig(**kwargs)

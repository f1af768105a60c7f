"""The HF generation backend: batching must not change what a prompt gets, seeds repeat, stop
strings cut, token counts are right, and out-of-memory halves the batch instead of failing."""
from __future__ import annotations

import pytest
import torch

from curate.core.errors import BadInputError
from curate.llm.generation import HFGenerator, SamplingConfig, cut_at_stop, load_generator, resolve_backend

PROMPTS = ["Natalia sold clips to 48 of her friends", "What is 2+2?", "a",
           "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes"]


@pytest.fixture(scope="module")
def generator(tiny_model):
    model, tokenizer = tiny_model
    return HFGenerator(model, tokenizer, batch_size=4, progress=False)


def test_batched_greedy_equals_one_prompt_at_a_time(generator, tiny_model):
    """Left padding and length sorting must not change a greedy continuation."""
    batched = generator.generate(PROMPTS, max_new_tokens=12)
    model, tokenizer = tiny_model
    for prompt, (completion,) in zip(PROMPTS, batched):
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        out = model.generate(**ids, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        reference = tokenizer.decode(out[0, ids.input_ids.shape[1]:], skip_special_tokens=True)
        assert completion.text == reference
        assert completion.num_tokens == out.shape[1] - ids.input_ids.shape[1]


def test_n_samples_per_prompt_seeded(generator):
    first = generator.generate(PROMPTS, n=3, temperature=1.0, max_new_tokens=10, seed=7)
    again = generator.generate(PROMPTS, n=3, temperature=1.0, max_new_tokens=10, seed=7)
    other = generator.generate(PROMPTS, n=3, temperature=1.0, max_new_tokens=10, seed=8)
    assert [len(samples) for samples in first] == [3] * len(PROMPTS)
    assert first == again
    assert first != other
    assert all(1 <= c.num_tokens <= 10 for samples in first for c in samples)
    assert len({c.text for c in first[0]}) > 1  # sampling, not n copies of one completion


def test_stop_string_cuts_the_completion(generator):
    (full,), = generator.generate([PROMPTS[0]], max_new_tokens=20)
    stop = full.text[8:11]
    assert stop.strip(), "the tiny model's greedy output should have text to stop at"
    (cut,), = generator.generate([PROMPTS[0]], max_new_tokens=20, stop=[stop])
    assert cut.text == full.text[: full.text.find(stop)]
    assert cut.finish_reason == "stop"
    assert cut.num_tokens < full.num_tokens


def test_cut_at_stop_takes_the_earliest():
    assert cut_at_stop("abc\nQuestion: x\n\n", ["\n\n", "Question:"]) == ("abc\n", True)
    assert cut_at_stop("abc", ["z"]) == ("abc", False)


class _OOMOverTwo(torch.nn.Module):
    """Wraps a model; generate raises CUDA out-of-memory for batches of more than two rows."""

    def __init__(self, model):
        super().__init__()
        self.inner = model
        self.batch_sizes: list[int] = []

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)

    def generate(self, input_ids, **kwargs):
        self.batch_sizes.append(input_ids.shape[0])
        if input_ids.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner.generate(input_ids=input_ids, **kwargs)


def test_out_of_memory_halves_the_batch(tiny_model, generator):
    model, tokenizer = tiny_model
    flaky = HFGenerator(_OOMOverTwo(model), tokenizer, batch_size=8, progress=False)
    out = flaky.generate(PROMPTS, max_new_tokens=6)
    assert flaky.batch_size == 2
    assert flaky.model.batch_sizes == [4, 2, 2]  # 4 prompts: tried all 4, then two halves
    assert out == generator.generate(PROMPTS, max_new_tokens=6)


def test_other_runtime_errors_are_not_swallowed(tiny_model):
    model, tokenizer = tiny_model

    class Broken(_OOMOverTwo):
        def generate(self, input_ids, **kwargs):
            raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        HFGenerator(Broken(model), tokenizer, progress=False).generate(["x"], max_new_tokens=2)


@pytest.mark.parametrize("bad", [dict(n=0), dict(temperature=-1.0), dict(top_p=0.0), dict(max_new_tokens=0)])
def test_bad_sampling_values_are_named(bad):
    with pytest.raises(BadInputError, match=next(iter(bad))):
        SamplingConfig(**bad)


def test_backends(tiny_model_dir):
    with pytest.raises(BadInputError, match="unknown backend 'tgi'"):
        resolve_backend("tgi")
    if not torch.cuda.is_available():
        assert resolve_backend("auto") == "hf"
    assert load_generator(tiny_model_dir, "auto", device="cpu", progress=False).name == "hf"


def test_ignore_eos_generates_exactly_max_new_tokens(generator):
    out = generator.generate(PROMPTS, n=2, temperature=1.0, max_new_tokens=9, ignore_eos=True, seed=3)
    assert {c.num_tokens for samples in out for c in samples} == {9}
    assert {c.finish_reason for samples in out for c in samples} == {"length"}

"""The tiny model from the factory runs under vLLM's CPU build (second environment, .venv-vllm)."""
from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def llm(tiny_model_dir):
    # Reason for the skip: vLLM lives only in .venv-vllm; `.ci/test` runs this file there.
    pytest.importorskip("vllm", reason="vLLM is installed in .venv-vllm only (bash .ci/setup --vllm)")
    os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "fork")  # pytest has no __main__ guard
    from vllm import LLM

    engine = LLM(model=str(tiny_model_dir), dtype="float32", gpu_memory_utilization=0.3,
                 max_model_len=512, seed=0, enforce_eager=True)
    yield engine
    del engine


def test_n_completions_per_prompt_and_seed_repeatability(llm):
    from vllm import SamplingParams

    params = SamplingParams(n=4, temperature=1.0, max_tokens=8, seed=123)
    first = llm.generate(["Natalia sold clips", "What is 2+2?"], params, use_tqdm=False)
    again = llm.generate(["Natalia sold clips", "What is 2+2?"], params, use_tqdm=False)
    assert [len(r.outputs) for r in first] == [4, 4]
    assert all(0 < len(c.token_ids) <= 8 for r in first for c in r.outputs)
    assert [[c.text for c in r.outputs] for r in first] == [[c.text for c in r.outputs] for r in again]


def test_greedy_matches_transformers(llm, tiny_model):
    from vllm import SamplingParams

    model, tokenizer = tiny_model
    prompt = "Natalia sold clips to 48 of her friends"
    ids = tokenizer(prompt, return_tensors="pt")
    hf = model.generate(**ids, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    hf_tokens = hf[0, ids.input_ids.shape[1]:].tolist()
    out = llm.generate([prompt], SamplingParams(temperature=0.0, max_tokens=5, ignore_eos=True), use_tqdm=False)
    assert list(out[0].outputs[0].token_ids) == hf_tokens

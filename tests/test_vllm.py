"""The vLLM backend on the tiny model, in vLLM's CPU build (second environment, .venv-vllm):
n completions per prompt, seed repeatability, greedy tokens equal to transformers', and an eval."""
from __future__ import annotations

import json
import os

import pytest

pytestmark = pytest.mark.vllm

PROMPTS = ["Natalia sold clips", "What is 2+2?", "Weng earns $12 an hour"]


@pytest.fixture(scope="module")
def generator(tiny_model_dir):
    # Reason for the skip: vLLM lives only in .venv-vllm; `.ci/test` runs this file there.
    pytest.importorskip("vllm", reason="vLLM is installed in .venv-vllm only (bash .ci/setup --vllm)")
    os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "fork")  # pytest has no __main__ guard
    from curate.llm.generation import load_generator

    engine = load_generator(tiny_model_dir, "vllm", max_model_len=1024, seed=0, progress=False)
    yield engine
    engine.close()


def test_n_completions_per_prompt_and_seed_repeatability(generator):
    assert generator.name == "vllm"
    first = generator.generate(PROMPTS, n=4, temperature=1.0, max_new_tokens=8, seed=123)
    again = generator.generate(PROMPTS, n=4, temperature=1.0, max_new_tokens=8, seed=123)
    other = generator.generate(PROMPTS, n=4, temperature=1.0, max_new_tokens=8, seed=124)
    assert [len(samples) for samples in first] == [4, 4, 4]
    assert all(1 <= c.num_tokens <= 8 for samples in first for c in samples)
    assert first == again and first != other
    assert len({c.text for c in first[0]}) > 1


def test_greedy_matches_transformers(generator, tiny_model):
    from vllm import SamplingParams

    model, tokenizer = tiny_model
    prompt = "Natalia sold clips to 48 of her friends"
    ids = tokenizer(prompt, return_tensors="pt")
    hf = model.generate(**ids, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    hf_tokens = hf[0, ids.input_ids.shape[1]:].tolist()
    out = generator.llm.generate([prompt], SamplingParams(temperature=0.0, max_tokens=5, ignore_eos=True),
                                 use_tqdm=False)
    assert list(out[0].outputs[0].token_ids) == hf_tokens


def test_eval_runs_on_the_vllm_backend(generator, tiny_model_dir, tmp_path):
    from eval.evaluate import EvalConfig, evaluate
    from eval.tasks import TaskOptions

    summary = evaluate(EvalConfig(task="gsm8k", model=str(tiny_model_dir), n=2, max_new_tokens=12,
                                  out_dir=str(tmp_path), progress=False, options=TaskOptions(limit=4)),
                       generator)
    assert summary["backend"] == "vllm" and summary["samples"] == 8
    lines = (tmp_path / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 8 and all(json.loads(line)["num_tokens"] <= 12 for line in lines)

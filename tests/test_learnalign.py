"""LearnAlign: the O(n k) score equals the n x n definition (Eq. 6-7), also inside score() on real
gradients with mixed rewards and across two processes; V = p(1 - p), the batched per-sample GRPO
gradients equal one-backward-per-sample ones and the GRPO loss written out by hand, the projection
preserves inner products (also of non-zero-mean inputs), a pool with no learnable row is reported,
and the whole pipeline (warmup, rollouts, gradients, scores, selection, GRPO on the selection; a
two-stage run) works offline.

The random tiny model solves no GSM8K problem (p = 0 everywhere, so every score is 0): tests that
need learnable rows use the ``gsm8k-coin`` task, GSM8K's prompts with a verifier that accepts a
completion when its CRC32 is even, so real rollouts get mixed rewards."""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from curate import learnalign
from curate.selection import ranking
from curate.cli import main as curate_main
from curate.grad_features import (CountSketch, GradientConfig, RolloutGroup, batched_features, group_advantages,
                                  normalise, prepare_lora, reference_features)

COIN = "gsm8k-coin"


def coin_verify(rows, completions, options) -> list:
    """Accept a completion when the CRC32 of its text is even: a fair coin fixed by the text."""
    from eval.tasks import Verdict

    return [[Verdict(zlib.crc32(text.encode()) % 2 == 0) for text in group] for group in completions]


def register_coin_task(monkeypatch=None) -> str:
    """Register ``gsm8k-coin`` (GSM8K's data and prompts, :func:`coin_verify`), with ``monkeypatch``
    for the current test only; returns its name."""
    from eval.tasks import TASKS, get_task, register_task

    task = dataclasses.replace(get_task("gsm8k"), name=COIN, verify=coin_verify)
    if monkeypatch is not None:
        monkeypatch.setitem(TASKS, COIN, task)
    elif COIN not in TASKS:
        register_task(task)
    return COIN


def curate_small_chunks(chunk_size: int, argv: list[str]) -> int:
    """``curate ARGV`` with ``gsm8k-coin`` registered and the selection configs scoring chunks of
    ``chunk_size`` rows (the CLI has no chunk-size option): several chunks in a tiny run."""
    from curate import cdas

    register_coin_task()
    learnalign.LearnAlignConfig = functools.partial(learnalign.LearnAlignConfig, chunk_size=chunk_size)
    cdas.CDASConfig = functools.partial(cdas.CDASConfig, chunk_size=chunk_size)
    return curate_main(argv)


def curate_in_process(monkeypatch, chunk_size: int, argv: list[str]) -> int:
    """:func:`curate_small_chunks` in the test's process; the configs and tasks are restored afterwards."""
    from curate import cdas

    register_coin_task(monkeypatch)
    monkeypatch.setattr(learnalign, "LearnAlignConfig", learnalign.LearnAlignConfig)
    monkeypatch.setattr(cdas, "CDASConfig", cdas.CDASConfig)
    return curate_small_chunks(chunk_size, argv)


def runner_source(chunk_size: int) -> str:
    """A script running :func:`curate_small_chunks` on its arguments (for ``accelerate launch``)."""
    return f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_learnalign import curate_small_chunks
sys.exit(curate_small_chunks({chunk_size}, sys.argv[1:]))
"""


def test_fast_score_equals_the_n_by_n_definition():
    rng = np.random.default_rng(0)
    features = torch.as_tensor(rng.normal(size=(60, 32)))
    features[7] = 0  # a prompt without gradient (e.g. empty rollouts)
    p = rng.choice([0.0, 0.125, 0.5, 0.75, 1.0], size=60)
    v = learnalign.learnability(p)
    fast = learnalign.alignment_scores(normalise(features).numpy(), v, chunk=16)
    naive = learnalign.alignment_scores_naive(features.numpy(), v)
    np.testing.assert_allclose(fast, naive, rtol=1e-5, atol=1e-7)
    assert np.all(fast[(p == 0) | (p == 1)] == 0)  # V = 0: never aligned


def test_learnability_is_p_times_one_minus_p():
    p = np.array([0, 0.25, 0.5, 1.0])
    np.testing.assert_allclose(learnalign.learnability(p), [0, 0.1875, 0.25, 0])


def test_group_advantages_are_group_normalised():
    r = [1.0, 0.0, 0.0, 1.0, 1.0]
    expected = (np.array(r) - 0.6) / (np.std(r, ddof=1) + 1e-4)
    np.testing.assert_allclose(group_advantages(r), expected)
    assert np.all(group_advantages([1.0, 1.0, 1.0]) == 0)  # all solved: no signal


def test_ties_break_by_seed_deterministically():
    values = np.array([0.5, 0.2, 0.5, 0.5, 0.1, 0.5])
    a, b = ranking(values, seed=1), ranking(values, seed=1)
    assert a.tolist() == b.tolist() and set(a[:4]) == {0, 2, 3, 5} and a[4:].tolist() == [1, 4]
    orders = {tuple(ranking(values, seed=s)[:4]) for s in range(10)}
    assert len(orders) > 1  # the seed decides among ties


def test_count_sketch_preserves_inner_products():
    torch.manual_seed(0)
    x, y = torch.randn(1, 50_000), torch.randn(1, 50_000)
    y = 0.6 * x + 0.8 * y
    sketch = CountSketch([20_000, 30_000], 8192, seed=3)
    px, py = (sketch.project([t[:, :20_000], t[:, 20_000:]]) for t in (x, y))
    exact = torch.nn.functional.cosine_similarity(x, y).item()
    projected = torch.nn.functional.cosine_similarity(px, py).item()
    assert abs(projected - exact) < 0.03
    assert sum(b.numel() for b in sketch.buckets) == 50_000  # O(d) state, no d x k matrix


# Kills a CountSketch without its random signs (each bucket the plain sum of its coordinates): with
# a non-zero mean every bucket sum carries a shared term, so projected cosines drift towards 1
# (about 0.86 here against an exact 0.5). The zero-mean test above cannot tell.
def test_count_sketch_preserves_inner_products_of_non_zero_mean_inputs():
    generator = torch.Generator().manual_seed(1)
    x, y = (1 + torch.randn(1, 50_000, generator=generator) for _ in range(2))
    sketch = CountSketch([20_000, 30_000], 8192, seed=3)
    px, py = (sketch.project([t[:, :20_000], t[:, 20_000:]]) for t in (x, y))
    exact = torch.nn.functional.cosine_similarity(x, y).item()
    assert abs(exact - 0.5) < 0.01
    assert abs(torch.nn.functional.cosine_similarity(px, py).item() - exact) < 0.03
    assert abs((px * py).sum().item() / (x * y).sum().item() - 1) < 0.05  # <Px, Py> estimates <x, y>


# Kills a fresh adapter drawn from the global RNG (whatever state earlier work left it in): a
# resumed run's gradient chunks would come from another adapter than the first run's.
def test_fresh_adapter_init_is_fixed_by_the_seed(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    def lora_weights(seed: int, global_seed: int) -> list[torch.Tensor]:
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        torch.manual_seed(global_seed)
        layers = prepare_lora(model, GradientConfig(seed=seed))
        return [m.weight.detach().clone() for _, m in layers]

    state = torch.get_rng_state()
    first, again, other = lora_weights(0, 1), lora_weights(0, 2), lora_weights(1, 1)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    torch.manual_seed(7)
    before = torch.rand(1)
    torch.manual_seed(7)
    lora_weights(0, 7)
    torch.manual_seed(7)
    assert torch.equal(torch.rand(1), before)  # the caller's global RNG is left alone
    torch.set_rng_state(state)


def _groups(seed: int = 0, n: int = 12, g: int = 4) -> list[RolloutGroup]:
    rng = np.random.default_rng(seed)
    return [RolloutGroup(rng.integers(5, 1000, rng.integers(4, 20)).tolist(),
                         [rng.integers(5, 1000, rng.integers(0, 15)).tolist() for _ in range(g)],
                         rng.integers(0, 2, g).astype(float).tolist()) for _ in range(n)]


@pytest.fixture()
def lora_model(tiny_model_dir):
    """The tiny model with a LoRA adapter moved away from its zero init (so A and B both get
    gradients and π_θ differs from π_ref, which makes the KL term count)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa")
    config = GradientConfig(projection_dim=2048, max_tokens_per_batch=300)
    torch.manual_seed(0)
    with torch.no_grad():
        for _, layer in prepare_lora(model, config):
            layer.weight.normal_(0, 0.05)
    return model, config


def test_batched_features_equal_one_backward_per_sample(lora_model):
    model, config = lora_model
    groups = _groups()
    fast = batched_features(model, groups, config, pad_id=0, progress=False)
    slow = reference_features(model, groups, config, pad_id=0, progress=False)
    cos = torch.nn.functional.cosine_similarity(fast, slow, dim=1)
    assert cos.min() > 0.99, cos
    torch.testing.assert_close(fast, slow, rtol=1e-3, atol=1e-6)


# Kills a surrogate that aggregates tokens another way than the trainer's loss: "grpo" averages each
# sequence over its own tokens, "dapo" (TRL's default) weighs every token alike (rollouts of
# different lengths here, so the two differ).
@pytest.mark.parametrize("loss_type", ["grpo", "dapo"])
def test_features_are_the_projected_gradient_of_the_grpo_loss(lora_model, loss_type):
    """The GRPO loss written out from full logits: -(1/Z) Σ_g Σ_t (Â_g + β(π_ref/π - 1)) log π with
    Z = G |o_g| (grpo) or G (dapo: the batch's token count, a constant per prompt)."""
    model, config = lora_model
    config = dataclasses.replace(config, loss_type=loss_type)
    group = _groups(seed=5, n=1, g=5)[0]
    layers = prepare_lora(model, config)
    adv = (torch.tensor(group.rewards) - torch.tensor(group.rewards).mean()) / (torch.tensor(group.rewards).std() + 1e-4)
    model.zero_grad()
    total = 0.0
    for g, completion in enumerate(group.completion_ids):
        if not completion:
            continue
        ids = torch.tensor([group.prompt_ids + completion])
        start = len(group.prompt_ids)
        logp = torch.log_softmax(model(ids).logits[0, start - 1:-1].float(), -1)[torch.arange(len(completion)),
                                                                                 torch.tensor(completion)]
        with torch.no_grad():
            model.disable_adapters()
            ref = torch.log_softmax(model(ids).logits[0, start - 1:-1].float(), -1)[
                torch.arange(len(completion)), torch.tensor(completion)]
            model.enable_adapters()
        coeff = adv[g] + config.beta * (torch.exp(ref - logp.detach()) - 1)
        per_sequence = (coeff * logp).mean() if loss_type == "grpo" else (coeff * logp).sum()
        total = total - per_sequence / len(group.completion_ids)
    assert len({len(c) for c in group.completion_ids if c}) > 1  # lengths differ: the aggregations differ
    total.backward()
    sketch = CountSketch([m.weight.numel() for _, m in layers], config.projection_dim, config.seed)
    by_hand = sketch.project([m.weight.grad.reshape(1, -1) for _, m in layers])
    model.zero_grad()
    ours = batched_features(model, [group], config, pad_id=0, progress=False)
    torch.testing.assert_close(ours, by_hand, rtol=1e-3, atol=1e-6)


# Kills a score() that drops the normalisation of the projected gradients (scores would scale with
# gradient norms, which vary here), leaves V out of the pool mean or of the row factor, averages over
# the learnable rows only instead of all n, or computes its own formula that drifts from
# alignment_scores. Rollouts and gradients are real (tiny model, fresh LoRA); only the verifier is
# a stand-in, so p spreads over (0, 1).
# Kills a scorer that ignores an explicit reference policy (a staged run's original model), taking
# π_ref from the policy or from its adapters-off self regardless: a separate copy of the base model
# as π_ref must give the adapters-off features, the policy itself as π_ref the β = 0 ones (the KL
# coefficient β(π_ref/π - 1) vanishes), and the two differ (a moved LoRA here).
def test_an_explicit_reference_policy_sets_the_kl_term(lora_model):
    import copy

    model, config = lora_model
    groups = _groups(seed=9, n=3, g=4)
    base = copy.deepcopy(model)
    base.disable_adapters()  # a separate model object: the base policy
    no_kl = batched_features(model, groups, dataclasses.replace(config, beta=0.0), pad_id=0, progress=False)
    adapters_off = batched_features(model, groups, config, pad_id=0, progress=False)
    separate_base = batched_features(model, groups, config, pad_id=0, progress=False, reference=base)
    itself = batched_features(model, groups, config, pad_id=0, progress=False, reference=model)
    torch.testing.assert_close(separate_base, adapters_off, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(itself, no_kl, rtol=1e-4, atol=1e-7)
    assert not torch.allclose(adapters_off, no_kl, rtol=1e-3, atol=1e-6)


def test_score_on_mixed_rewards_equals_the_n_by_n_definition(tiny_model_dir, gsm8k_dir, monkeypatch):
    from curate.llm.data import load_data

    raw: list[torch.Tensor] = []

    def recording(*args, **kwargs):
        raw.append(batched_features(*args, **kwargs))
        return raw[-1]

    monkeypatch.setattr(learnalign, "batched_features", recording)
    config = learnalign.LearnAlignConfig(task=register_coin_task(monkeypatch), num_rollouts=4, max_new_tokens=8,
                                         backend="hf", chunk_size=5, gradients=GradientConfig(projection_dim=512))
    ds = load_data(str(gsm8k_dir / "train.jsonl"), limit=12)
    scored = learnalign.score(ds, tiny_model_dir, config, cache_dir=False, device="cpu", progress=False)
    p = np.asarray(scored["success_rate"])
    assert ((p > 0) & (p < 1)).sum() >= 6 and len(set(p)) >= 3  # mixed rewards, not a degenerate pool
    g = torch.cat(raw).double()  # the projected gradients, before score() normalises them
    norms = g.norm(dim=1)
    assert len(g) == 12 and norms.max() > 1.5 * norms[norms > 0].min()
    unit = torch.where(norms[:, None] > 0, g / norms.clamp_min(1e-30)[:, None], g)
    cos = unit @ unit.T
    v = torch.as_tensor(p * (1 - p))
    by_definition = (v[:, None] * v[None, :] * cos).mean(1)  # S_ij = V_i V_j cos(g_i, g_j), Avg_i = mean_j
    np.testing.assert_allclose(scored["score"], by_definition.numpy(), rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(scored["gradient_cosine_score"], cos.mean(1).numpy(), rtol=1e-4, atol=1e-7)
    # The plain gradient alignment (the paper's norm-sensitive baseline): raw dot products, so a row's
    # gradient norm scales its score (kills a "gradient" column computed from the unit gradients).
    np.testing.assert_allclose(scored["gradient_score"], (g @ g.T).mean(1).numpy(), rtol=1e-3, atol=1e-8)
    assert not np.allclose(scored["gradient_score"], scored["gradient_cosine_score"])
    assert np.ptp(scored["score"]) > 0


def test_model_without_lora_able_layers_is_refused(tiny_model_dir):
    from curate.grad_features import check_lora_targets
    from curate.core.errors import BadInputError

    with pytest.raises(BadInputError, match="no LoRA-able linear layers"):
        check_lora_targets(str(tiny_model_dir), ["conv1"])


@pytest.fixture(scope="module")
def pipeline(tiny_model_dir, gsm8k_dir, tmp_path_factory):
    """`curate select learnalign` with a short warmup, on 24 GSM8K rows."""
    out = tmp_path_factory.mktemp("learnalign") / "run"
    argv = ["select", "learnalign", "--dataset", str(gsm8k_dir / "train.jsonl"), "--limit", "24",
            "--model", str(tiny_model_dir), "--n", "6", "--out", str(out), "--num-rollouts", "4",
            "--max-new-tokens", "12", "--warmup-samples", "8", "--warmup-steps", "2",
            "--projection-dim", "512", "--device", "cpu", "--backend", "hf", "--cache-dir", str(out.parent / "cache")]
    assert curate_main(argv) == 0
    return out, argv


def test_pipeline_writes_scores_selection_and_report(pipeline):
    out, _ = pipeline
    assert (out / "warmup" / "adapter_config.json").exists()  # θ_s from the warmup GRPO run
    scored = [json.loads(line) for line in (out / "scored.jsonl").read_text().splitlines()]
    selected = [json.loads(line) for line in (out / "selected.jsonl").read_text().splitlines()]
    assert len(scored) == 24 and len(selected) == 6
    assert [r["row_index"] for r in scored] == list(range(24))  # every row, its original index, its flag
    assert {r["row_index"] for r in scored if r["selected"]} == {r["row_index"] for r in selected}
    log = (out / "run.log").read_text()
    assert "[1/4] warmup" in log and "[2/4] rollouts: 24 prompts x 4" in log and "[4/4] select: 6 of 24" in log
    p = np.array([r["success_rate"] for r in scored])
    assert np.all((p * 4) == np.round(p * 4))  # G = 4 rollouts
    np.testing.assert_allclose([r["learnability"] for r in scored], p * (1 - p))
    top = sorted((r["score"] for r in scored), reverse=True)[:6]
    np.testing.assert_allclose(sorted((r["score"] for r in selected), reverse=True), top)
    report = json.loads((out / "report.json").read_text())
    assert report["rows"] == 24 and report["selected"] == 6 and sum(report["success_rate"]["histogram"]["counts"]) == 24
    # The random tiny model solves nothing: the report says the selection is a seeded random pick.
    assert report["learnable_rows"] == 0 and "no row is learnable" in report["warning"]
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_pipeline_rerun_reads_the_cache(pipeline):
    out, argv = pipeline
    before = (out / "scored.jsonl").read_text()
    rerun = out.parent / "rerun"
    assert curate_main([*argv[:argv.index("--out") + 1], str(rerun), *argv[argv.index("--out") + 2:],
                        "--no-warmup"]) == 0
    caches = list((out.parent / "cache").glob("grad-features-*.jsonl"))
    assert len(caches) == 2  # one per scoring policy (warmup adapter, then the plain model)
    assert curate_main([*argv[:argv.index("--out") + 1], str(rerun), *argv[argv.index("--out") + 2:],
                        "--no-warmup"]) == 0
    assert len(list((out.parent / "cache").glob("grad-features-*.jsonl"))) == 2
    assert before  # the warmup run's scores stay where they were


# A finished run rerun as it was: every stage comes from its cache (the warmup adapter by its
# inputs, the rollouts and gradients by theirs), so nothing is trained or sampled again. Kills a
# warmup keyed by something that changes between runs (a time, a temporary path) and a rollout
# cache that misses.
def test_a_rerun_trains_no_warmup_and_samples_no_rollouts(pipeline, monkeypatch):
    from curate.llm.generation import HFGenerator
    from rl import runs

    out, argv = pipeline
    before = {name: (out / name).read_text() for name in ("scored.jsonl", "selected.jsonl")}
    monkeypatch.setattr(runs, "run_grpo", lambda *a, **k: pytest.fail("the rerun trained the warmup again"))
    monkeypatch.setattr(HFGenerator, "generate", lambda *a, **k: pytest.fail("the rerun sampled rollouts again"))
    assert curate_main(argv) == 0
    assert {name: (out / name).read_text() for name in before} == before


# The README's example as written, without --device, on a machine with no GPU: device auto must
# mean the CPU in fp32 for the warmup's GRPO too (TRL's bf16 default stopped it before).
def test_learnalign_without_a_device_flag_runs_on_a_cpu(tiny_model_dir, gsm8k_dir, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("checks the CPU-only default")
    out = tmp_path / "run"
    assert curate_main(["select", "learnalign", "--dataset", str(gsm8k_dir / "train.jsonl"), "--limit", "8",
                        "--model", str(tiny_model_dir), "--n", "2", "--out", str(out), "--num-rollouts", "2",
                        "--max-new-tokens", "8", "--warmup-samples", "4", "--warmup-steps", "1",
                        "--projection-dim", "128", "--cache-dir", str(tmp_path / "cache")]) == 0
    assert (out / "warmup" / "adapter_config.json").exists() and (out / "selected.jsonl").exists()


def test_grpo_trains_on_the_selection(pipeline, tiny_model_dir, tmp_path):
    from rl.runs import grpo_configs, run_grpo

    out, _ = pipeline
    configs = grpo_configs(None, model_name_or_path=tiny_model_dir, task="gsm8k", dataset=out,  # the folder
                           output_dir=tmp_path / "grpo", max_steps=2, num_generations=4, per_device_train_batch_size=8,
                           max_completion_length=12, use_cpu=True)
    trainer = run_grpo(configs)
    assert trainer.state.global_step == 2 and len(trainer.train_dataset) == 6
    assert (tmp_path / "grpo" / "adapter_model.safetensors").exists()


def test_two_stage_run_rescores_the_rest_of_the_pool(tiny_model_dir, gsm8k_dir, tmp_path, monkeypatch):
    from curate.llm.data import load_data
    from rl import grpo
    from curate.staged import staged

    references, ref_models = [], []
    score = learnalign.score
    monkeypatch.setattr(learnalign, "score", lambda *a, **k: references.append(k.get("reference")) or score(*a, **k))
    train = grpo.train
    monkeypatch.setattr(grpo, "train", lambda s, *a, **k: ref_models.append(s.ref_model) or train(s, *a, **k))
    pool = load_data(str(gsm8k_dir / "train.jsonl"), limit=16)
    config = learnalign.LearnAlignConfig(num_rollouts=4, max_new_tokens=12, backend="hf",
                                         gradients=GradientConfig(projection_dim=256))
    summary = staged(str(tiny_model_dir), pool, [4, 4], tmp_path, config=config, steps_per_stage=1,
                     cache_dir=False, device="cpu", use_cpu=True, progress=False)
    assert [s["pool_before"] for s in summary] == [16, 12]
    first, second = (set(s["selected_pool_rows"]) for s in summary)
    assert len(first) == len(second) == 4 and not first & second
    for s in summary:
        assert (Path(s["policy"]) / "model.safetensors").exists()  # LoRA merged: the next stage's policy
    assert json.loads((tmp_path / "stages.json").read_text()) == summary
    # Stage 1 keeps the run's reference policy (the original model) for its scores and its GRPO.
    assert references == [None, str(tiny_model_dir)] and ref_models == [None, str(tiny_model_dir)]


@pytest.mark.parametrize("change, message", [
    ({"--n": "0"}, "--n must be"),
    ({"--n": "999"}, "--n must be"),
    ({"--task": "nope"}, "unknown task"),
    ({"--target-modules": "conv1"}, "no LoRA-able linear layers"),
])
def test_bad_input_is_refused_before_any_output(tiny_model_dir, gsm8k_dir, tmp_path, capsys, change, message):
    args = {"--dataset": str(gsm8k_dir / "train.jsonl"), "--limit": "8", "--model": str(tiny_model_dir),
            "--n": "2", "--out": str(tmp_path / "out"), "--device": "cpu"}
    args.update(change)
    assert curate_main(["select", "learnalign", *[x for kv in args.items() for x in kv]]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --prompt-column/--answer-column map a user's columns onto the task's: the run on renamed columns
# gives the scores of the run on the task's own names. Kills flags that are accepted but ignored
# (the renamed run would fail on the missing 'question' column) or mapped the wrong way round.
def test_column_flags_read_a_dataset_with_other_column_names(tiny_model_dir, gsm8k_dir, tmp_path, capsys):
    rows = [json.loads(line) for line in (gsm8k_dir / "train.jsonl").read_text().splitlines()[:6]]
    data = tmp_path / "renamed.jsonl"
    data.write_text("".join(json.dumps({"problem": r["question"], "solution": r["answer"]}) + "\n" for r in rows))
    common = ["--model", str(tiny_model_dir), "--n", "2", "--num-rollouts", "2", "--max-new-tokens", "8",
              "--no-warmup", "--projection-dim", "128", "--device", "cpu", "--backend", "hf",
              "--cache-dir", str(tmp_path / "cache")]
    assert curate_main(["select", "learnalign", "--dataset", str(data), "--prompt-column", "problem",
                        "--answer-column", "solution", "--out", str(tmp_path / "renamed"), *common]) == 0
    assert curate_main(["select", "learnalign", "--dataset", str(gsm8k_dir / "train.jsonl"), "--limit", "6",
                        "--out", str(tmp_path / "own"), *common]) == 0
    renamed, own = ([json.loads(line) for line in (tmp_path / name / "scored.jsonl").read_text().splitlines()]
                    for name in ("renamed", "own"))
    assert [r["success_rate"] for r in renamed] == [r["success_rate"] for r in own]
    assert [r["score"] for r in renamed] == pytest.approx([r["score"] for r in own], abs=1e-6)
    capsys.readouterr()
    assert curate_main(["select", "learnalign", "--dataset", str(data), "--prompt-column", "question",
                        "--out", str(tmp_path / "bad"), *common]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--prompt-column 'question'" in err and not (tmp_path / "bad").exists()


def test_dataset_without_the_task_columns_is_refused(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(4)))
    assert curate_main(["select", "learnalign", "--dataset", str(data), "--model", str(tiny_model_dir),
                        "--n", "2", "--out", str(tmp_path / "out")]) == 2
    assert "column" in capsys.readouterr().err and not (tmp_path / "out").exists()


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_same_selection(out: Path, expected: Path) -> None:
    """Two ``curate select learnalign`` outputs agree: equal success rates, scores within 1e-6, the
    same selected rows in the same order; and the scores are not degenerate (not all equal)."""
    got, want = read_jsonl(out / "scored.jsonl"), read_jsonl(expected / "scored.jsonl")
    assert [r["success_rate"] for r in got] == [r["success_rate"] for r in want]
    for column in ("learnability", "score", "gradient_score"):
        np.testing.assert_allclose([r[column] for r in got], [r[column] for r in want], rtol=0, atol=1e-6)
    assert np.ptp([r["score"] for r in want]) > 0
    assert [r["question"] for r in read_jsonl(out / "selected.jsonl")] == \
        [r["question"] for r in read_jsonl(expected / "selected.jsonl")]


def launch_two_ranks(tmp_path: Path, args: list[str], chunk_size: int, cache_prefix: str) -> None:
    """``curate ARGS`` under ``accelerate launch`` with two gloo ranks on the CPU, into tmp_path/two:
    each rank keeps its own cache shard, and exactly one writes the results."""
    import subprocess
    import sys

    script = tmp_path / "curate_chunks.py"
    script.write_text(runner_source(chunk_size=chunk_size))
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script), *args,
              "--out", str(tmp_path / "two"), "--cache-dir", str(tmp_path / "cache-two")]
    run = subprocess.run(launch, capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[1],
                         env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert run.returncode == 0, run.stderr[-3000:]
    shards = {p.name.split("-")[-1] for p in (tmp_path / "cache-two").glob(f"{cache_prefix}*")}
    assert shards == {"rank0of2.jsonl", "rank1of2.jsonl"}
    assert run.stdout.count("selected:") == 1  # one writer


# Kills sharding that changes the result: ranks taking rows r, r + world, ... (their chunks, and the
# seeds of their rollouts, then differ from one process's), a per-rank rollout seed, or a rank that
# aligns to the mean of its own rows. Two gloo ranks on the CPU, mixed rewards (gsm8k-coin), chunks
# of three rows: rank 0 holds rows 0-2 and 6-8, rank 1 rows 3-5 and 9; one rank writes.
@pytest.mark.slow
def test_two_process_scores_equal_one_process_scores(tiny_model_dir, gsm8k_dir, tmp_path, monkeypatch):
    args = ["select", "learnalign", "--dataset", str(gsm8k_dir / "train.jsonl"), "--limit", "10",
            "--model", str(tiny_model_dir), "--n", "3", "--num-rollouts", "4", "--max-new-tokens", "8",
            "--no-warmup", "--projection-dim", "256", "--device", "cpu", "--backend", "hf",
            "--task", COIN]
    launch_two_ranks(tmp_path, args, chunk_size=3, cache_prefix="rollouts-")
    assert curate_in_process(monkeypatch, 3, [*args, "--out", str(tmp_path / "one"),
                                              "--cache-dir", str(tmp_path / "cache-one")]) == 0
    assert_same_selection(tmp_path / "two", tmp_path / "one")


# select cdas under accelerate launch: each rank computes IFD on whole chunks of 7 rows (rank 0:
# rows 0-6 and 14-20, rank 1: 7-13), the shards are gathered and one rank writes what one process
# writes. Kills a rank that scores only its own rows and writes them, or rows merged out of order.
@pytest.mark.slow
def test_cdas_under_two_processes_equals_one_process(tiny_model_dir, gsm8k_dir, tmp_path, monkeypatch):
    args = ["select", "cdas", "--dataset", str(gsm8k_dir / "train.jsonl"), "--limit", "21", "--model",
            str(tiny_model_dir), "--num-clusters", "2", "--ratio", "0.5", "--device", "cpu"]
    launch_two_ranks(tmp_path, args, chunk_size=7, cache_prefix="ifd-")
    assert curate_in_process(monkeypatch, 7, [*args, "--out", str(tmp_path / "one"),
                                              "--cache-dir", str(tmp_path / "cache-one")]) == 0
    two, one = ([json.loads(line) for line in (tmp_path / name / "scored.jsonl").read_text().splitlines()]
                for name in ("two", "one"))
    assert [r["row_index"] for r in two] == list(range(21)) and [r["question"] for r in two] == [r["question"] for r in one]
    np.testing.assert_allclose([r["ifd"] for r in two], [r["ifd"] for r in one], rtol=1e-6)
    assert [r["selected"] for r in two] == [r["selected"] for r in one] and any(r["selected"] for r in one)


# Kills the silent fallback: a pool with no 0 < p < 1 ranks only by the seeded tie-break, which
# must be said on stderr (a logged warning) and in report.json, and not when one row is learnable.
def test_pool_without_learnable_rows_warns_and_reports(caplog):
    import datasets

    ds = datasets.Dataset.from_dict({"score": [0.0] * 4, "learnability": [0.0] * 4, "gradient_score": [0.1] * 4,
                                     "response_tokens": [3.0, 4.0, 5.0, 6.0], "success_rate": [0.0, 1.0, 0.0, 0.0]})
    with caplog.at_level("WARNING", logger="curatekit.learnalign"):
        chosen = learnalign.select(ds, 2, "learnalign")
    assert [r.getMessage() for r in caplog.records] == [f"curatekit: warning: {learnalign.NO_LEARNABLE_ROWS}"]
    report = learnalign.report(ds, chosen, "learnalign")
    assert report["learnable_rows"] == 0 and report["warning"] == learnalign.NO_LEARNABLE_ROWS
    caplog.clear()
    learnable = ds.remove_columns(["success_rate", "score"]).add_column("success_rate", [0.0, 0.5, 0.0, 1.0])
    learnable = learnable.add_column("score", [0.0, 0.3, 0.1, 0.0])  # two positive scores for n = 2
    report = learnalign.report(learnable, learnalign.select(learnable, 2, "learnalign"), "learnalign")
    assert report["learnable_rows"] == 1 and "warning" not in report and not caplog.records


# Kills a report that hides a selection reaching past the positive LearnAlign scores.
def test_report_says_when_n_exceeds_the_positive_scores():
    import datasets

    ds = datasets.Dataset.from_dict({"score": [0.3, 0.0, -0.1, 0.2], "response_tokens": [3.0, 4.0, 5.0, 6.0],
                                     "success_rate": [0.5, 0.0, 0.25, 0.75]})
    report = learnalign.report(ds, learnalign.select(ds, 3, "learnalign"), "learnalign")
    assert report["positive_scores"] == 2 and report["selected_beyond_positive"] == 1
    assert "exceeds the 2 rows with a positive" in report["warning"]
    report = learnalign.report(ds, learnalign.select(ds, 2, "learnalign"), "learnalign")
    assert report["selected_beyond_positive"] == 0 and "warning" not in report


def test_baselines_rank_by_their_own_column():
    import datasets

    from curate.core.errors import BadInputError

    ds = datasets.Dataset.from_dict({
        "score": [0.1, 0.4, 0.0, 0.2], "learnability": [0.25, 0.1875, 0.0, 0.2344],
        "gradient_score": [0.3, 0.1, 0.9, 0.2], "gradient_cosine_score": [0.1, 0.8, 0.2, 0.7],
        "response_tokens": [10.0, 50.0, 20.0, 5.0],
        "ifd": [0.9, 1.2, 0.95, 0.5], "success_rate": [0.5, 0.25, 1.0, 0.375]})
    pick = lambda method, n=2: sorted(learnalign.select(ds, n, method)["response_tokens"])  # noqa: E731
    assert pick("learnalign") == [5.0, 50.0]  # rows 1 (score 0.4) and 3 (0.2)
    assert pick("learnability") == [5.0, 10.0]
    assert pick("gradient") == [10.0, 20.0]
    assert pick("gradient_cosine") == [5.0, 50.0]
    assert pick("length") == [20.0, 50.0]
    assert pick("ifd") == [10.0, 20.0]  # IFD >= 1 is never picked
    assert learnalign.select(ds, 3, "random", seed=4)["score"] == learnalign.select(ds, 3, "random", seed=4)["score"]
    with pytest.raises(BadInputError, match="n=5 is larger"):
        learnalign.select(ds, 5)
    with pytest.raises(BadInputError, match="no 'ifd' column"):
        learnalign.select(ds.remove_columns("ifd"), 2, "ifd")


# Kills vLLM rollouts that give every prompt of a chunk the same seed (two copies of a prompt would
# then get the same G completions, and all prompts share one random stream), and vLLM rollout
# chunks whose seed depends on where a run restarted. One engine serves both runs (startup is slow).
@pytest.mark.vllm
def test_vllm_rollouts_seed_every_prompt_and_resume_to_the_same_completions(tiny_model_dir, gsm8k_dir, tmp_path,
                                                                           monkeypatch):
    pytest.importorskip("vllm", reason="vLLM is installed in .venv-vllm only (bash .ci/setup --vllm)")
    os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "fork")  # pytest has no __main__ guard
    from curate.llm import generation
    from curate.llm.data import load_data
    from eval.tasks import get_task

    engine = generation.load_generator(tiny_model_dir, "vllm", max_model_len=1024, progress=False)
    monkeypatch.setattr(generation, "load_generator", lambda *args, **kwargs: engine)
    monkeypatch.setattr(engine, "close", lambda: None)
    rows = get_task("gsm8k").rows_from(load_data(str(gsm8k_dir / "train.jsonl"), limit=3)).select([0, 0, 1, 2])
    config = learnalign.LearnAlignConfig(num_rollouts=4, max_new_tokens=8, backend="vllm", chunk_size=2)
    try:
        first = learnalign.rollouts(rows, str(tiny_model_dir), config, tmp_path / "rollouts-{key}.jsonl", False)[1]
        assert first[0] != first[1] and len({c.text for c in first[0]}) > 1  # the same prompt twice, two streams
        cache = next(tmp_path.glob("rollouts-*.jsonl"))
        cache.write_text(cache.read_text().splitlines()[0] + "\n")  # as if killed after the first chunk
        again = learnalign.rollouts(rows, str(tiny_model_dir), config, tmp_path / "rollouts-{key}.jsonl", False)[1]
        assert again == first
    finally:
        generation.VLLMGenerator.close(engine)

"""LearnAlign: the O(n k) score equals the n x n definition (Eq. 6-7), V = p(1 - p), the batched
per-sample GRPO gradients equal one-backward-per-sample ones and the GRPO loss written out by hand,
the projection preserves inner products, and the whole pipeline (warmup, rollouts, gradients,
scores, selection, GRPO on the selection; a two-stage run) works offline."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from curate import learnalign
from curate.cli import main as curate_main
from curate.grad_features import (CountSketch, GradientConfig, RolloutGroup, batched_features, group_advantages,
                                  normalise, prepare_lora, reference_features)


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
    a, b = learnalign.ranking(values, seed=1), learnalign.ranking(values, seed=1)
    assert a.tolist() == b.tolist() and set(a[:4]) == {0, 2, 3, 5} and a[4:].tolist() == [1, 4]
    orders = {tuple(learnalign.ranking(values, seed=s)[:4]) for s in range(10)}
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


def test_features_are_the_projected_gradient_of_the_grpo_loss(lora_model):
    """The GRPO loss written out from full logits: -(1/G) Σ_g mean_t (Â_g + β(π_ref/π - 1)) log π."""
    model, config = lora_model
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
        total = total - (coeff * logp).mean() / len(group.completion_ids)
    total.backward()
    sketch = CountSketch([m.weight.numel() for _, m in layers], config.projection_dim, config.seed)
    by_hand = sketch.project([m.weight.grad.reshape(1, -1) for _, m in layers])
    model.zero_grad()
    ours = batched_features(model, [group], config, pad_id=0, progress=False)
    torch.testing.assert_close(ours, by_hand, rtol=1e-3, atol=1e-6)


def test_model_without_lora_able_layers_is_refused(tiny_model_dir):
    from curate.grad_features import check_lora_targets
    from eval.errors import BadInputError

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
    p = np.array([r["success_rate"] for r in scored])
    assert np.all((p * 4) == np.round(p * 4))  # G = 4 rollouts
    np.testing.assert_allclose([r["learnability"] for r in scored], p * (1 - p))
    top = sorted((r["score"] for r in scored), reverse=True)[:6]
    np.testing.assert_allclose(sorted((r["score"] for r in selected), reverse=True), top)
    report = json.loads((out / "report.json").read_text())
    assert report["rows"] == 24 and report["selected"] == 6 and sum(report["success_rate"]["histogram"]["counts"]) == 24
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


def test_grpo_trains_on_the_selection(pipeline, tiny_model_dir, tmp_path):
    from rl.staged import grpo_argv, run_grpo

    out, _ = pipeline
    argv = grpo_argv(None, model_name_or_path=tiny_model_dir, task="gsm8k", dataset=out / "selected.jsonl",
                     output_dir=tmp_path / "grpo", max_steps=2, num_generations=4, per_device_train_batch_size=8,
                     max_completion_length=12, use_cpu="true")
    trainer = run_grpo(argv)
    assert trainer.state.global_step == 2 and len(trainer.train_dataset) == 6
    assert (tmp_path / "grpo" / "adapter_model.safetensors").exists()


def test_two_stage_run_rescores_the_rest_of_the_pool(tiny_model_dir, gsm8k_dir, tmp_path):
    from eval.data import load_data
    from rl.staged import staged

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


def test_dataset_without_the_task_columns_is_refused(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(4)))
    assert curate_main(["select", "learnalign", "--dataset", str(data), "--model", str(tiny_model_dir),
                        "--n", "2", "--out", str(tmp_path / "out")]) == 2
    assert "column" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_scoring_splits_across_processes_under_accelerate_launch(tiny_model_dir, gsm8k_dir, tmp_path):
    """Two gloo ranks on the CPU: each rolls out and scores its own shard (its own cache file), the
    pool's mean gradient is summed across ranks, and the first rank writes every row's scores."""
    import subprocess
    import sys

    out = tmp_path / "out"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "-m", "curate.cli", "select", "learnalign", "--dataset", str(gsm8k_dir / "train.jsonl"),
              "--limit", "10", "--model", str(tiny_model_dir), "--n", "3", "--out", str(out), "--num-rollouts", "4",
              "--max-new-tokens", "8", "--no-warmup", "--projection-dim", "256", "--device", "cpu",
              "--backend", "hf", "--cache-dir", str(tmp_path / "cache")]
    run = subprocess.run(launch, capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[1],
                         env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert run.returncode == 0, run.stderr[-3000:]
    assert {p.name.split("-")[-1] for p in (tmp_path / "cache").glob("rollouts-*")} == {"rank0of2.jsonl", "rank1of2.jsonl"}
    scored = [json.loads(line) for line in (out / "scored.jsonl").read_text().splitlines()]
    assert len(scored) == 10 and all(r["success_rate"] is not None and r["score"] is not None for r in scored)
    assert run.stdout.count("selected:") == 1  # one writer


def test_baselines_rank_by_their_own_column():
    import datasets

    from eval.errors import BadInputError

    ds = datasets.Dataset.from_dict({
        "score": [0.1, 0.4, 0.0, 0.2], "learnability": [0.25, 0.1875, 0.0, 0.2344],
        "gradient_score": [0.3, 0.1, 0.9, 0.2], "response_tokens": [10.0, 50.0, 20.0, 5.0],
        "ifd": [0.9, 1.2, 0.95, 0.5], "success_rate": [0.5, 0.25, 1.0, 0.375]})
    pick = lambda method, n=2: sorted(learnalign.select(ds, n, method)["response_tokens"])  # noqa: E731
    assert pick("learnalign") == [5.0, 50.0]  # rows 1 (score 0.4) and 3 (0.2)
    assert pick("learnability") == [5.0, 10.0]
    assert pick("gradient") == [10.0, 20.0]
    assert pick("length") == [20.0, 50.0]
    assert pick("ifd") == [10.0, 20.0]  # IFD >= 1 is never picked
    assert learnalign.select(ds, 3, "random", seed=4)["score"] == learnalign.select(ds, 3, "random", seed=4)["score"]
    with pytest.raises(BadInputError, match="n=5 is larger"):
        learnalign.select(ds, 5)
    with pytest.raises(BadInputError, match="no 'ifd' column"):
        learnalign.select(ds.remove_columns("ifd"), 2, "ifd")

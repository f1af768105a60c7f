"""The mini-lab's scientific pieces: the strict arith verifier, the learnability gate, and the
paired statistics behind every comparison."""
from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from curate.pipeline.report import UnlearnablePool, check_gate
from curate.selection import success_rate_spread as pool_spread
from eval.metrics import paired_comparison
from eval.tasks import TaskOptions
from eval.tasks.arith import ArithConfig, check_lines, expected_lines, make_problem, verify


def _problem(seed: int = 3) -> dict:
    return make_problem(random.Random(seed), ArithConfig(min_steps=3, max_steps=3, max_digits=1))


def test_worked_answers_pass_the_strict_verifier():
    rng = random.Random(0)
    for _ in range(200):
        p = make_problem(rng, ArithConfig(max_steps=6, max_digits=1))
        assert check_lines(p["question"], p["answer"]) == ""
        assert expected_lines(p["question"]) == p["answer"].splitlines()[:-1]


def test_strict_verifier_rejects_a_right_answer_reached_through_a_wrong_line():
    # Kills a "strict" mode that reads only the final number (59 % of rewarded rollouts did this).
    p = _problem()
    lines = p["answer"].splitlines()
    a, op, b, _, c = lines[0].split()
    lines[0] = f"{a} {op} {b} = {int(c) + 1}"  # a wrong intermediate result, the final one right
    wrong_line = "\n".join(lines)
    skipped = "\n".join(p["answer"].splitlines()[1:])  # a missing step
    row = {"question": p["question"], "gold": p["answer"].rsplit("#### ", 1)[1], "answer": p["answer"]}
    strict = verify([row], [[p["answer"], wrong_line, skipped]], TaskOptions(answer_mode="lines"))[0]
    assert [v.correct for v in strict] == [True, False, False]
    assert strict[1].error.startswith("line 1: wrote") and "expected" in strict[2].error
    lenient = verify([row], [[p["answer"], wrong_line, skipped]], TaskOptions(answer_mode="flexible"))[0]
    assert [v.correct for v in lenient] == [True, True, True]


def test_the_gate_stops_an_unlearnable_pool_and_passes_a_learnable_one():
    from curate import demo

    gate = demo.load("default").gate  # the demo's gate, as its pipeline file sets it
    unlearnable = [0.0] * 152 + [0.125] * 30 + [1.0] * 10  # the measured pool of issue 14
    with pytest.raises(UnlearnablePool, match=r"p=0 79% \(limit <= 30%\).*0<p<1 16% \(limit >= 50%\).*histogram"):
        check_gate(unlearnable, gate, "demo")
    learnable = [0.0] * 40 + [0.25, 0.5, 0.75] * 40 + [1.0] * 30
    spread = check_gate(learnable, gate, "demo")  # passes
    assert spread == pool_spread(learnable)
    assert spread["histogram"]["counts"][0] == 40 and spread["histogram"]["counts"][-1] == 30
    assert sum(spread["histogram"]["counts"]) == len(learnable)
    with pytest.raises(UnlearnablePool, match=r"p=1 40%"):
        check_gate([1.0] * 40 + [0.5] * 60, gate, "demo")


def test_paired_comparison_matches_mcnemar_by_hand():
    a = [[1, 1, 0, 1, 0, 1, 1, 0]]
    b = [[0, 1, 0, 0, 0, 0, 0, 1]]
    result = paired_comparison(a, b)
    # Discordant pairs: a right and b wrong at 0, 3, 5, 6 (4); b right and a wrong at 7 (1).
    # Exact McNemar: 2 * P(X <= 1), X ~ Bin(5, 1/2) = 2 * (1 + 5) / 32 = 0.375.
    assert result["discordant"] == [4, 1]
    assert result["p_value"] == pytest.approx(0.375)
    assert result["mean_diff"] == pytest.approx(3 / 8)
    # Pooled over seeds: two seeds against one start row; wins at problems 0, 3 (seed 0) and 0, 2
    # (seed 1), no losses: 2 * P(X <= 0), X ~ Bin(4, 1/2) = 2 / 16 = 0.125.
    pooled = paired_comparison([[1, 1, 0, 1, 0], [1, 1, 1, 0, 0]], [0, 1, 0, 0, 0])
    assert pooled["discordant"] == [4, 0] and pooled["p_value"] == pytest.approx(0.125)
    assert pooled["per_seed"] == pytest.approx([0.4, 0.4])


def test_paired_bootstrap_matches_the_exact_bootstrap_distribution():
    # Four problems, per-problem differences averaged over two seeds: the bootstrap distribution
    # is exactly the mean over all 4^4 resamples; its 2.5 / 97.5 percentiles by enumeration.
    a = np.array([[1, 1, 0, 1], [1, 0, 0, 1]])
    b = np.array([[0, 0, 0, 1], [0, 0, 1, 1]])
    d = (a - b).mean(0)
    means = sorted(np.mean([d[i] for i in idx]) for idx in itertools.product(range(4), repeat=4))
    exact = np.percentile(means, [2.5, 97.5])
    result = paired_comparison(a, b, n_boot=40000, seed=1)
    assert result["ci95"] == pytest.approx(list(exact), abs=0.07)
    assert result["mean_diff"] == pytest.approx(d.mean())


def test_scores_get_a_sign_flip_p_value_by_hand():
    # Sampled accuracy: per-problem shares of k samples right (not 0/1), so McNemar does not apply.
    # Five problems: the p-value by enumerating all 2^5 sign patterns of the differences, by hand.
    # Kills a McNemar on scores (it counts only the exact 0/1 pairs) and a one-sided test.
    a = np.array([[0.75, 0.5, 1.0, 0.25, 0.5]])
    b = np.array([[0.25, 0.5, 0.5, 0.5, 0.0]])
    d = (a - b)[0]
    flips = [abs(np.mean([s * x for s, x in zip(signs, d)])) for signs in itertools.product((1, -1), repeat=5)]
    by_hand = np.mean([f >= abs(d.mean()) - 1e-12 for f in flips])
    result = paired_comparison(a, b, n_boot=10000, seed=0)
    assert result["p_value"] == pytest.approx(by_hand) and 0 < by_hand < 1
    assert result["mean_diff"] == pytest.approx(d.mean())
    # Many problems: seeded random flips, close to a normal approximation's two-sided p.
    rng = np.random.default_rng(3)
    big_a, big_b = rng.uniform(0, 1, (2, 400)) + 0.03, rng.uniform(0, 1, (2, 400))
    from scipy.stats import ttest_rel

    p = paired_comparison(np.clip(big_a, 0, 1), big_b, n_boot=20000)["p_value"]
    reference = ttest_rel(np.clip(big_a, 0, 1).mean(0), big_b.mean(0)).pvalue
    assert p == pytest.approx(reference, abs=0.03)


def test_an_effect_needs_the_interval_and_every_seed():
    strong = paired_comparison([[1] * 40 + [0] * 10] * 3, [[0] * 10 + [1] * 10 + [0] * 30] * 3)
    assert strong["effect"] and strong["ci95"][0] > 0
    split = paired_comparison([[1] * 30 + [0] * 20, [0] * 50], [[0] * 50, [0] * 10 + [1] * 10 + [0] * 30])
    assert not split["effect"]  # the seeds disagree in sign
    with pytest.raises(ValueError, match="do not pair up"):
        paired_comparison([[1, 0]], [[1, 0, 1]])


def test_sft_demonstrations_slip_only_where_the_preset_says(tmp_path):
    # The demo's systematic SFT error: for the chosen items about half of the answers end one too
    # high, the worked lines untouched; other items, and the pool and test splits, stay clean.
    # Kills a slip applied to every item, to the pool/test splits, or to the worked lines.
    from curate import demo
    from curate.llm.data import load_data
    from curate.pipeline.generators import write_splits
    from eval.tasks import get_task
    from eval.tasks.arith import question_item

    data = demo.load("smoke").data  # the demo's data section, 2000 SFT problems
    preset = data.config
    paths = write_splits("arith", preset, {**data.splits, "sft": 2000}, data.seed, tmp_path)
    slipped_by_item: dict[bool, list[bool]] = {True: [], False: []}
    for row in load_data(str(paths["sft"])):
        body, _, final = row["answer"].rpartition("#### ")
        last = int(body.strip().splitlines()[-1].split("=")[-1])
        assert [line for line in body.strip().splitlines()] == expected_lines(row["question"])
        assert int(final) == last + int(row["slipped"])
        slipped_by_item[question_item(row["question"]) in preset.slip_items].append(row["slipped"])
    assert not any(slipped_by_item[False])
    assert abs(np.mean(slipped_by_item[True]) - preset.slip_rate) < 0.07 and len(slipped_by_item[True]) > 300
    for split in ("pool", "test"):
        rows = get_task("arith").rows_from(load_data(str(paths[split])))
        judged = verify(list(rows), [[r["answer"]] for r in rows], TaskOptions(answer_mode="lines"))
        assert all(v[0].correct for v in judged) and "slipped" not in rows.column_names

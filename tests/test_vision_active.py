"""The active-learning family: the open-set pool and its oracle, the round loop's bookkeeping and
metrics, the baselines (uncertainty sampling, LfOSA), resume after SIGKILL, bad input.

Wrong implementations killed (tests/mutants.py, block "active-learning family"): an initial set
drawn from every class (unknowns labelled for free), an oracle that answers a repeated query, a
query check that lets duplicates through, entropy with the wrong sign (certain images first),
LfOSA's GMM taking the low-mean component, LfOSA keeping images its detector calls unknown, an
AUC over rounds instead of queries, a checkpoint without the unknown set."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from curate.cli import main as curate_main
from vision.active.baselines import known_probability, uncertainty
from vision.active.experiment import area_under_curve, check_query
from vision.active.pool import UNKNOWN, OpenSetConfig, Oracle, open_set_pool
from vision.data import load_images
from vision.run import run_experiment
from vision.train import KILL_AFTER_EPOCH

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "vision"
TINY = {"openset": {"rounds": 2, "budget": 30}, "train": {"epochs": 25, "progress": False}}


@pytest.fixture(scope="module")
def digits():
    return load_images("digits", seed=0)


def test_the_pool_hides_unknown_classes_and_starts_from_a_seeded_known_set(digits):
    pool = open_set_pool(digits, OpenSetConfig(known=6, initial=0.05, seed=3))
    assert pool.openness == pytest.approx(0.4) and pool.num_known == 6
    assert set(pool.test_labels.tolist()) == set(range(6))  # relabelled; unknown test images dropped
    assert len(pool.test_labels) == int(np.isin(digits.test_labels.numpy(), range(6)).sum())
    assert pool.is_known(pool.initial).all()  # no unknown image is labelled for free
    assert set(pool.classes[pool.initial]) == set(range(6))  # every known class has a labelled image
    known_pool = int(pool.is_known(np.arange(len(pool.classes))).sum())
    assert len(pool.initial) == round(0.05 * known_pool)
    again = open_set_pool(digits, OpenSetConfig(known=6, initial=0.05, seed=3))
    other = open_set_pool(digits, OpenSetConfig(known=6, initial=0.05, seed=4))
    assert np.array_equal(pool.initial, again.initial) and not np.array_equal(pool.initial, other.initial)
    named = open_set_pool(digits, OpenSetConfig(known_classes=[2, 4, 6, 8]))
    assert set(named.classes[named.initial]) == {2, 4, 6, 8} and named.openness == pytest.approx(0.6)


def test_the_oracle_answers_each_image_once_and_counts_the_queries(digits):
    pool = open_set_pool(digits, OpenSetConfig(known_classes=[3, 5]))
    oracle = Oracle(pool.answers(), asked=pool.initial)
    rows = np.setdiff1d(np.arange(40), pool.initial)
    answers = oracle.label(rows)
    expected = np.where(pool.classes[rows] == 3, 0, np.where(pool.classes[rows] == 5, 1, UNKNOWN))
    assert np.array_equal(answers, expected) and oracle.calls == len(rows)
    with pytest.raises(ValueError, match="twice"):
        oracle.label(rows[:1])
    with pytest.raises(ValueError, match="twice"):
        oracle.label(pool.initial[:1])  # the initial labelled images are not asked again


def test_a_query_must_be_distinct_unlabelled_and_of_the_budget():
    unlabeled = np.arange(10, 20)
    assert check_query([11, 12, 13], unlabeled, 3, "x").tolist() == [11, 12, 13]
    assert len(check_query(unlabeled, unlabeled, 50, "x")) == 10  # the pool ran out: all of it
    for bad in ([11, 11, 12], [1, 12, 13], [11, 12]):
        with pytest.raises(RuntimeError, match="strategy 'x'"):
            check_query(bad, unlabeled, 3, "x")


def test_uncertainty_measures_rank_the_uncertain_row_first():
    p = torch.tensor([[0.98, 0.01, 0.01], [0.4, 0.35, 0.25], [0.6, 0.39, 0.01]])
    entropy = uncertainty(p, "entropy")
    assert int(entropy.argmax()) == 1 and int(entropy.argmin()) == 0
    assert float(uncertainty(torch.full((1, 4), 0.25), "entropy")) == pytest.approx(np.log(4))
    assert int(uncertainty(p, "margin").argmax()) == 1  # smallest gap between the top two
    assert uncertainty(p, "least_confidence").tolist() == pytest.approx([0.02, 0.6, 0.4])


def test_lfosa_prefers_the_high_activation_mode_and_drops_predicted_unknowns():
    rng = np.random.default_rng(0)
    mav = np.concatenate([rng.normal(2, 0.2, 30), rng.normal(8, 0.2, 30), rng.normal(5, 1, 10)])
    predicted = np.array([0] * 60 + [2] * 10)  # the last ten: predicted unknown (class K = 2)
    score = known_probability(mav, predicted, 2, seed=0)
    assert (score[30:60] > 0.9).all() and (score[:30] < 0.1).all()
    assert (score[60:] == 0).all()


def test_area_under_curve_is_over_queries_spent():
    assert area_under_curve([0, 50, 100], [0.5, 0.7, 0.9]) == pytest.approx(0.7)
    assert area_under_curve([0, 10, 100], [0.0, 1.0, 1.0]) == pytest.approx(0.95)


def test_open_set_queries_separate_the_baselines(digits):
    # The family's premise, on the real round loop: uncertainty sampling spends its budget on
    # unknown classes (they look uncertain), LfOSA's detector on known ones, random in between.
    results = {name: run_experiment(name, TINY) for name in ("random_query", "uncertainty", "lfosa")}
    precision = {name: r["final"]["mean_precision"] for name, r in results.items()}
    assert precision["lfosa"] > 0.8 and precision["uncertainty"] < 0.35
    assert precision["uncertainty"] < precision["random_query"] < precision["lfosa"]
    for result in results.values():
        assert result["oracle_calls"] == 2 * 30 and len(result["rounds"]) == 3
        queried = [i for r in result["rounds"][:-1] for i in r["queried"]]
        assert len(set(queried)) == 60
        assert result["final"]["labeled"] + result["final"]["unknown_queried"] == result["initial"] + 60


def test_a_run_is_determined_by_its_seeds():
    first, again = (run_experiment("uncertainty", TINY)["rounds"] for _ in range(2))
    strip = lambda rounds: [{k: v for k, v in r.items() if k != "seconds"} for r in rounds]  # noqa: E731
    assert strip(first) == strip(again)
    other = run_experiment("uncertainty", {**TINY, "train": {**TINY["train"], "seed": 1}})["rounds"]
    assert strip(other) != strip(first)


CHILD = """
import json, sys
from pathlib import Path
from vision.run import run_experiment
folder = Path(sys.argv[1])
config = {"openset": {"rounds": 2, "budget": 20},
          "train": {"epochs": 12, "progress": False, "checkpoint_dir": str(folder / "ckpt")}}
result = run_experiment("uncertainty", config)
rounds = [{k: v for k, v in r.items() if k != "seconds"} for r in result["rounds"]]
(folder / "rounds.json").write_text(json.dumps({"rounds": rounds, "calls": result["oracle_calls"]}))
"""


def _active_child(folder: Path, kill_after: int | None) -> int:
    """The run in a fresh interpreter (not forked: a fork of a busy test worker can hang in its
    thread pools); its exit code (-9: SIGKILLed by the test hook)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop(KILL_AFTER_EPOCH, None)
    if kill_after is not None:
        env[KILL_AFTER_EPOCH] = str(kill_after)
    return subprocess.run([sys.executable, "-c", CHILD, str(folder)], env=env, timeout=600).returncode


def test_a_killed_run_resumes_to_the_identical_queries(tmp_path):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    whole.mkdir()
    resumed.mkdir()
    assert _active_child(whole, None) == 0
    assert _active_child(resumed, 1) == -9
    assert not (resumed / "rounds.json").exists()
    assert _active_child(resumed, None) == 0
    assert json.loads((whole / "rounds.json").read_text()) == json.loads((resumed / "rounds.json").read_text())


@pytest.mark.parametrize("bad, message", [
    ({"openset": {"known": 10}}, "known classes [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] must be a strict subset"),
    ({"openset": {"budgt": 5}}, "unknown field 'openset.budgt' (did you mean 'openset.budget'?)"),
    ({"openset": {"initial": 0}}, "openset.initial must be in (0, 1), got 0"),
    ({"method": {"measure": "variance"}}, "method.measure must be one of entropy, margin, least_confidence"),
])
def test_bad_input_is_one_line_before_any_work(tmp_path, capsys, bad, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**yaml.safe_load((RECIPES / "uncertainty.yaml").read_text()), **bad}))
    out = tmp_path / "out" / "r.json"
    assert curate_main(["vision", "uncertainty", "--config", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out").exists()

"""The federated family (FedAvg, FedNTD, FedLMD, FedLMD-Tf): the spec's property tests 1-4 (the
majority split, the LMD target, the teacher-free target, the drivers' integration, Flower's
included), the partitions, resume after SIGKILL and bad input. Each test names the wrong
implementation it catches (see the federated block of tests/mutants.py)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from curate.cli import main as curate_main
from forked import run_forked
from vision.federated.base import fedavg, local_train, not_true_log_probs, sample_clients
from vision.federated.experiment import (FederatedExperimentConfig, FederatedTrainConfig, PartitionConfig,
                                         build_federation, run_inprocess)
from vision.federated.fedlmd import lmd_kd, lmd_target
from vision.federated.fedlmd_tf import lmd_tf_kd, lmd_tf_target
from vision.federated.fedntd import not_true_kd
from vision.federated.partition import dirichlet_partition, majority_classes, shard_partition
from vision.registry import build_method
from vision.train import KILL_AFTER_EPOCH

ROOT = Path(__file__).resolve().parents[1]


def _mask(classes, c: int = 10) -> torch.Tensor:
    return torch.as_tensor(np.isin(np.arange(c), classes))


# -- property 1: the majority split -----------------------------------------------------------------

@pytest.mark.parametrize("counts, majority", [
    ([50, 50, 0, 0, 0, 0, 0, 0, 0, 0], [0, 1]),
    ([7] * 10, []),  # strict >: equal counts have no majority
    ([30, 5, 5, 0, 0, 0, 0, 0, 0, 0], [0, 1, 2]),  # the mean (4) counts the zero classes
    ([10, 10, 10, 10, 10, 10, 1, 1, 1, 1], [0, 1, 2, 3, 4, 5]),  # mean 6.4; the median (10) gives none
])
def test_majority_is_strictly_above_the_mean_over_all_classes(counts, majority):
    # Kills a mean over the present classes only ([30,5,5]: {0}), a median (the last case: none),
    # >= (equal counts: all) and a top-k rule ([30,5,5]: two of three).
    assert np.flatnonzero(majority_classes(np.array(counts))).tolist() == majority


# -- property 2: the LMD target and loss ------------------------------------------------------------

def _logits(seed: int = 0, b: int = 8, c: int = 10):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, generator=g) * 2, torch.randn(b, c, generator=g) * 2, torch.randint(0, c, (b,), generator=g)


def test_lmd_target_masks_the_label_and_the_majority_and_renormalises_the_teacher():
    # Kills a target that forgets to mask y (or M_k), and one that divides by tau after masking or not at all.
    teacher, _, labels = _logits()
    majority, tau = _mask([2, 5]), 2.0
    target = lmd_target(teacher, labels, majority, tau)
    for i in range(len(labels)):
        keep = ~majority.clone()
        keep[labels[i]] = False
        assert float(target[i, ~keep].abs().max()) <= 1e-12
        expected = torch.exp(teacher[i, keep] / tau) / torch.exp(teacher[i, keep] / tau).sum()
        torch.testing.assert_close(target[i, keep], expected, rtol=1e-5, atol=1e-7)


def test_lmd_loss_is_the_forward_kl_from_the_masked_teacher_by_hand():
    # Kills KL(q_s || q_t) in place of KL(q_t || q_s), a missing tau^2, and a sum in place of the batch mean.
    teacher, student, labels = _logits(1)
    majority, tau = _mask([0, 7]), 3.0
    by_hand = 0.0
    for i in range(len(labels)):
        keep_t = ~majority.numpy().copy()
        keep_t[labels[i]] = False
        keep_s = np.ones(10, bool)
        keep_s[labels[i]] = False
        zt, zs = teacher[i].double().numpy() / tau, student[i].double().numpy() / tau
        q_t = np.where(keep_t, np.exp(zt), 0) / np.exp(zt[keep_t]).sum()
        log_q_s = zs - np.log(np.exp(zs[keep_s]).sum())
        by_hand += sum(q_t[c] * (np.log(q_t[c]) - log_q_s[c]) for c in range(10) if keep_t[c])
    expected = tau ** 2 * by_hand / len(labels)
    assert abs(float(lmd_kd(student, teacher, labels, majority, tau)) - expected) < 1e-5


def test_a_student_matching_the_teacher_on_the_minority_and_minus_1e4_on_the_majority_has_zero_loss():
    # Kills a student with y left in (its softmax then puts mass on y) and a target with y in it.
    teacher, _, labels = _logits(2)
    majority = _mask([1, 4, 6])
    student = teacher.clone()
    student[:, majority] = -1e4
    student[torch.arange(len(labels)), labels] = 5.0  # y: anything (masked for the student)
    assert float(lmd_kd(student, teacher, labels, majority, 1.0)) < 1e-6


def test_raising_a_majority_non_true_logit_of_the_student_strictly_increases_the_loss():
    # Kills masking the majority labels in the student too (the loss would not move).
    teacher, student, labels = _logits(3)
    majority = _mask([2, 5])
    labels[:] = 0  # y not in M_k
    before = float(lmd_kd(student, teacher, labels, majority, 1.0))
    raised = student.clone()
    raised[:, 5] += 3.0
    assert float(lmd_kd(raised, teacher, labels, majority, 1.0)) > before + 1e-4


def test_with_no_majority_the_lmd_loss_is_fedntd():
    # Kills an LMD loss that masks more than y when M_k is empty, or an NTD that masks something else.
    teacher, student, labels = _logits(4)
    torch.testing.assert_close(lmd_kd(student, teacher, labels, _mask([]), 2.0),
                               not_true_kd(student, teacher, labels, 2.0))


def test_the_teacher_takes_no_gradient():
    # Kills a target left attached to the teacher's graph (the teacher would be trained too).
    teacher, student, labels = _logits(5)
    teacher.requires_grad_(True)
    student.requires_grad_(True)
    for loss in (lmd_kd(student, teacher, labels, _mask([3]), 1.0), not_true_kd(student, teacher, labels, 1.0)):
        loss.backward()
    assert teacher.grad is None and student.grad is not None and bool(torch.isfinite(student.grad).all())


def test_not_true_log_probs_exclude_the_label():
    _, student, labels = _logits(6)
    log_q = not_true_log_probs(student, labels, 1.0)
    assert bool(torch.isinf(log_q[torch.arange(len(labels)), labels]).all())
    torch.testing.assert_close(log_q.exp().sum(1), torch.ones(len(labels)))


# -- property 3: the teacher-free target ------------------------------------------------------------

def test_tf_target_is_uniform_over_the_minority_classes_other_than_y():
    # Kills the authors' constant 1/(C - len(label_mask) - 1) (the batch size: rows do not sum to 1,
    # here it is even negative) and a target not renormalised when y is a majority class.
    majority = _mask([2, 5])
    for labels in (torch.tensor([2, 5, 2]), torch.tensor([0, 9, 3])):  # y in M_k, y not in M_k
        target = lmd_tf_target(labels, majority, 10)
        torch.testing.assert_close(target.sum(1), torch.ones(3))
        for i, y in enumerate(labels.tolist()):
            support = [c for c in range(10) if c != y and not majority[c]]
            assert torch.allclose(target[i, support], torch.full((len(support),), 1 / len(support)))
            assert float(target[i, [y, 2, 5]].abs().max()) == 0


def test_an_empty_support_gives_zero_loss_not_nan():
    # Kills a uniform target that divides by a zero support size, and a masked teacher softmax over
    # an all-masked row (NaN), in both FedLMD-Tf and FedLMD.
    majority = _mask(list(range(10)))
    teacher, student, labels = _logits(7)
    student.requires_grad_(True)
    for loss in (lmd_tf_kd(student, labels, majority, 1.0), lmd_kd(student, teacher, labels, majority, 1.0)):
        assert float(loss.detach()) == 0.0
        loss.backward()
    assert bool(torch.isfinite(student.grad).all())


# -- property 4: integration ------------------------------------------------------------------------

def test_the_teacher_keeps_the_received_weights_while_the_model_trains():
    # Kills a teacher that is the model itself (not a frozen copy): it would drift with local training.
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    received = {k: v.clone() for k, v in model.state_dict().items()}
    images, labels = torch.rand(40, 1, 8, 8), torch.randint(0, 10, (40,))
    result = local_train(model, build_method("fedlmd"), images, labels, _mask([1, 2]), 0.1, 2, 10, 0.9, 1e-5, 0)
    assert result.steps == 8 and result.teacher is not None
    for key, value in received.items():
        assert torch.equal(result.teacher.state_dict()[key], value)
        assert not torch.equal(model.state_dict()[key], value)


def test_fedavg_is_the_size_weighted_mean_of_every_entry():
    # Kills an unweighted mean and an average of the parameters only (the buffer would be dropped).
    g = torch.Generator().manual_seed(0)
    states = [{"w": torch.randn(3, 2, generator=g), "running_mean": torch.randn(2, generator=g),
               "count": torch.tensor(2 ** k)} for k in range(3)]
    sizes = [10, 30, 60]
    avg = fedavg(states, sizes)
    assert set(avg) == {"w", "running_mean", "count"}
    for key in ("w", "running_mean"):
        torch.testing.assert_close(avg[key], sum(s[key] * n for s, n in zip(states, sizes)) / 100)
    assert avg["count"].dtype == torch.int64 and int(avg["count"]) == 3  # 0.1 + 0.6 + 2.4, rounded


def test_clients_are_sampled_by_round_and_seed():
    # Kills a sampler drawn from the global RNG (methods would see different clients) or the wrong count.
    torch.manual_seed(1)
    first = sample_clients(20, 0.25, 3, 0)
    np.random.seed(9)
    assert sample_clients(20, 0.25, 3, 0) == first and len(set(first)) == 5
    assert sample_clients(20, 0.25, 4, 0) != first and len(sample_clients(20, 0.01, 0, 0)) == 1


def _tiny(rounds: int = 2, driver: str = "inprocess", **train) -> FederatedExperimentConfig:
    return FederatedExperimentConfig(partition=PartitionConfig(clients=4, shards_per_client=5), driver=driver,
                                     train=FederatedTrainConfig(rounds=rounds, sample_ratio=0.5, local_epochs=1,
                                                                device="cpu", progress=False, **train))


def test_flower_simulation_gives_the_in_process_global_weights():
    # Kills a Flower driver that trains other clients (Flower's own random sampler), another lr, a
    # teacher or majority computed otherwise, or that aggregates otherwise than the in-process FedAvg.
    pytest.importorskip("flwr", reason="driver flower needs flwr (pip install 'flwr[simulation]')")
    pytest.importorskip("ray", reason="Flower's simulation needs ray (pip install 'flwr[simulation]')")
    from vision.federated.flower import run_flower

    torch.set_num_threads(1)
    config = _tiny()
    federation = build_federation(config)
    method = build_method("fedlmd")
    local_history, local_state = run_inprocess(method, config, federation)
    flower_history, flower_state = run_flower(method, config, federation)
    assert [h["clients"] for h in flower_history] == [h["clients"] for h in local_history] == [[2, 3], [1, 3]]
    assert local_state.keys() == flower_state.keys()
    for key, value in local_state.items():
        torch.testing.assert_close(flower_state[key], value, rtol=0, atol=1e-6, msg=key)
    assert not torch.equal(local_state["classifier.weight"], build_federation_model(config)["classifier.weight"])


def build_federation_model(config):
    from vision.federated.experiment import _model

    return _model(config, build_federation(config).data).state_dict()


# -- partitions -------------------------------------------------------------------------------------

def test_shards_cover_the_data_once_with_at_most_two_classes_per_client():
    # Kills a sharder that cuts across classes (Flower's ShardPartitioner on uneven classes) or
    # deals a shard twice.
    labels = np.random.default_rng(0).integers(0, 10, 1437)
    parts = shard_partition(labels, 20, 2, 10, seed=3)
    joined = np.concatenate(parts)
    assert len(joined) == len(labels) and len(np.unique(joined)) == len(labels)
    assert max(len(np.unique(labels[p])) for p in parts) <= 2
    assert parts[0].tolist() == shard_partition(labels, 20, 2, 10, seed=3)[0].tolist()
    assert any(a.tolist() != b.tolist() for a, b in zip(parts, shard_partition(labels, 20, 2, 10, seed=4)))


def test_dirichlet_partition_is_disjoint_and_every_client_has_min_samples():
    labels = np.random.default_rng(0).integers(0, 10, 1437)
    parts = dirichlet_partition(labels, 20, 0.1, 10, seed=0, min_samples=10)
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == len(joined) == len(labels)
    assert min(len(p) for p in parts) >= 10
    assert np.mean([len(np.unique(labels[p])) for p in parts]) < 6  # skewed


# -- resume after SIGKILL ---------------------------------------------------------------------------

def _train(checkpoint_dir: Path, kill_after: int | None) -> None:
    torch.set_num_threads(1)
    if kill_after is not None:
        os.environ[KILL_AFTER_EPOCH] = str(kill_after)
    config = _tiny(rounds=3, checkpoint_dir=str(checkpoint_dir))
    history, state = run_inprocess(build_method("fedlmd"), config, build_federation(config))
    (checkpoint_dir / "result.json").write_text(json.dumps([{k: v for k, v in h.items() if k != "seconds"}
                                                            for h in history]))
    torch.save(state, checkpoint_dir / "final.pt")


def _run(checkpoint_dir: Path, kill_after: int | None = None) -> int:
    return run_forked(_train, checkpoint_dir, kill_after)


def test_a_run_killed_after_round_two_resumes_to_the_uninterrupted_result(tmp_path):
    # Kills a resume that repeats or skips the round after the checkpoint, or loses the history.
    assert _run(tmp_path / "straight") == 0
    assert _run(tmp_path / "killed", kill_after=2) == -9
    assert not (tmp_path / "killed" / "result.json").exists()
    assert _run(tmp_path / "killed") == 0
    straight, resumed = (json.loads((tmp_path / d / "result.json").read_text()) for d in ("straight", "killed"))
    assert [h["round"] for h in resumed] == [0, 1, 2] and resumed == straight
    a, b = (torch.load(tmp_path / d / "final.pt") for d in ("straight", "killed"))
    for key in a:
        assert torch.equal(a[key], b[key])


# -- the command and bad input ----------------------------------------------------------------------

def test_the_recipe_runs_from_the_command_line_and_prints_the_split(tmp_path, capsys):
    config = yaml.safe_load((ROOT / "recipes/vision/fedlmd.yaml").read_text())
    config["train"].update(rounds=2, progress=False, device="cpu")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    assert curate_main(["vision", "fedlmd", "--config", str(path), "--out", str(tmp_path / "r.json")]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("fedlmd: global test accuracy") and "20 clients, shards 2/client" in line
    result = json.loads((tmp_path / "r.json").read_text())
    assert len(result["rounds"]) == 2 and result["partition"]["clients"] == 20
    assert all(len(h["clients"]) == 5 for h in result["rounds"])


@pytest.fixture
def no_data(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("data loaded before the config was checked")
    monkeypatch.setattr("vision.data.load_images", refuse)


@pytest.mark.parametrize("method, bad, message", [
    ("fedlmd", {"partition": {"kind": "iid"}}, "partition: kind must be one of shards, dirichlet, got 'iid'"),
    ("fedlmd", {"partition": {"clients": 0}}, "partition: clients must be at least 1, got 0"),
    ("fedlmd", {"partition": {"kind": "dirichlet", "alpha": -1}}, "partition: alpha must be positive, got -1"),
    ("fedntd", {"train": {"sample_ratio": 1.5}}, "train: sample_ratio must be in (0, 1], got 1.5"),
    ("fedavg", {"train": {"epochs": 3}}, "unknown field 'train.epochs'"),
    ("fedlmd_tf", {"driver": "ray"}, "driver must be one of inprocess, flower, got 'ray'"),
    ("fedlmd", {"method": {"tau": 0}}, "method: tau must be positive, got 0"),
    ("fedlmd", {"method": {"alpha": 1}}, "unknown field 'method.alpha'"),
    ("fedavg", {"method": {"tau": 1}}, "method 'fedavg' takes no options, got tau"),
])
def test_bad_input_is_one_line_and_exit_two(tmp_path, capsys, no_data, method, bad, message):
    config = yaml.safe_load((ROOT / f"recipes/vision/{method}.yaml").read_text())
    for key, value in bad.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) and isinstance(config.get(key), dict) else value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    assert curate_main(["vision", method, "--config", str(path), "--out", str(tmp_path / "out" / "r.json")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err and str(path) in err, err
    assert not (tmp_path / "out").exists()


def test_shards_that_do_not_divide_into_the_classes_are_refused():
    with pytest.raises(Exception, match="must be a multiple of the 10 classes"):
        shard_partition(np.arange(100) % 10, 3, 2, 10, seed=0)


def test_an_impossible_dirichlet_minimum_is_refused():
    labels = np.arange(200) % 10
    with pytest.raises(Exception, match="min_samples 20 x 20 clients exceeds the 200 training samples"):
        dirichlet_partition(labels, 20, 0.1, 10, seed=0, min_samples=20)

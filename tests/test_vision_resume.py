"""A vision run SIGKILLed right after its epoch-1 checkpoint and rerun on the same checkpoint
directory ends exactly where an uninterrupted run ends: the same per-epoch losses, accuracies,
selection metrics and final weights. Each run is a real child process (forked, so it skips the
interpreter start-up); the kill comes from the loop's own test hook, CURATEKIT_KILL_AFTER_EPOCH.

Plausible wrong implementation killed: a checkpoint without some random state (the augmenter's
generator, the data-order generator, the torch / numpy / python global states, a method's own
generator), so the resumed epoch draws different crops, batches or noise than the uninterrupted one;
and Sel-CL state outside the checkpoint (its momentum encoder, MoCo memory or supervised queue
kept as plain attributes: the resumed epoch would contrast with other keys and queue entries).
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from forked import run_forked
from vision import rng
from vision.data import ImageData, load_images
from vision.registry import build_method
from vision.noise import NoiseConfig, inject
from vision.train import KILL_AFTER_EPOCH, Method, TrainConfig, fit



class EveryRng(Method):
    """Cross-entropy scaled by a draw from every global RNG and from a generator of its own, so that
    failing to restore any one of them on resume changes the losses and the weights."""

    name = "every-rng"

    def modules(self, model, data):
        self.generator = torch.Generator().manual_seed(7)
        return {}

    def generators(self) -> dict[str, torch.Generator]:
        return {"draws": self.generator}

    def loss(self, model, batch):
        draw = float(torch.rand((), generator=self.generator) + torch.rand(())) + np.random.rand() + random.random()
        return super().loss(model, batch) * (1 + 0.1 * draw)


@pytest.fixture(scope="module")
def digits() -> tuple[ImageData, np.ndarray, np.ndarray]:
    data = load_images("digits", seed=0)
    data.train_images, data.train_labels = data.train_images[:300], data.train_labels[:300]
    data.test_images, data.test_labels = data.test_images[:100], data.test_labels[:100]
    noisy = inject(data.train_labels.numpy(), 10, NoiseConfig("symmetric", 0.4, seed=0))
    return data, noisy.labels, noisy.is_clean


def _method(name: str) -> Method:
    if name == "selcl-queue":  # Sel-CL with its supervised queue in use in the resumed epoch
        return build_method("selcl", {"queue_begin": 1})
    return EveryRng() if name == EveryRng.name else build_method(name)


def _train(name: str, data: ImageData, labels: np.ndarray, clean: np.ndarray, checkpoint_dir: Path,
           kill_after: int | None) -> None:
    """The child: two epochs (one warmup, one with selection) with augmentation, per-epoch checkpoints."""
    torch.set_num_threads(1)  # the same arithmetic in every child
    if kill_after is not None:
        os.environ[KILL_AFTER_EPOCH] = str(kill_after)
    config = TrainConfig(epochs=2, warmup_epochs=1, batch_size=64, lr=0.02, device="cpu", seed=3,
                         checkpoint_dir=str(checkpoint_dir), progress=False)
    result = fit(_method(name), data, labels, config, clean=clean)
    (checkpoint_dir / "result.json").write_text(json.dumps(result["epochs"]))


def _run(name: str, digits: tuple, checkpoint_dir: Path, kill_after: int | None = None) -> int:
    """Train in a forked child; its exit code (-9: SIGKILLed)."""
    return run_forked(_train, name, *digits, checkpoint_dir, kill_after)


def _outcome(checkpoint_dir: Path) -> tuple[list[dict], dict[str, torch.Tensor], set[str]]:
    """Per-epoch results without timings, the final weights, the generators in the checkpoint."""
    epochs = json.loads((checkpoint_dir / "result.json").read_text())
    epochs = [{k: v for k, v in e.items() if k != "seconds"} for e in epochs]
    (path,) = checkpoint_dir.glob("*.pt")
    state = torch.load(path, weights_only=False)
    weights = {**state["model"], **{f"heads.{k}": v for k, v in state["heads"].items()}}
    return epochs, weights, set(state["rng"]["generators"])


@pytest.mark.parametrize("name", ["selcl", "selcl-queue", "dpc", EveryRng.name])
def test_a_run_killed_after_epoch_one_resumes_to_the_uninterrupted_result(name, digits, tmp_path):
    assert _run(name, digits, tmp_path / "straight") == 0
    assert _run(name, digits, tmp_path / "killed", kill_after=1) == -9  # SIGKILL, after the epoch-1 checkpoint
    assert not (tmp_path / "killed" / "result.json").exists()
    assert _run(name, digits, tmp_path / "killed") == 0  # resumes from epoch 2
    (straight, weights, generators), (resumed, resumed_weights, _) = map(_outcome, (tmp_path / "straight",
                                                                                 tmp_path / "killed"))
    method_generators = {"selcl": {"method.pairs"}, "selcl-queue": {"method.pairs"}, "dpc": {"method.mix"},
                         EveryRng.name: {"method.draws"}}[name]
    assert generators == {"order", "augment", *method_generators}  # Sel-CL's pair sampler and DPC's mixup draws too
    assert len(straight) == 2 and (straight[1]["selection"] is not None) == (name != EveryRng.name)
    assert resumed == straight
    assert weights.keys() == resumed_weights.keys()
    if name.startswith("selcl"):  # the encoder, the memory and the queue are in the checkpoint
        assert {"heads.momentum_encoder.head.weight", "heads.moco_memory.feats", "heads.queue.feats",
                "heads.queue.labels", "heads.queue.index", "heads.queue.ptr"} <= weights.keys()
    for key, value in weights.items():
        torch.testing.assert_close(resumed_weights[key], value, rtol=0, atol=1e-6, msg=key)


def _draws(generators: dict[str, torch.Generator]) -> list[float]:
    found = [float(torch.rand(())), float(np.random.rand()), random.random(),
             *(float(torch.rand((), generator=g)) for g in generators.values())]
    if torch.cuda.is_available():
        found.append(float(torch.rand((), device="cuda")))
    return found


def test_capture_then_restore_replays_every_generator():
    # Kills a capture that leaves out a global state (CUDA's included where a GPU is present) or a
    # named generator: the draws after restore would differ from the first ones.
    if torch.cuda.is_available():
        torch.cuda.init()
    generators = {"order": torch.Generator().manual_seed(1), "augment": torch.Generator().manual_seed(2)}
    rng.seed_globals(5)
    state = rng.capture(generators)
    assert ("cuda" in state) == torch.cuda.is_available()
    first = _draws(generators)
    rng.restore(state, generators)
    assert _draws(generators) == first
    with pytest.raises(ValueError, match="no random state for"):
        rng.restore(state, {**generators, "method.pairs": torch.Generator()})


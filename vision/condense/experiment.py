"""A condensation experiment from a config: dataset, the condensation settings (``train``), the
evaluation settings (``evaluate``), the method's options, the output folder.

    dataset: digits
    seed: 0                       # the train/test split
    train: {ipc: 10, iterations: 200, lr_img: 1.0, momentum: 0.5, batch_real: 128, batch_syn_max: 200,
            ipm: 1, width: 128, augment: color_crop_cutout, seed: 0, checkpoint_dir: null}
    evaluate: {backbone: convnet, epochs: 300, lr: 0.01, batch_size: 64, augment: color_crop_scale}
    method: {kernel: gaussian}    # the method's config fields
    out_dir: runs/vision/condense # the grid PNG and the datasets.Dataset of the synthetic images

The condensation settings sit in ``train`` so that the command line's ``--checkpoint-dir`` and
``--device`` land there as for every family (``--epochs`` is refused: say ``train.iterations`` or
``evaluate.epochs``). With ``checkpoint_dir`` the loop saves the pixels, the optimiser and every
random state every ``checkpoint_every`` iterations (atomically) and a rerun resumes to the
identical result; the test hook ``CURATEKIT_KILL_AFTER_EPOCH=k`` SIGKILLs after the checkpoint of
iteration k. Normalisation before the network is left out (digits are already in [0, 1]).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from curate.core.errors import BadInputError
from vision.data import DataFields
from vision.condense.augment import parse_strategy
from vision.condense.evaluate import EvaluateConfig


@dataclass
class CondenseTrainConfig:
    ipc: int = 10  # synthetic images per class
    iterations: int = 200
    lr_img: float = 1.0  # SGD on the pixels
    momentum: float = 0.5
    batch_real: int = 128  # real images per class per step
    batch_syn_max: int = 200  # synthetic images per class per step, at most
    ipm: int = 1  # iterations per random network
    width: int = 128  # of the random ConvNets
    depth: int | None = None  # None: the ConvNet's default for the image size
    augment: str = "color_crop_cutout"  # DSA strategy of the matching, 'none' for none
    seed: int = 0  # the initial images, real batches, augmentations and networks
    device: str = "cpu"
    checkpoint_dir: str | None = None
    checkpoint_every: int = 10
    progress: bool = False

    def __post_init__(self) -> None:
        for name in ("ipc", "batch_real", "batch_syn_max", "ipm", "width", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise BadInputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.iterations < 0:
            raise BadInputError(f"iterations must be non-negative, got {self.iterations}")
        if self.depth is not None and self.depth < 1:
            raise BadInputError(f"depth must be at least 1 or null, got {self.depth}")
        if self.lr_img <= 0:
            raise BadInputError(f"lr_img must be positive, got {self.lr_img}")
        if not 0 <= self.momentum < 1:
            raise BadInputError(f"momentum must be in [0, 1), got {self.momentum}")
        parse_strategy(self.augment, "augment")


@dataclass
class CondenseExperimentConfig(DataFields):
    train: CondenseTrainConfig = field(default_factory=CondenseTrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    method: dict[str, Any] = field(default_factory=dict)
    out_dir: str | None = "runs/vision/condense"  # None: save no images

    def __post_init__(self) -> None:
        if self.image_size is not None and self.image_size < 4:
            raise BadInputError(f"image_size must be at least 4 or null, got {self.image_size}")


CHECKPOINT_FORMAT = 1


def _checkpoint_path(method: Any, data: Any, config: CondenseTrainConfig) -> Path | None:
    from curate.core.cache import digest

    if not config.checkpoint_dir:
        return None
    settings = {k: v for k, v in asdict(config).items() if k not in ("checkpoint_dir", "progress", "device")}
    identity = [CHECKPOINT_FORMAT, method.name, method.identity(), data.name, settings,
                len(data.train_labels), float(data.train_images.sum())]
    return Path(config.checkpoint_dir) / f"condense-{method.name}-{digest(json.dumps(identity, sort_keys=True, default=str))}.pt"


def condense(method: Any, data: Any, config: CondenseTrainConfig):
    """(the synthetic set, the per-iteration history) of ``method`` on ``data``'s training split."""
    import torch
    from tqdm.auto import tqdm

    from curate.core.device import resolve_device
    from vision import rng
    from vision.condense.augment import DiffAugment
    from vision.condense.base import ClassSampler, RandomNetworks, Step, SyntheticSet, match_features
    from vision.train import kill_hook, save_checkpoint

    device = resolve_device(config.device)
    rng.seed_globals(config.seed)
    synthetic = SyntheticSet(data, config.ipc, config.seed, device)
    method.prepare(data, config)
    if not method.optimises:
        return synthetic, []
    sampler = ClassSampler(data, config.batch_real, config.seed + 1)
    augment = DiffAugment(config.augment, seed=config.seed + 2)
    networks = RandomNetworks(data, config.width, config.depth, config.ipm, config.seed, device)
    subsample = torch.Generator().manual_seed(config.seed + 3)
    optimizer = torch.optim.SGD([synthetic.images], lr=config.lr_img, momentum=config.momentum)
    generators = {"real": sampler.generator, "augment": augment.generator, "subsample": subsample,
                  **{f"method.{name}": g for name, g in method.generators().items()}}
    history: list[dict[str, Any]] = []
    start = 0
    checkpoint = _checkpoint_path(method, data, config)
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        with torch.no_grad():
            synthetic.images.copy_(state["images"])
        optimizer.load_state_dict(state["optimizer"])
        rng.restore(state["rng"], generators)
        history, start = state["history"], state["iteration"] + 1
    for it in tqdm(range(start, config.iterations), desc=f"{method.name} ({data.name})", unit="it",
                   disable=not config.progress):
        synthetic.clamp_()
        net = method.network(it, networks)
        total = 0.0
        for c in range(data.num_classes):
            real = sampler.sample(c).to(device)
            syn = synthetic.of_class(c)
            if len(syn) > config.batch_syn_max:
                syn = syn[torch.randperm(len(syn), generator=subsample)[:config.batch_syn_max]]
            loss = method.match_loss(*match_features(net, augment, real, syn))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        method.after_matching(Step(it, synthetic, optimizer, augment, config.batch_syn_max))
        history.append({"iteration": it, "loss": total / data.num_classes})
        if checkpoint is not None and ((it + 1) % config.checkpoint_every == 0 or it + 1 == config.iterations):
            save_checkpoint(checkpoint, {"images": synthetic.images.detach(), "optimizer": optimizer.state_dict(),
                                         "rng": rng.capture(generators), "history": history, "iteration": it})
            kill_hook(it + 1)
    synthetic.clamp_()
    return synthetic, history


def save_outputs(synthetic: Any, folder: Path) -> dict[str, str]:
    """The synthetic images as a grid PNG (one row per class) and as a ``datasets.Dataset``
    (``image``: C x H x W floats in [0, 1], ``label``), written atomically under ``folder``."""
    import datasets
    from torchvision.utils import save_image

    from curate.core.io import atomic_dir, atomic_file

    images = synthetic.images.detach().cpu().clamp(0, 1)
    grid = folder / "synthetic.png"
    with atomic_file(grid) as tmp:
        save_image(images, tmp, nrow=synthetic.ipc, padding=1, format="png")
    datasets.disable_progress_bars()
    table = datasets.Dataset.from_dict({"image": images.numpy().tolist(), "label": synthetic.labels.tolist()})
    with atomic_dir(folder / "dataset") as tmp:
        table.save_to_disk(str(tmp))
    return {"grid": str(grid), "dataset": str(folder / "dataset")}


def run_condense_experiment(method: Any, config: CondenseExperimentConfig) -> dict[str, Any]:
    """Condense, evaluate (a fresh network on the synthetic set only), save the images; the result JSON."""
    from vision.condense.evaluate import evaluate
    from vision.data import load_images

    data = load_images(config.dataset, root=config.root, seed=config.seed, image_size=config.image_size)
    if config.train.ipc * data.num_classes > len(data.train_labels):
        raise BadInputError(f"train.ipc {config.train.ipc}: more synthetic images than the {len(data.train_labels)} real ones")
    started = time.monotonic()
    synthetic, history = condense(method, data, config.train)
    condense_seconds = time.monotonic() - started
    started = time.monotonic()
    evaluation = evaluate(synthetic.images, synthetic.labels, data, config.evaluate, config.train.device)
    evaluate_seconds = time.monotonic() - started
    outputs = {}
    if config.out_dir:
        folder = Path(config.out_dir) / f"{method.name}-{data.name}-ipc{config.train.ipc}-seed{config.train.seed}"
        outputs = save_outputs(synthetic, folder)
    accuracy = evaluation["test_accuracy"]
    return {"method": method.name, "dataset": data.name, "config": asdict(config),
            "condensation": {"iterations": len(history), "seconds": round(condense_seconds, 3),
                             "final_loss": history[-1]["loss"] if history else None,
                             "loss": [h["loss"] for h in history]},
            "evaluation": {**evaluation, "seconds": round(evaluate_seconds, 3)},
            "outputs": outputs, "final": {"test_accuracy": accuracy},
            "summary": (f"{method.name} on {data.name}, {config.train.ipc} images per class: test accuracy "
                        f"{100 * accuracy:.1f}% of a fresh {config.evaluate.backbone} trained on the "
                        f"{len(synthetic.labels)} synthetic images ({condense_seconds:.0f}s condensation, "
                        f"{evaluate_seconds:.0f}s evaluation)")}

"""A crowd experiment from a config: dataset, simulated annotators, training settings, the
method's options. ``annotators`` replaces the noisy family's ``noise`` section:

    dataset: digits
    annotators: {regime: corr, annotators: 100, mean_labels: 2.5, seed: 0}
    train: {backbone: mlp, epochs: 30, warmup_epochs: 10, augment: false}
    method: {groups: 30}
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from vision.data import DataFields
from vision.crowds.annotators import AnnotatorConfig
from vision.train import TrainConfig


@dataclass
class CrowdExperimentConfig(DataFields):
    annotators: AnnotatorConfig = field(default_factory=AnnotatorConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    method: dict[str, Any] = field(default_factory=dict)


def run_crowd_experiment(method: Any, config: CrowdExperimentConfig) -> dict[str, Any]:
    """Simulate the crowd, train ``method`` (a built :class:`CrowdMethod`) on it; the result JSON."""
    from vision.crowds.annotators import majority_vote, simulate
    from vision.data import load_images
    from vision.train import fit

    data = load_images(config.dataset, root=config.root, seed=config.seed, image_size=config.image_size)
    truth = data.train_labels.numpy()
    features = data.train_images.flatten(1).numpy() if config.annotators.regime == "idn" else None
    crowd = simulate(truth, data.num_classes, config.annotators, features)
    method.num_annotators = config.annotators.annotators
    counts = crowd.counts()
    vote = majority_vote(crowd.labels, data.num_classes, config.annotators.seed)
    extra = {"annotators": {**asdict(config.annotators), "annotation_accuracy": crowd.accuracy(truth),
                            "majority_vote_accuracy": float((vote == truth).mean()),
                            "labels_per_instance": float(counts.sum() / len(truth)),
                            "labels_per_annotator": {"min": int(counts.min()), "median": float(sorted(counts)[len(counts) // 2]),
                                                     "max": int(counts.max())}}}
    labels = method.train_labels(crowd.labels, data.num_classes, config.annotators.seed)
    result = fit(method, data, labels, config.train, extra=extra)
    finished = method.finish(data, labels, config.train)
    if finished is not None:  # the method's last stage changed the networks: final is its accuracy
        result["finetune"] = finished
        result["final"]["test_accuracy"] = finished["test_accuracy"]
    result["crowd_metrics"] = method.crowd_metrics(truth, crowd)
    return result

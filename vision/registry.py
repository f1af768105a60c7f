"""Vision methods by name, grouped by family: each registered with its family and a one-line
description; a method is a class (with an optional config dataclass, its ``config_class``) in its
family's package (``vision/<family>/<method>.py``). The registry imports no method (no torch): a
method's module is imported when it is built, so ``curate vision --help`` stays fast.

A family owns the training protocol where it differs from the others (its experiment config and
runner, in :data:`FAMILIES`): noisy labels (:mod:`vision.noisy`, one label per sample, a selection
and a loss over :func:`vision.train.fit`), learning from crowds (:mod:`vision.crowds`, labels from
several annotators), multi-label learning (:mod:`vision.multilabel`: a multi-hot target, BCE,
per-class 2x2 noise), distillation (:mod:`vision.distill`: a trained, frozen teacher), federated
learning (:mod:`vision.federated`: clients and an aggregator), dataset condensation
(:mod:`vision.condense`: a synthetic set), active learning (:mod:`vision.active`: a query step), video
(:mod:`vision.video`: clips)."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from curate.core.errors import BadInputError
from curate.core.config import from_mapping

if TYPE_CHECKING:
    from vision.train import Method


@dataclass(frozen=True)
class Family:
    description: str  # one line, for `curate vision --help`
    experiment: str  # "module:Class", the experiment config dataclass of its methods
    runner: str  # "module:function", run(method, config) -> the result JSON


FAMILIES: dict[str, Family] = {
    "noisy": Family("learning with noisy labels: one possibly wrong label per sample",
                    "vision.run:ExperimentConfig", "vision.run:run_noisy_experiment"),
    "crowds": Family("learning from crowds: several annotators label each sample, sparsely",
                     "vision.crowds.experiment:CrowdExperimentConfig", "vision.crowds.experiment:run_crowd_experiment"),
    "multilabel": Family("multi-label learning: a multi-hot target per sample, each class's label possibly flipped",
                         "vision.multilabel.mltm:MultiLabelExperimentConfig",
                         "vision.multilabel.mltm:run_multilabel_experiment"),
    "distill": Family("knowledge distillation: a student learns from a trained, frozen teacher",
                      "vision.distill.experiment:DistillExperimentConfig",
                      "vision.distill.experiment:run_distill_experiment"),
    "federated": Family("federated learning: clients train on their own data, skewed by label, and a server aggregates",
                        "vision.federated.experiment:FederatedExperimentConfig",
                        "vision.federated.experiment:run_federated_experiment"),
    "condense": Family("dataset condensation: a few learnable synthetic images per class that train a network as the real set would",
                       "vision.condense.experiment:CondenseExperimentConfig",
                       "vision.condense.experiment:run_condense_experiment"),
    "active": Family("active learning: rounds of query -> label -> retrain within a budget, on an open-set pool",
                     "vision.active.experiment:ActiveExperimentConfig",
                     "vision.active.experiment:run_active_experiment"),
    "video": Family("video: clips of frames; learn what natural video looks like so that forgeries stand out",
                    "vision.video.experiment:VideoExperimentConfig", "vision.video.experiment:run_video_experiment"),
}


@dataclass(frozen=True)
class MethodEntry:
    target: str  # "module:Class", the method's class
    description: str  # one line, for `curate vision --help`
    family: str = "noisy"  # a key of FAMILIES
    # a method whose protocol is its own within the family (a segmentation student, a data-free
    # student): "module:Class" and "module:function" in place of the family's
    experiment: str | None = None
    runner: str | None = None


METHODS: dict[str, MethodEntry] = {}


def register(name: str, target: str, description: str, family: str = "noisy",
             experiment: str | None = None, runner: str | None = None) -> None:
    if family not in FAMILIES:
        raise ValueError(f"vision method '{name}': unknown family '{family}'; families: {', '.join(FAMILIES)}")
    METHODS[name] = MethodEntry(target, description, family, experiment, runner)


register("ce", "vision.train:Method", "cross-entropy baseline on every (noisy) label")
register("selcl", "vision.noisy.selcl:SelCL",
         "Sel-CL: kNN-confident examples and pairs, selective supervised contrastive learning")
register("dpc", "vision.noisy.dpc:DPC",
         "DPC: calibrated softmax, evidential loss, large-margin (GMM) sample selection")
register("mv", "vision.crowds.annotators:MajorityVote", "majority vote of the annotators, then cross-entropy",
         family="crowds")
register("crowdlayer", "vision.crowds.annotators:CrowdLayer",
         "CrowdLayer: one network and a per-annotator confusion layer on its softmax", family="crowds")
register("ccc", "vision.crowds.ccc:CCC",
         "CCC: two networks, grouped confusion corrections by look-ahead on the peer's distilled set",
         family="crowds")
register("aidtm", "vision.crowds.aidtm:AIDTM",
         "AIDTM: instance-dependent transition per annotator, global-to-individual transfer, GCN calibration",
         family="crowds")
register("mltm", "vision.multilabel.mltm:MLTM",
         "noisy multi-label T estimation: small-loss selection, bilinear solve with label correlations, Reweight",
         family="multilabel")
register("kd", "vision.distill.kd:KD",
         "plain knowledge distillation (Hinton et al.): CE plus temperature-scaled KL to the teacher",
         family="distill")
register("dhkd", "vision.distill.dhkd:DHKD",
         "DHKD: CE on the main head, BinaryKL-Norm to the teacher's logits on an auxiliary head, gradient alignment",
         family="distill")
register("rdd", "vision.distill.rdd:RDD",
         "RDD: pixel KD, CE weighted by the teacher's head agreement, then on pixels of differing difficulty (segmentation)",
         family="distill", experiment="vision.distill.segmentation:SegmentationExperimentConfig",
         runner="vision.distill.segmentation:run_segmentation_experiment")
register("dpdfd", "vision.distill.dpdfd:DPDFD",
         "DPDFD: data-free student via a generator, normalised + noised output gradients, Opacus RDP epsilon",
         family="distill", experiment="vision.distill.dpdfd:DPDFDExperimentConfig",
         runner="vision.distill.dpdfd:run_dpdfd_experiment")
register("fedavg", "vision.federated.fedavg:FedAvg",
         "FedAvg: clients minimise cross-entropy locally, the server averages weights by data size",
         family="federated")
register("fedntd", "vision.federated.fedntd:FedNTD",
         "FedNTD: local CE plus not-true distillation from the received global model",
         family="federated")
register("fedlmd", "vision.federated.fedlmd:FedLMD",
         "FedLMD: local CE plus distillation from the global model on the client's minority labels only",
         family="federated")
register("fedlmd_tf", "vision.federated.fedlmd_tf:FedLMDTf",
         "FedLMD-Tf: teacher-free FedLMD, a uniform target over the client's minority labels",
         family="federated")
register("random", "vision.condense.random_subset:RandomSubset",
         "random real subset: IPC seeded real images per class, no optimisation", family="condense")
register("dm", "vision.condense.dm:DM",
         "DM: per-class mean features of real and synthetic images matched under random ConvNets", family="condense")
register("echo", "vision.condense.echo:ECHO",
         "ECHO (M3D): per-class MMD² of real and synthetic features, multi-bandwidth Gaussian kernel", family="condense")
register("dance", "vision.condense.dance:DANCE",
         "DANCE: DM under middle encoders of pre-trained experts, then CE calibration by the trained expert",
         family="condense")
register("random_query", "vision.active.base:Strategy",
         "random queries from the unlabelled pool (the active learning baseline)", family="active")
register("uncertainty", "vision.active.baselines:Uncertainty",
         "uncertainty sampling: entropy, margin or least confidence of the target model", family="active")
register("lfosa", "vision.active.baselines:LfOSA",
         "LfOSA: a K+1 way detector, a GMM per class on max activations, query the images likely known",
         family="active")
register("lewis", "vision.active.lewis:Lewis",
         "one shot AL for k models: sample by the max over the k representations of the Lewis weights (baselines: sampler uniform, leverage_single)",
         family="active", experiment="vision.active.lewis_experiment:LewisExperimentConfig",
         runner="vision.active.lewis_experiment:run_lewis_experiment")
register("bual", "vision.active.bual:BUAL",
         "BUAL: bidirectional uncertainty of the target model and an RLNL negative head, weighted by a K+1 way detector",
         family="active")
register("dcfs", "vision.active.dcfs:DCFS",
         "DCFS: two evidential heads; coarse: the images likely known by Dirichlet uncertainty; fine: by head discrepancy",
         family="active")
register("d2l_mat", "vision.multilabel.ssmll:D2LMAT",
         "D2L + MAT: semi supervised multi label, patch and global heads, pseudo labels from generation heads, "
         "per class thresholds maximising F beta on the labelled set", family="multilabel",
         experiment="vision.multilabel.ssmll:SSMLLExperimentConfig", runner="vision.multilabel.ssmll_experiment:run_ssmll_experiment")
register("ssmll_cap", "vision.multilabel.ssmll:CAP",
         "CAP style pseudo labels for semi supervised multi label: one head, thresholds matching the class prior on unlabelled data",
         family="multilabel", experiment="vision.multilabel.ssmll:SSMLLExperimentConfig",
         runner="vision.multilabel.ssmll_experiment:run_ssmll_experiment")
register("ssmll_bce", "vision.multilabel.ssmll:LabelledOnly",
         "labelled only BCE baseline for semi supervised multi label, fixed 0.5 threshold", family="multilabel",
         experiment="vision.multilabel.ssmll:SSMLLExperimentConfig", runner="vision.multilabel.ssmll_experiment:run_ssmll_experiment")
register("det_baseline", "vision.multilabel.pat:DeTBaseline",
         "dependent training baseline: one shared backbone and head for all labels, BCE on whole images, sigmoid at 0.5",
         family="multilabel", experiment="vision.multilabel.pat:PATExperimentConfig",
         runner="vision.multilabel.pat_experiment:run_pat_experiment")
register("pat", "vision.multilabel.pat:PAT",
         "PAT: whole image logit averaged with a soft pivot patch logit (counterfactual direct effect), at training or inference",
         family="multilabel", experiment="vision.multilabel.pat:PATExperimentConfig",
         runner="vision.multilabel.pat_experiment:run_pat_experiment")
register("supervised", "vision.video.model:VideoMethod",
         "end to end supervised CNN and Transformer detector, trained with BCE on the seen forgery kinds",
         family="video")
register("naco", "vision.video.naco:NACO",
         "NACO: SPM and TCM pretext training on real clips only, then a head on the frozen backbone",
         family="video")


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _entry(name: str) -> MethodEntry:
    if name not in METHODS:
        raise BadInputError(f"unknown vision method '{name}'; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def method_class(name: str) -> type[Method]:
    """The registered method's class (its module imported now)."""
    return _load(_entry(name).target)


def experiment_class(name: str) -> type:
    """The experiment config dataclass of the method (its family's, unless the method has its own)."""
    entry = _entry(name)
    return _load(entry.experiment or FAMILIES[entry.family].experiment)


def experiment_runner(name: str) -> Any:
    """run(method, config) -> result JSON, for the method (its family's, unless it has its own)."""
    entry = _entry(name)
    return _load(entry.runner or FAMILIES[entry.family].runner)


def family(name: str) -> str:
    return _entry(name).family


def method_options(name: str, options: dict[str, Any] | None, where: str | None = None) -> Any | None:
    """The method's config dataclass from ``options`` (None for a method without options); errors
    start with ``where`` and name fields as ``method.FIELD``."""
    config_class = method_class(name).config_class
    where = where or f"vision method '{name}'"
    if config_class is None:
        if options:
            raise BadInputError(f"{where}: method '{name}' takes no options, got {', '.join(map(str, options))}")
        return None
    return from_mapping(config_class, options or {}, where, "method.")


def build_method(name: str, options: dict[str, Any] | None = None) -> Method:
    config = method_options(name, options)
    cls = method_class(name)
    return cls() if config is None else cls(config)

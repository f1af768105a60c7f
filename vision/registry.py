"""Vision methods by name, grouped by family: each registered with its family and a one-line
description; a method is a class (with an optional config dataclass, its ``config_class``) in its
family's package (``vision/<family>/<method>.py``). The registry imports no method (no torch): a
method's module is imported when it is built, so ``curate vision --help`` stays fast.

A family owns the training protocol where it differs from the others: noisy labels
(:mod:`vision.noisy`, one label per sample, a selection and a loss over :func:`vision.train.fit`),
and, as they land, learning from crowds (labels from several annotators), distillation (a
teacher), federated learning (clients and an aggregator), dataset condensation (a synthetic set),
active learning (a query step), video; multi-label learning (:mod:`vision.multilabel`: a
multi-hot target, BCE, per-class 2x2 noise)."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from curate.core.errors import BadInputError
from curate.core.config import from_mapping

if TYPE_CHECKING:
    from vision.train import Method


FAMILIES: dict[str, str] = {
    "noisy": "learning with noisy labels: one possibly wrong label per sample",
    "crowds": "learning from crowds: several annotators label each sample, sparsely",
    "multilabel": "multi-label learning: a multi-hot target per sample, each class's label possibly flipped",
}


@dataclass(frozen=True)
class MethodEntry:
    target: str  # "module:Class", the method's class
    description: str  # one line, for `curate vision --help`
    family: str = "noisy"  # a key of FAMILIES


METHODS: dict[str, MethodEntry] = {}


def register(name: str, target: str, description: str, family: str = "noisy") -> None:
    if family not in FAMILIES:
        raise ValueError(f"vision method '{name}': unknown family '{family}'; families: {', '.join(FAMILIES)}")
    METHODS[name] = MethodEntry(target, description, family)


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


def method_class(name: str) -> type[Method]:
    """The registered method's class (its module imported now)."""
    if name not in METHODS:
        raise BadInputError(f"unknown vision method '{name}'; choose one of {', '.join(METHODS)}")
    module, _, attr = METHODS[name].target.partition(":")
    return getattr(importlib.import_module(module), attr)


def family(name: str) -> str:
    if name not in METHODS:
        raise BadInputError(f"unknown vision method '{name}'; choose one of {', '.join(METHODS)}")
    return METHODS[name].family


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

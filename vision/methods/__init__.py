"""Vision methods by name: each a :class:`vision.train.Method` (with an optional config dataclass,
its ``config_class``) registered with a one-line description. The registry imports no method (no
torch): a method's module is imported when it is built, so ``curate vision --help`` stays fast."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from curate.core.errors import BadInputError
from curate.core.config import from_mapping

if TYPE_CHECKING:
    from vision.train import Method


@dataclass(frozen=True)
class MethodEntry:
    target: str  # "module:Class", the Method subclass
    description: str  # one line, for `curate vision --help`


METHODS: dict[str, MethodEntry] = {}


def register(name: str, target: str, description: str) -> None:
    METHODS[name] = MethodEntry(target, description)


register("ce", "vision.train:Method", "cross-entropy baseline on every (noisy) label")
register("selcl", "vision.methods.selcl:SelCL",
         "Sel-CL: kNN-confident examples and pairs, selective supervised contrastive learning")
register("dpc", "vision.methods.dpc:DPC",
         "DPC: calibrated softmax, evidential loss, large-margin (GMM) sample selection")


def method_class(name: str) -> type[Method]:
    """The registered method's class (its module imported now)."""
    if name not in METHODS:
        raise BadInputError(f"unknown vision method '{name}'; choose one of {', '.join(METHODS)}")
    module, _, attr = METHODS[name].target.partition(":")
    return getattr(importlib.import_module(module), attr)


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

"""The selector registry: every selector and every selection rule, named once with its one-line
description. ``curate select`` builds its commands, ``--method`` choices and help from here, so
this module imports nothing heavy (help stays fast); :func:`get_selector` loads a selector's module
only when it is asked for.

A *selector* (scikit-learn shape) is a class with a config: ``score(dataset) -> Dataset`` adds its
score columns and ``row_index`` (the original row); ``select(scored, n=... | ratio=...)`` keeps rows
by a *rule*: the method's own, or a named baseline over the same scores.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SelectorEntry:
    target: str  # "module:Class"
    help: str
    methods: tuple[str, ...]  # the rules it can select by; the first is its own


SELECTORS: dict[str, SelectorEntry] = {
    "cdas": SelectorEntry("curate.cdas:CDAS", "CodeACT: IFD complexity + k-means diversity",
                          ("cdas", "ifd", "length", "random")),
    "learnalign": SelectorEntry("curate.learnalign:LearnAlign", "LearnAlign: learnability x aligned GRPO gradients",
                                ("learnalign", "random", "ifd", "length", "learnability", "gradient",
                                 "gradient_cosine")),
}

RULES: dict[str, str] = {
    "cdas": "per k-means cluster, the highest IFD < 1 first (CodeACT)",
    "learnalign": "highest V_i <g_i, mean_j V_j g_j> (LearnAlign)",
    "random": "uniformly random rows (seeded)",
    "ifd": "highest IFD below 1",
    "length": "longest responses",
    "learnability": "highest p(1-p) alone",
    "gradient": "highest raw gradient alignment (norm-sensitive)",
    "gradient_cosine": "highest cosine to the mean unit gradient",
}


def methods_help(selector: str) -> str:
    """``--method`` help: every rule the selector takes, with its description."""
    own, *baselines = SELECTORS[selector].methods
    return f"{own} (default) or a baseline at the same count: " + "; ".join(
        f"{name}: {RULES[name]}" for name in baselines)


def get_selector(name: str, **params: Any) -> Any:
    """An instance of the named selector, e.g. ``get_selector("cdas", model="runs/tiny", ratio=0.4)``."""
    from curate.core.errors import check_fields

    check_fields([name], SELECTORS, what="selector")
    module, _, cls = SELECTORS[name].target.partition(":")
    return getattr(importlib.import_module(module), cls)(**params)

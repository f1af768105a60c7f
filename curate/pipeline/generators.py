"""Data generators a pipeline's ``data`` section names: each writes seeded, disjoint splits (no
question of one split appears in a later one) that the rest of the file reads as ``data:NAME``.

- ``arith``: :mod:`eval.tasks.arith` word problems; optionally a systematic slip in one split's
  worked answers (``curate demo``'s SFT demonstrations: for problems about ``slip_items`` a
  ``slip_rate`` share ends "#### N+1"), which the verifier catches and RL can unlearn.
- ``pyfunc``: :mod:`eval.tasks.pyfunc` "write a function that ..." problems with hidden tests; a
  later split holds no function (template and constants) of an earlier one.

Split i of a run with seed s is generated with seed ``1000 s + i``, the order of ``splits``.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from curate.core.errors import BadInputError


class Generator(NamedTuple):
    config: str  # "module:ConfigClass", the dataclass its ``config`` mapping is read into
    make: str  # "module:function": (config, sizes, seed) -> {split: Dataset}
    description: str


GENERATORS: dict[str, Generator] = {
    "arith": Generator("curate.pipeline.generators:ArithData", "curate.pipeline.generators:make_arith",
                       "synthetic +/- word problems with worked answers (optionally a slip in one split)"),
    "pyfunc": Generator("curate.pipeline.generators:PyfuncData", "curate.pipeline.generators:make_pyfunc",
                        "templated Python functions to write, with hidden unit tests, at difficulty levels"),
}


def _load(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def config_class(generator: str) -> type:
    return _load(GENERATORS[generator].config)


def make_splits(generator: str, config: Any, sizes: dict[str, int], seed: int) -> dict[str, Any]:
    return _load(GENERATORS[generator].make)(config, sizes, seed)


def disjoint(generate: Callable[..., Any], sizes: dict[str, int], seed: int, config: Any, key: str) -> dict[str, Any]:
    """Each split from its own seed, excluding every earlier split's ``key`` values."""
    seen: list[str] = []
    splits = {}
    for i, (name, size) in enumerate(sizes.items()):
        splits[name] = generate(size, seed=1000 * seed + i, config=config, exclude=seen)
        seen += splits[name][key]
    return splits


def _arith_problems():
    from eval.tasks.arith import ArithConfig

    return ArithConfig()


@dataclass
class ArithData:
    problems: Any = field(default_factory=_arith_problems)  # eval.tasks.arith.ArithConfig fields
    slip_split: str = "sft"
    slip_items: tuple[str, ...] = ()
    slip_rate: float = 0.0

    def __post_init__(self) -> None:
        from curate.core.config import from_mapping
        from eval.tasks.arith import ITEMS, ArithConfig

        if isinstance(self.problems, dict):
            self.problems = from_mapping(ArithConfig, self.problems, "problems")
        unknown = [item for item in self.slip_items if item not in ITEMS]
        if unknown:
            raise BadInputError(f"slip_items: unknown item '{unknown[0]}'; choose from {', '.join(ITEMS)}")
        if not 0 <= self.slip_rate <= 1:
            raise BadInputError(f"slip_rate must be in [0, 1], got {self.slip_rate}")

    def check_splits(self, splits: dict[str, int]) -> None:
        if self.slip_rate > 0 and self.slip_items and self.slip_split not in splits:
            raise BadInputError(f"slip_split '{self.slip_split}' is not a split: {', '.join(splits)}")


def make_arith(config: ArithData, sizes: dict[str, int], seed: int) -> dict[str, Any]:
    from eval.tasks.arith import generate, slip_answers

    splits = disjoint(generate, sizes, seed, config.problems, "question")
    if config.slip_rate > 0 and config.slip_items:
        config.check_splits(sizes)
        splits[config.slip_split] = slip_answers(splits[config.slip_split], config.slip_items, config.slip_rate,
                                                 seed=1000 * seed + 99)
    return splits


@dataclass
class PyfuncData:
    levels: tuple[int, ...] = (1, 2, 3)
    held_out_splits: tuple[str, ...] = ("test",)  # drawn only from held-out functions; the others never are

    def task_config(self) -> Any:
        from eval.tasks.pyfunc import PyfuncConfig

        return PyfuncConfig(levels=self.levels)

    def __post_init__(self) -> None:
        self.task_config()  # checked when the file is read

    def check_splits(self, splits: dict[str, int]) -> None:
        unknown = [name for name in self.held_out_splits if name not in splits]
        if unknown:
            raise BadInputError(f"held_out_splits: '{unknown[0]}' is not a split: {', '.join(splits)}")


def make_pyfunc(config: PyfuncData, sizes: dict[str, int], seed: int) -> dict[str, Any]:
    """Rows also carry ``completion`` (the body): SFT reads prompt-completion rows as they are, so a
    model learns to continue the header with its body, the very text the task's plain prompt asks
    for. ``held_out_splits`` draw only held-out functions, the other splits none
    (:func:`eval.tasks.pyfunc.held_out`), so a test problem is a function no training split holds."""
    from eval.tasks.pyfunc import generate

    seen: list[str] = []
    splits = {}
    for i, (name, size) in enumerate(sizes.items()):
        ds = generate(size, seed=1000 * seed + i, config=config.task_config(), exclude=seen,
                      side=name in config.held_out_splits)
        seen += ds["prompt"]
        splits[name] = ds.add_column("completion", ds["response"])
    return splits


def write_splits(generator: str, config: Any, sizes: dict[str, int], seed: int, folder: Path) -> dict[str, Path]:
    """Every split as ``folder/NAME.jsonl``."""
    from curate.llm.data import save_dataset

    paths = {}
    for name, ds in make_splits(generator, config, sizes, seed).items():
        paths[name] = save_dataset(ds, folder / f"{name}.jsonl")
    return paths

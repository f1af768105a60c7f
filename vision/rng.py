"""Every random state of a vision run, seeded from its config and saved with each checkpoint, so a
resumed run draws exactly what an uninterrupted one would: torch's global CPU (and, once used,
CUDA) generators, numpy's and python's global states, and the named ``torch.Generator``s the loop
and the method own (data order, augmentations, a method's sampling).
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_globals(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and python's global generators."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def capture(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """The global states and those of ``generators`` (by name), as a checkpoint entry."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                             "python": random.getstate(),
                             "generators": {name: g.get_state() for name, g in generators.items()}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    """Put back what :func:`capture` saved; every generator of the run must be in it."""
    missing = sorted(set(generators) - set(state["generators"]))
    if missing:
        raise ValueError(f"checkpoint has no random state for {missing}")
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    for name, generator in generators.items():
        generator.set_state(state["generators"][name])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)

"""The random-subset baseline: ``ipc`` seeded real images per class, no optimisation (the
synthetic set's own initialisation, so DM and ECHO start from exactly these images)."""
from __future__ import annotations

from vision.condense.base import Condenser


class RandomSubset(Condenser):
    name = "random"
    optimises = False

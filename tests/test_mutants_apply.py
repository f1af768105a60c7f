"""Every mutant of the mutation check (tests/mutants.py) still applies to the code: a refactor that
moves a mutant's text is caught by the main suite in seconds, not by the mutation run's exit code."""
from __future__ import annotations

import sys
from pathlib import Path


def test_every_mutant_still_applies():
    sys.path.insert(0, str(Path(__file__).parent))
    import mutants

    assert [m.name for m in mutants.stale_mutants(mutants.MUTANTS)] == []

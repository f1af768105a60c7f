"""Shared by the vision bad-input tests: a method's recipe with bad fields put in, and the check that
``curate vision METHOD`` refuses it in one line naming the file, exit 2, writing nothing."""
from __future__ import annotations

from pathlib import Path

import yaml

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "vision"


def refused(tmp_path: Path, capsys, method: str, config: dict, names_file: bool = True) -> str:
    """Run ``curate vision METHOD`` on ``config``; assert exit 2, one line (naming the file unless
    ``names_file`` is False: an error about a file the config points to names that field), nothing
    written; the line."""
    from curate.cli import main as curate_main

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "out" / "r.json"
    assert curate_main(["vision", method, "--config", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert str(path) in err or not names_file  # names the file
    assert not (tmp_path / "out").exists()
    return err


def recipe(method: str, section: str | None = None, bad: dict | None = None) -> dict:
    """The method's recipe, with ``bad`` fields put into ``section`` (None: the top level)."""
    config = yaml.safe_load((RECIPES / f"{method}.yaml").read_text())
    if bad and section is None:
        config.update(bad)
    elif bad:
        config[section] = {**(config.get(section) or {}), **bad}
    return config

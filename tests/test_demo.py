"""`curate demo --preset smoke`: the whole mini-lab (SFT from scratch, LearnAlign and baseline
scoring, GRPO per arm, held-out evaluation) runs offline and writes a well-formed table; a second
run resumes from what is on disk. Which arm wins is not tested."""
from __future__ import annotations

import json

from curate import demo
from curate.cli import main as curate_main


def test_smoke_demo_writes_the_table_and_plots(tmp_path, capsys):
    out = tmp_path / "demo"
    assert curate_main(["demo", "--preset", "smoke", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "results.json").read_text())
    preset = demo.PRESETS["smoke"]
    assert len(report["runs"]) == len(preset.arms) * len(preset.ns) * len(preset.seeds) + len(preset.seeds)
    assert [row["arm"] for row in report["table"]] == [*preset.arms, "full"]
    for row in report["table"][:-1]:
        assert set(row) == {"arm", *(f"N={n}" for n in preset.ns)}
        assert all(0 <= row[f"N={n}"]["mean"] <= 1 and row[f"N={n}"]["seeds"] == len(preset.seeds) for n in preset.ns)
    assert set(report["table"][-1]) == {"arm", f"N={preset.pool_size}"}
    assert sum(report["pool_success_rate"][k] for k in ("p_equals_0", "p_equals_1", "learnable")) == preset.pool_size
    assert "| arm |" in (out / "results.md").read_text() and "| arm |" in printed
    for name in ("pool_success_rate.png", "accuracy.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    # The arms trained on their own selections, from the same SFT model.
    selections = {r["arm"]: r["selected_success_rate"] for r in report["runs"]}
    assert set(selections) == {*preset.arms, "full"}

    model = out / "sft_model" / "model.safetensors"
    stamp = model.stat().st_mtime_ns
    assert curate_main(["demo", "--preset", "smoke", "--out", str(out)]) == 0  # resumes: nothing retrained
    assert model.stat().st_mtime_ns == stamp
    assert json.loads((out / "results.json").read_text())["table"] == report["table"]

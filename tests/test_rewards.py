"""RL rewards: task correctness, and the fraction of tests a code completion passes."""
from __future__ import annotations

import pytest

from curate.core.errors import BadInputError
from eval.humaneval import load_problems
from eval.rewards import CodePassReward, TaskReward, counting_check, check_from_asserts


@pytest.fixture(scope="module")
def reward():
    return CodePassReward(workers=2)


def test_counting_check_counts_each_assert_statement():
    test = "def check(candidate):\n    x = 2\n    assert candidate(x) == 4\n    for i in range(3):\n" \
           "        assert candidate(i) == 2 * i\n    assert candidate(1) == 3\n"
    namespace: dict = {}
    exec(counting_check(test), namespace)
    assert namespace["check"](lambda v: 2 * v) == (2, 3)  # the last assert fails, the loop counts once
    assert namespace["check"](lambda v: 3) == (1, 3)
    with pytest.raises(BadInputError, match="no function 'check'"):
        counting_check("def test():\n    assert True\n")


def test_humaneval_pass_fractions(reward):
    problem = load_problems()["HumanEval/0"]  # 7 asserts
    # Right only when the answer is False: passes the 3 asserts that expect False.
    always_false = "    return False\n"
    completions = [problem["canonical_solution"], always_false, "    while True:\n        pass\n",
                   "    return (\n", "    import sys; sys.exit(0)\n",
                   "    print('curatekit-counts-0 7 7')\n    return False\n"]
    n = len(completions)
    scores = reward([problem["prompt"]] * n, completions, test=[problem["test"]] * n,
                    entry_point=[problem["entry_point"]] * n)
    assert scores == pytest.approx([1.0, 3 / 7, 0.0, 0.0, 0.0, 3 / 7])


def test_mbpp_style_test_list_and_chat_completions(reward):
    tests = [["assert add(1, 2) == 3", "assert add(0, 2) == 2", "assert add(2, 2) == 4"]] * 2
    completions = [[{"role": "assistant", "content": "```python\ndef add(a, b):\n    return a + b if a else 0\n```"}],
                   "def add(a, b):\n    return a + b\n"]
    assert reward(["p", "p"], completions, test_list=tests) == pytest.approx([2 / 3, 1.0])
    assert check_from_asserts(["assert f(1)"]).startswith("def check(candidate):\n    assert f(1)")
    with pytest.raises(BadInputError, match="'test' and 'entry_point'"):
        reward(["p"], ["x"], answer=["1"])


def test_gsm8k_task_reward():
    reward = TaskReward("gsm8k")
    scores = reward(["q"] * 3, ["so #### 72", [{"role": "assistant", "content": "it is 71"}], "72 apples"],
                    gold=["72", "72", "72"], trainer_state=None)
    assert scores == [1.0, 0.0, 1.0]
    # Each completion against its own row's gold (kills a reward that reads one row's columns for all).
    scores = reward(["q"] * 3, ["so #### 72", [{"role": "assistant", "content": "it is 5"}], "72 apples"],
                    gold=["72", "5", "9"], trainer_state=None)
    assert scores == [1.0, 1.0, 0.0]
    assert reward.__name__ == "gsm8k_correct"


def test_code_task_reward_reads_the_code_prompt_rl_grpo_keeps():
    # rl.grpo gives TRL the rendered prompt as `prompt` and moves a code task's own to `code_prompt`:
    # the verifier must judge prompt + completion with the task's header (kills a reward that fails
    # with KeyError there, or one that judges the completion against the rendered chat prompt).
    from eval.tasks.pyfunc import generate

    rows = generate(2, seed=3)
    reward = TaskReward("pyfunc")
    columns = {name: list(rows[column]) for name, column in (("code_prompt", "prompt"), ("test", "test"),
                                                            ("entry_point", "entry_point"))}
    chat = ["<|im_start|>user\nwrite it<|im_end|>\n"] * 2
    assert reward(chat, [rows[0]["response"], rows[0]["response"]], **columns) == [1.0, 0.0]


@pytest.mark.parametrize("task_id, completion", [
    ("HumanEval/4", "    return 0.0\nasync def abs(x): pass\nabs = lambda x: 0\n"),  # a builtin the test uses
    ("HumanEval/32", "    return 0.0\npoly = lambda xs, x: 0.0\n"),  # the prompt's helper the test uses
    ("HumanEval/38", "    return s\nencode_cyclic = lambda s: s\n"),
    ("HumanEval/50", "    return s\nencode_shift = lambda s: s\n"),
])
def test_a_completion_cannot_replace_what_the_test_calls(reward, task_id, completion):
    """Found by a red-team review: the reward proxied every function the test calls by name, so a
    completion could redefine abs or the prompt's helpers. Only the entry point (and, for MBPP,
    functions neither the test, the prompt nor the builtins bind) may come from the completion."""
    from eval.humaneval import load_problems

    p = load_problems()[task_id]
    scores = reward([p["prompt"]], [completion], test=[p["test"]], entry_point=[p["entry_point"]])
    assert scores == [0.0]


def test_an_mbpp_completion_cannot_replace_a_builtin(reward):
    code = "def similar_elements(a, b):\n    return 0\nasync def set(x): pass\nset = lambda x: 0\n"
    tests = ["assert set(similar_elements((3, 4, 5, 6), (5, 7, 4, 10))) == set((4, 5))"]
    assert reward(["q"], [code], test_list=[tests]) == [0.0]
    honest = "def similar_elements(a, b):\n    return tuple(set(a) & set(b))\n"
    assert reward(["q"], [honest], test_list=[tests]) == [1.0]

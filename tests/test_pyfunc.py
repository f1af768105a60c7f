"""The synthetic `pyfunc` code task: every template's canonical body passes its hidden tests in the
sandbox while trivial and borrowed bodies fail, the tests are hidden and discriminating, generation
is seeded, distinct and level-aware, and the task works through rewards and `curate eval`."""
from __future__ import annotations

import ast
import json

import pytest

from curate.core.errors import BadInputError
from eval.tasks import BUILTIN, TaskOptions, get_task
from eval.tasks.pyfunc import held_out, LEVELS, TEMPLATES, PyfuncConfig, generate

OPTIONS = TaskOptions(timeout_s=5)
PER_TEMPLATE = 5  # rows of each template in the sandbox batch


def _example(prompt: str) -> tuple[str, str]:
    """The docstring's example call and its output, as written."""
    line = prompt.split("One example: ", 1)[1].split("\n", 1)[0]
    call, out = line.rsplit(" == ", 1)
    return call, out


def _first_arg(prompt: str) -> str:
    return ast.parse(prompt + "    pass\n").body[0].args.args[0].arg


def _asserts(test: str) -> list[tuple[str, str]]:
    """(arguments, expected) of each ``assert candidate(...) == ...`` in a check function."""
    check = ast.parse(test).body[0]
    pairs = []
    for stmt in check.body:
        compare = stmt.test
        call = compare.left
        pairs.append((", ".join(ast.unparse(a) for a in call.args), ast.unparse(compare.comparators[0])))
    return pairs


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    """PER_TEMPLATE problems of every template, grouped by template (so row i + PER_TEMPLATE has
    another template)."""
    out = []
    for template in TEMPLATES:
        out += list(generate(PER_TEMPLATE, seed=11, config=PyfuncConfig(templates=(template.name,))))
    return out


@pytest.fixture(scope="module")
def verdicts(rows) -> list[list]:
    """One sandbox batch: per row, its canonical body, the docstring example's output hard-coded,
    the canonical body of a row of another template, and ``return <first argument>``."""
    completions = []
    for i, row in enumerate(rows):
        other = rows[(i + PER_TEMPLATE) % len(rows)]
        assert other["template"] != row["template"]
        completions.append([row["canonical_solution"], f"    return {_example(row['prompt'])[1]}\n",
                            other["canonical_solution"], f"    return {_first_arg(row['prompt'])}\n"])
    return get_task("pyfunc").verify(rows, completions, OPTIONS)


def test_every_template_is_varied_and_at_every_level(rows):
    # Kills: a level with too few templates; a template whose draws never vary.
    assert {r["level"] for r in rows} == set(LEVELS)
    for level in LEVELS:
        assert sum(t.level == level for t in TEMPLATES) >= 6
    assert {r["template"] for r in rows} == {t.name for t in TEMPLATES}


def test_canonical_solutions_pass_their_hidden_tests(rows, verdicts):
    # Kills: a body that disagrees with its template's reference (wrong operator, >= for >, off by one),
    # a body not indented as the prompt's function body, test code that does not run.
    failed = [(r["template"], v[0].error) for r, v in zip(rows, verdicts) if not v[0].correct]
    assert failed == []


def test_hard_coded_example_output_fails(rows, verdicts):
    # Kills: hidden tests on the example's own input, or expected values all computed from it.
    passed = [r["template"] for r, v in zip(rows, verdicts) if v[1].correct]
    assert passed == []


def test_another_templates_solution_fails(rows, verdicts):
    # Kills: tests too few or too weak to tell two tasks apart (e.g. one assert on an empty input).
    passed = [r["template"] for r, v in zip(rows, verdicts) if v[2].correct]
    assert passed == []


def test_returning_the_argument_fails(rows, verdicts):
    # Kills: hidden inputs on which the answer is the input (one-word reverse_words, x % k for x < k).
    passed = [r["template"] for r, v in zip(rows, verdicts) if v[3].correct]
    assert passed == []


def test_prompt_is_a_function_header_and_hides_the_tests(rows):
    # Kills: the example drawn among the hidden inputs; tests leaked into the docstring; a prompt +
    # body that is not one function named entry_point; the wrong number of tests.
    for row in rows:
        tree = ast.parse(row["prompt"] + row["canonical_solution"])
        assert len(tree.body) == 1 and tree.body[0].name == row["entry_point"]
        assert row["response"] == row["canonical_solution"] and row["canonical_solution"].endswith("\n")
        asserts = _asserts(row["test"])
        assert len(asserts) == PyfuncConfig().tests and len({a for a, _ in asserts}) == len(asserts)
        example_call, _ = _example(row["prompt"])
        for args, _ in asserts:
            assert f"{row['entry_point']}({args})" != example_call
            assert f"{row['entry_point']}({args})" not in row["prompt"]
        assert "assert" not in row["prompt"] and "candidate" not in row["prompt"]


def test_hidden_tests_tell_trivial_bodies_apart_on_every_train_row():
    # Kills: tests drawn without the discrimination check (e.g. five palindromes, all True), which a
    # constant or `return <argument>` body would pass; checked on all 2000 train rows, no sandbox.
    for row in get_task("pyfunc").load(TaskOptions(split="train")):
        asserts = [(ast.literal_eval(f"({a},)"), ast.literal_eval(o)) for a, o in _asserts(row["test"])]
        outputs = [o for _, o in asserts]
        example = ast.literal_eval(_example(row["prompt"])[1])
        assert any(o != example for o in outputs), row["test"]
        assert any(o != outputs[0] for o in outputs), row["test"]
        assert any(o != args[0] for args, o in asserts), row["test"]


def test_docstring_example_is_what_the_canonical_solution_returns(rows):
    # Kills: the example's output computed from another input or another template's reference.
    for row in rows:
        scope: dict = {}
        exec(row["prompt"] + row["canonical_solution"], scope)  # our own generated code
        call, out = _example(row["prompt"])
        assert eval(call, scope) == ast.literal_eval(out), row["prompt"]


def test_generation_is_seeded_and_distinct():
    # Kills: an unseeded draw (global random), ids or prompts that repeat.
    first = generate(300, seed=7)
    assert first.to_list() == generate(300, seed=7).to_list()
    assert first["prompt"] != generate(300, seed=8)["prompt"]
    assert len(set(first["prompt"])) == 300
    assert first["task_id"] == [f"pyfunc/7/{i}" for i in range(300)]
    assert set(first.column_names) == {"task_id", "prompt", "response", "canonical_solution", "test",
                                       "entry_point", "level", "template", "variant"}


def test_exclude_is_honoured():
    # Kills: exclude ignored (with the same seed the excluded prompts would come back).
    plain = generate(40, seed=3)
    excluded = plain["prompt"][:20]
    again = generate(40, seed=3, exclude=excluded)
    assert not set(excluded) & set(again["prompt"]) and len(set(again["prompt"])) == 40


def test_levels_and_templates_are_honoured():
    # Kills: the level or template filter dropped, or one level never drawn.
    assert set(generate(60, seed=2, config=PyfuncConfig(levels=(1,)))["level"]) == {1}
    assert set(generate(60, seed=2, config=PyfuncConfig(levels=(2, 3)))["level"]) == {2, 3}
    assert set(generate(60, seed=2)["level"]) == set(LEVELS)
    config = PyfuncConfig(templates=("caesar", "clamp"), tests=3)
    picked = generate(20, seed=2, config=config)
    assert set(picked["template"]) == {"caesar", "clamp"}
    assert all(len(_asserts(t)) == 3 for t in picked["test"])


def test_default_splits_are_disjoint_and_limited():
    # Kills: a test split that repeats train prompts, or train functions under other names and
    # examples (the same template and constants: recall, not a held-out function); limit or split ignored.
    task = get_task("pyfunc")
    train, test = (task.load(TaskOptions(split=s)) for s in ("train", "test"))
    assert (len(train), len(test)) == (2000, 164)
    assert not set(train["prompt"]) & set(test["prompt"])
    assert not set(train["variant"]) & set(test["variant"])
    assert all(held_out(v) for v in test["variant"]) and not any(held_out(v) for v in train["variant"])
    assert len(set(test["template"])) >= 15  # still varied with the train functions held out
    assert not set(train["task_id"]) & set(test["task_id"])
    assert set(test["level"]) == set(LEVELS)
    assert task.load(TaskOptions(split="test", limit=4))["task_id"] == test["task_id"][:4]


def test_user_rows_are_read_and_checked(tmp_path):
    # Kills: --data ignored (the generated split returned), HumanEval columns not checked.
    rows = generate(5, seed=4).to_list()
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = get_task("pyfunc")
    assert task.load(TaskOptions(source=str(path), split="train"))["prompt"] == [r["prompt"] for r in rows]
    path.write_text("".join(json.dumps({"prompt": r["prompt"], "entry_point": r["entry_point"]}) + "\n" for r in rows))
    with pytest.raises(BadInputError, match="column\\(s\\) test"):
        task.load(TaskOptions(source=str(path), split="train"))


@pytest.mark.parametrize("make, match", [
    (lambda: PyfuncConfig(levels=(4,)), "levels: unknown level 4"),
    (lambda: PyfuncConfig(levels=()), "levels must name"),
    (lambda: PyfuncConfig(templates=("sorting",)), "templates: unknown template 'sorting'"),
    (lambda: PyfuncConfig(levels=(1,), templates=("caesar",)), "none at levels"),
    (lambda: PyfuncConfig(tests=1), "tests must be in"),
    (lambda: get_task("pyfunc").load(TaskOptions(split="validation")), "splits 'train' and 'test', got 'validation'"),
])
def test_bad_settings_are_one_line_errors(make, match):
    with pytest.raises(BadInputError, match=match) as err:
        make()
    assert "\n" not in str(err.value)


def test_task_is_registered_like_humaneval():
    task = get_task("pyfunc")
    assert "pyfunc" in BUILTIN and task.headline == "pass@1" and task.ks == (1, 5, 10)
    assert task.stop(TaskOptions(), False) == get_task("humaneval").stop(TaskOptions(), False)


def test_task_reward_scores_the_canonical_body_one(rows):
    # Kills: a reward that reads one row's tests for every completion, or that passes anything.
    from eval.rewards import TaskReward

    picked = [rows[0], rows[len(rows) // 2], rows[-1]]
    columns = {k: [r[k] for r in picked] for k in ("prompt", "test", "entry_point")}
    reward = TaskReward("pyfunc", OPTIONS)
    completions = [picked[0]["canonical_solution"], "    return None\n", picked[1]["canonical_solution"]]
    assert reward(columns["prompt"], completions, **columns) == [1.0, 0.0, 0.0]
    assert reward.__name__ == "pyfunc_correct"


def test_cli_eval_end_to_end(tiny_model_dir, tmp_path, capsys):
    # Kills: the task missing from `curate eval`, or its verdicts not reaching the summary.
    from curate.cli import main
    from test_evaluate import _lines

    out = tmp_path / "model"
    assert main(["eval", "pyfunc", "--model", str(tiny_model_dir), "--limit", "4", "--max-new-tokens", "16",
                 "--out", str(out), "--device", "cpu"]) == 0
    samples, summary = _lines(out / "samples.jsonl"), json.loads((out / "summary.json").read_text())
    assert [s["task_id"] for s in samples] == [f"pyfunc/1/{i}" for i in range(4)]
    assert {"passed", "result", "completion"} <= samples[0].keys()
    assert summary["headline"] == "pass@1" and 0.0 <= summary["pass@1"] <= 1.0 and summary["problems"] == 4
    assert "pass@1" in capsys.readouterr().out

    test = get_task("pyfunc").load(TaskOptions(split="test", limit=4))
    sample_file = tmp_path / "canonical.jsonl"
    sample_file.write_text("".join(json.dumps({"task_id": r["task_id"], "completion": r["canonical_solution"]}) + "\n"
                                   for r in test))
    assert main(["eval", "pyfunc", "--samples", str(sample_file), "--out", str(tmp_path / "canonical")]) == 0
    assert json.loads((tmp_path / "canonical" / "summary.json").read_text())["pass@1"] == 1.0

"""The task registry and the GSM8K / HumanEval task units."""
from __future__ import annotations

import pytest

from curate.core.errors import BadInputError
from eval.tasks import TASKS, TaskOptions, get_task
from eval.tasks import gsm8k


def test_registry_lists_the_builtin_tasks():
    assert {"gsm8k", "humaneval"} <= set(TASKS)
    with pytest.raises(BadInputError, match="unknown task 'mmlu'.*gsm8k"):
        get_task("mmlu")


def test_gsm8k_rows_carry_gold_numbers():
    rows = get_task("gsm8k").load(TaskOptions(limit=3))
    assert rows.column_names == ["task_id", "question", "answer", "gold"]
    assert rows[0]["task_id"] == "gsm8k/0"
    assert rows[0]["answer"].endswith(f"#### {rows[0]['gold']}")


def test_gsm8k_plain_prompts_zero_and_few_shot(tiny_model):
    _, tokenizer = tiny_model
    task = get_task("gsm8k")
    row = task.load(TaskOptions(limit=1))[0]
    zero = task.build_prompt(row, tokenizer, TaskOptions(chat=False))
    assert zero == f"Question: {row['question']}\nAnswer:"
    three = task.build_prompt(row, tokenizer, TaskOptions(chat=False, num_fewshot=3))
    assert three.count("Question: ") == 4 and three.endswith(zero)
    assert three.count("####") == 3  # the worked examples keep their final answers
    assert three == task.build_prompt(row, tokenizer, TaskOptions(chat=False, num_fewshot=3))  # seeded
    assert task.stop(TaskOptions(), False) == ("Question:", "\n\n\n")


def test_gsm8k_chat_prompt_has_examples_as_turns(tiny_model):
    _, tokenizer = tiny_model
    task = get_task("gsm8k")
    row = task.load(TaskOptions(limit=1))[0]
    prompt = task.build_prompt(row, tokenizer, TaskOptions(chat=True, num_fewshot=2, system="Be brief."))
    assert prompt.count("<|im_start|>user") == 3 and prompt.count("<|im_start|>assistant") == 3
    assert prompt.startswith("<|im_start|>system\nBe brief.")
    assert prompt.endswith("<|im_start|>assistant\n")


def test_fewshot_never_shows_the_question_itself():
    pool = [(f"q{i}", f"a{i} #### {i}") for i in range(6)]
    for seed in range(20):
        examples = gsm8k.fewshot_examples(5, seed, "q3", pool)
        assert len(examples) == 5 and ("q3", "a3 #### 3") not in examples
    with pytest.raises(BadInputError, match="num_fewshot=6"):
        gsm8k.fewshot_examples(6, 0, "q", pool)


def test_gsm8k_verifier_modes():
    task = get_task("gsm8k")
    row = {"gold": "1000"}
    texts = ["so the total is 1,000 dollars", "#### 1,000", "The answer is $1000.00.", "no idea"]
    flexible = task.verify([row], [texts], TaskOptions(answer_mode="flexible"))[0]
    strict = task.verify([row], [texts], TaskOptions(answer_mode="strict"))[0]
    assert [v.correct for v in flexible] == [True, True, True, False]
    assert [v.correct for v in strict] == [False, True, True, False]
    assert strict[0].error == "no answer found" and flexible[3].answer is None


def test_humaneval_task(tiny_model):
    _, tokenizer = tiny_model
    task = get_task("humaneval")
    rows = task.load(TaskOptions(limit=2))
    assert rows["task_id"] == ["HumanEval/0", "HumanEval/1"]
    assert task.build_prompt(rows[0], tokenizer, TaskOptions(chat=False)) == rows[0]["prompt"]
    chat = task.build_prompt(rows[0], tokenizer, TaskOptions(chat=True))
    assert rows[0]["prompt"] in chat and "```python" in chat
    verdicts = task.verify(list(rows), [[rows[0]["canonical_solution"], "    return None\n"],
                                        [rows[1]["canonical_solution"]]], TaskOptions())
    assert [[v.correct for v in judged] for judged in verdicts] == [[True, False], [True]]
    assert verdicts[0][1].extra["result"].startswith("failed: ")
    with pytest.raises(BadInputError, match="--data"):
        task.load(TaskOptions(source="x.jsonl"))

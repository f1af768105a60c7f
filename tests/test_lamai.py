"""LaMAI (active inquiry): the spec's property tests on the hidden-slot world and GSM8K-Hidden, the
data tests, the CLI end to end on a tiny model, bad input and a SIGKILLed run resuming."""
from __future__ import annotations

import json
import math
import os
import random
import re

import numpy as np
import pytest

from curate.cli import main as curate_main
from curate.core.cache import KILL_ENV
from eval.inquiry.dialogue import DONT_KNOW, Problem, Turn
from eval.inquiry.embed import HashingEmbedder, semantic_classes, spread
from eval.inquiry.loop import InquiryConfig, inquire
from eval.inquiry.registry import POLICIES, SCORERS
from eval.inquiry.scorers import ScoreContext, eig_scores, uncertainty_scores
from eval.inquiry.users import RetrievalUser, RuleUser, leaks, slot_of
from eval.inquiry.world import IRRELEVANT, QUESTIONS, ScriptedAssistant, WorldConfig, exact_eig, make_problem
from eval.tasks import TaskOptions, get_task
from eval.tasks.gsm8k_hidden import hide_sentence, sentences
from forked import run_forked

EMBED = HashingEmbedder()
WORLD = ScriptedAssistant()


class Constant:
    """An assistant whose every sampled answer is the same: u must be 0 and nothing asked."""

    name = "constant"

    def __init__(self, answers=("42",)):
        self.answers = answers

    def sample_answers(self, problem, dialogues, n, seed):
        return [[self.answers[i % len(self.answers)] for i in range(n)] for _ in dialogues]

    def propose_questions(self, problem, dialogue, n, seed):
        return [f"Question {i}?" for i in range(n)]

    def imagine_replies(self, problem, dialogue, questions, n, seed):
        return [[DONT_KNOW] * n for _ in questions]

    def final_answer(self, problem, dialogue):
        return self.answers[0]

    def answer_key(self, answer):
        return answer


# --- 1. the gate measures spread across samples ------------------------------------------------------

def test_spread_is_the_trace_of_the_covariance_over_samples():
    # kills: the variance taken over embedding dimensions (identical rows would then give u > 0)
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(7, 5))
    assert spread(samples) == pytest.approx(np.trace(np.cov(samples, rowvar=False, bias=True)))
    same = np.tile(EMBED.embed(["the answer is 12"]), (5, 1))
    assert np.var(same, axis=1).max() > 0 and spread(same) == 0.0


def test_identical_answers_ask_nothing_and_disagreeing_answers_ask():
    problem = Problem("p", "How old?", ("hidden",), "42")
    calm = inquire(problem, Constant(("42",)), RuleUser(), InquiryConfig(seed=3), EMBED)
    assert calm.questions_asked == 0 and calm.trace[0]["u"] == 0.0 and len(calm.trace) == 1
    torn = inquire(problem, Constant(("41", "42", "43")), RuleUser(), InquiryConfig(seed=3, turns=2), EMBED)
    assert torn.trace[0]["u"] > 0 and torn.questions_asked == 2  # asks every turn it may, then answers


# --- 2. selection finds the informative question (hidden-slot world) --------------------------------

def _context(problem, samples=5, replies=5, seed=0, dialogue=()):
    [answers] = WORLD.sample_answers(problem, [dialogue], samples, seed)
    return ScoreContext(WORLD, problem, dialogue, answers, EMBED, replies, samples, 0.85, seed)


def test_the_closed_form_eig_of_the_world():
    problem = make_problem(0, WorldConfig(candidates=4, seed=1))
    key, partial = problem.meta["key"], problem.meta["partial"]
    shared = next(s for s in QUESTIONS if s not in (key, partial, "pet"))
    assert exact_eig(problem, (), QUESTIONS[key]) == pytest.approx(math.log(4))
    assert exact_eig(problem, (), QUESTIONS[partial]) == pytest.approx(math.log(2))
    assert exact_eig(problem, (), QUESTIONS[shared]) == 0.0 and exact_eig(problem, (), IRRELEVANT) == 0.0
    answered = (Turn(QUESTIONS[key], problem.meta["slots"][key]),)
    assert exact_eig(problem, answered, QUESTIONS[partial]) == 0.0  # nothing left to learn


def test_sampled_eig_matches_the_closed_form():
    # kills: imagined replies conditioned on another question (the estimates move to the wrong rows)
    problem = make_problem(2, WorldConfig(candidates=4, seed=0))
    questions = [*QUESTIONS.values(), IRRELEVANT]
    scores = eig_scores(_context(problem, samples=400, replies=40, seed=5), questions)
    exact = [exact_eig(problem, (), q) for q in questions]
    assert np.abs(scores - exact).max() < 0.12, (scores, exact)
    assert scores[list(QUESTIONS).index(problem.meta["key"])] == pytest.approx(math.log(4), abs=0.12)


@pytest.mark.parametrize("scorer", ["uncertainty", "eig"])
def test_both_scorers_pick_the_key_question_and_the_loop_then_stops(scorer):
    # kills: argmin instead of argmax, ranking by question length, replies for the wrong question
    picked = 0
    for index in range(20):
        problem = make_problem(index, WorldConfig(seed=4))
        run = inquire(problem, WORLD, RuleUser(), InquiryConfig(scorer=scorer, seed=index), EMBED)
        first = run.trace[0]
        asked = first["asked"][0]
        picked += slot_of(asked) == problem.meta["key"]
        if slot_of(asked) == problem.meta["key"]:
            assert run.trace[1]["u"] == 0.0 and len(run.trace) == 2 and run.final == problem.gold
    assert picked >= 18, picked  # T' = 5 imagined replies: a partial slot may now and then look as spread


def test_lengths_do_not_decide_the_choice():
    # the key question is never systematically the longest or the shortest candidate
    problem = make_problem(0, WorldConfig(seed=4))
    questions = [*QUESTIONS.values(), IRRELEVANT]
    scores = uncertainty_scores(_context(problem, replies=30), questions)
    assert questions[int(np.argmax(scores))] == QUESTIONS[problem.meta["key"]]
    assert int(np.argmax([len(q) for q in questions])) != int(np.argmax(scores))


def test_semantic_classes_merge_equal_texts_only_above_the_threshold():
    labels = semantic_classes(["1975", "1975", "1980", "", "1980"], EMBED)
    assert labels[0] == labels[1] and labels[2] == labels[4] and len(set(labels)) == 3


# --- 3. dialogue hygiene ------------------------------------------------------------------------------

def test_the_rule_user_answers_only_the_slot_asked():
    problem = make_problem(1, WorldConfig(seed=2))
    hidden_values = set(problem.meta["slots"].values())
    for question in [IRRELEVANT, "How are you today?", "Is it raining?", "What is the answer?"]:
        assert RuleUser().reply(problem, question) == DONT_KNOW
    for slot, question in QUESTIONS.items():
        reply = RuleUser().reply(problem, question)
        assert reply == (problem.meta["slots"][slot] if slot in problem.meta["slots"] else DONT_KNOW)
    assert RuleUser().reply(problem, IRRELEVANT) not in hidden_values


def test_the_retrieval_user_never_returns_hidden_text_to_an_irrelevant_question(gsm8k_dir):
    rows = list(get_task("gsm8k-hidden").load(TaskOptions(limit=150)))
    user = RetrievalUser()
    irrelevant = [IRRELEVANT, "What time is it?", "Do you like music?", "Where were you born?"]
    for row in rows:
        problem = Problem(row["task_id"], row["question"], (row["hidden"],), row["gold"])
        assert all(user.reply(problem, q) == DONT_KNOW for q in irrelevant), row["hidden"]
    relevant = [user.reply(Problem(r["task_id"], r["question"], (r["hidden"],), r["gold"]), ask_for(r["hidden"]))
                for r in rows]
    assert np.mean([reply == r["hidden"] for reply, r in zip(relevant, rows)]) > 0.95


def test_at_most_r_turns_and_every_policy_draws_the_same_samples():
    problem = make_problem(5, WorldConfig(seed=3))
    runs = {}
    for policy in ("lamai", "random", "first", "all"):
        runs[policy] = inquire(problem, Constant(("1", "2")), RuleUser(),
                               InquiryConfig(policy=policy, turns=2, seed=9), EMBED)
        assert len([s for s in runs[policy].trace if "asked" in s]) <= 2
    world = {p: inquire(problem, WORLD, RuleUser(), InquiryConfig(policy=p, seed=9), EMBED) for p in POLICIES
             if p not in ("none", "full")}
    first_turns = [(r.trace[0]["answers"], r.trace[0]["candidates"]) for r in world.values()]
    assert all(t == first_turns[0] for t in first_turns)
    # "all" asks its five at once; in turn 2 the same five come back, are already asked, and it stops
    assert runs["all"].questions_asked == 5 and runs["first"].questions_asked == 2


def test_the_final_prompt_holds_every_question_and_answer_in_order(tiny_model):
    from curate.llm.generation import HFGenerator
    from eval.inquiry.llm import ModelAssistant

    model, tokenizer = tiny_model

    class Recording(HFGenerator):
        prompts: list[str] = []

        def generate(self, prompts, **sampling):
            self.prompts.extend(prompts)
            return super().generate(prompts, **{**sampling, "max_new_tokens": 4})

    generator = Recording(model, tokenizer, progress=False)
    task = get_task("gsm8k-hidden")
    assistant = ModelAssistant(generator, task, TaskOptions())
    problem = Problem("p", "How many apples are left?", ("Tom has 5 apples.",), "3")
    dialogue = (Turn("How many apples does Tom have?", "Tom has 5 apples."), Turn("Did he eat any?", "Two."))
    assistant.final_answer(problem, dialogue)
    prompt = generator.prompts[-1]
    positions = [prompt.index(text) for t in dialogue for text in (f"Q: {t.question}", f"A: {t.answer}")]
    assert positions == sorted(positions) and prompt.index(problem.visible) < positions[0]


def ask_for(hidden: str) -> str:
    """The oracle's question for a hidden sentence: the sentence with its first number asked for."""
    return re.sub(r"\$?\d[\d,.]*", "how many", hidden, count=1).rstrip(".") + "?"


class GSM8KOracle:
    """Solves a GSM8K-Hidden item exactly when its hidden sentence is in the dialogue; otherwise its
    answers are random numbers. It knows which fact is missing (it proposes that question among
    irrelevant ones) but not its value, and imagines any number as the reply."""

    name = "oracle"

    def _solved(self, problem, dialogue):
        return any(problem.hidden[0] in turn.answer for turn in dialogue)

    def sample_answers(self, problem, dialogues, n, seed):
        rng = random.Random(seed)
        return [[problem.gold if self._solved(problem, d) else str(rng.randrange(1000)) for _ in range(n)]
                for d in dialogues]

    def propose_questions(self, problem, dialogue, n, seed):
        pool = [ask_for(problem.hidden[0]), IRRELEVANT, "What time is it?", "Do you like music?"]
        random.Random(seed).shuffle(pool)
        return pool[:n]

    def imagine_replies(self, problem, dialogue, questions, n, seed):
        rng = random.Random(seed)
        return [[DONT_KNOW] * n if q in (IRRELEVANT, "What time is it?", "Do you like music?")
                else [f"{rng.randrange(1000)}" for _ in range(n)] for q in questions]

    def final_answer(self, problem, dialogue):
        return f"The answer is {problem.gold}." if self._solved(problem, dialogue) else "The answer is -1."

    def answer_key(self, answer):
        return answer


def test_with_an_oracle_gsm8k_hidden_needs_the_question_and_the_retrieval_user_gives_it(gsm8k_dir):
    task = get_task("gsm8k-hidden")
    rows = list(task.load(TaskOptions(limit=60)))
    problems = [Problem(r["task_id"], r["question"], (r["hidden"],), r["gold"]) for r in rows]
    accuracy = {}
    for policy in ("none", "lamai"):
        finals = [[inquire(p, GSM8KOracle(), RetrievalUser(), InquiryConfig(policy=policy, seed=1), EMBED).final]
                  for p in problems]
        accuracy[policy] = np.mean([v[0].correct for v in task.verify(rows, finals, TaskOptions())])
    assert accuracy["none"] < 0.05 and accuracy["lamai"] > 0.95, accuracy


def test_the_registry_names_every_scorer():
    from eval.inquiry.scorers import SCORERS as IMPLEMENTED

    assert set(SCORERS) == set(IMPLEMENTED)


def test_leaks_marks_replies_that_state_the_gold_number():
    assert leaks("It is 1,200 dollars.", "1200") and not leaks("It is 12000.", "1200") and not leaks(DONT_KNOW, "3")
    assert leaks("It is 18.", "18") and not leaks("It is 18.5 or 1.18.", "18")  # a decimal is another number


# --- GSM8K-Hidden data -------------------------------------------------------------------------------

def test_gsm8k_hidden_hides_one_non_final_sentence_with_a_number(gsm8k_dir):
    task = get_task("gsm8k-hidden")
    rows = task.load(TaskOptions())
    assert len(rows) == 1225  # of 1,319 test questions (spec)
    for row in rows.select(range(200)):
        parts = sentences(row["full_question"])
        assert row["hidden"] in parts[:-1] and re.search(r"\d", row["hidden"])
        assert row["question"] == " ".join(p for p in parts if p != row["hidden"]) or parts.count(row["hidden"]) > 1
        assert row["question"].endswith(parts[-1])
    assert list(task.load(TaskOptions(limit=50))["hidden"]) == list(rows.select(range(50))["hidden"])
    other = task.load(TaskOptions(limit=200, fewshot_seed=7))["hidden"]
    assert other != list(rows.select(range(200))["hidden"])  # the draw follows the seed
    assert hide_sentence("How many are left?", 0) is None


# --- CLI, bad input, resume --------------------------------------------------------------------------

def test_cli_runs_end_to_end_on_a_tiny_model(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = curate_main(["eval", "gsm8k-hidden", "--model", str(tiny_model_dir), "--limit", "2", "--out", str(out),
                        "--max-new-tokens", "8", "--calibration-size", "2", "--turns", "1", "--candidates", "2",
                        "--replies", "2", "--answer-samples", "3", "--threshold", "0"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert summary["problems"] == 2 and summary["inquiry"]["policy"] == "lamai" and summary["threshold"] == 0
    assert all(r["questions_asked"] <= 1 and len(r["u"]) >= 1 and "dialogue" in r for r in records)
    assert "questions" in capsys.readouterr().out


@pytest.mark.parametrize("flags, message", [
    (["--threshold", "high"], "--threshold: expected a number or 'median', got 'high'"),
    (["--user", "rule"], "invalid choice: 'rule'"),
    (["--inquiry", "ask"], "invalid choice: 'ask'"),
    (["--turns", "-1"], "turns must be >= 0, got -1"),
    (["--candidates", "0"], "--candidates must be a positive integer, got 0"),
])
def test_bad_inquiry_flags_exit_2_before_any_work(tiny_model_dir, tmp_path, capsys, monkeypatch, flags, message):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the flags were checked")

    monkeypatch.setattr("curate.llm.generation.load_generator", refuse)
    out = tmp_path / "out"
    try:
        code = curate_main(["eval", "gsm8k-hidden", "--model", str(tiny_model_dir), "--out", str(out), *flags])
    except SystemExit as exit:
        code = exit.code
    assert code == 2 and message in capsys.readouterr().err
    assert not out.exists()


def _child(model_dir, out, kill):
    os.environ.pop(KILL_ENV, None)
    if kill:
        os.environ[KILL_ENV] = "inquire:1"
    from eval.inquiry.evaluate import InquiryEvalConfig, evaluate_inquiry
    from eval.inquiry.llm import Sampling

    evaluate_inquiry(InquiryEvalConfig(
        model=str(model_dir), out_dir=str(out), inquiry=InquiryConfig(samples=3, candidates=2, replies=2, turns=1,
                                                                      seed=4),
        calibration=2, sampling=Sampling(answer_tokens=6, question_tokens=6), chunk_size=1, progress=False,
        options=TaskOptions(limit=3), device="cpu"))


def test_a_killed_run_resumes_to_the_identical_result(tiny_model_dir, tmp_path):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert run_forked(_child, tiny_model_dir, whole, False) == 0
    assert run_forked(_child, tiny_model_dir, resumed, True) == -9
    assert not (resumed / "samples.jsonl").exists()
    assert run_forked(_child, tiny_model_dir, resumed, False) == 0
    assert (whole / "samples.jsonl").read_text() == (resumed / "samples.jsonl").read_text()


def test_the_model_user_is_prompted_with_the_hidden_context_and_replies_in_one_line(tiny_model):
    from curate.llm.generation import HFGenerator
    from eval.inquiry.users import ModelUser

    model, tokenizer = tiny_model
    seen: list[str] = []

    class Recording(HFGenerator):
        def generate(self, prompts, **sampling):
            seen.extend(prompts)
            return super().generate(prompts, **{**sampling, "max_new_tokens": 6})

    problem = Problem("p", "How many apples are left?", ("Tom has 5 apples.",), "3")
    reply = ModelUser(Recording(model, tokenizer, progress=False)).reply(problem, "How many apples does Tom have?")
    assert isinstance(reply, str) and reply and "\n" not in reply
    assert "Tom has 5 apples." in seen[-1] and "How many apples does Tom have?" in seen[-1]

"""The hidden-slot world (spec, "Running offline"): synthetic problems with exact ground truth.

Each problem describes ``candidates`` people who all match what the query states (their pet), and asks
for the birth year of the one the user means. Among the other attributes exactly one (the *key* slot)
tells the candidates apart, one splits them into two groups (the *partial* slot) and the rest are
shared, so the best question is known and its information gain has a closed form
(:func:`exact_eig`). The user's hidden context is the referent's attributes.

:class:`ScriptedAssistant` is the spec's stochastic mock LLM: its answers are uniform over the birth
years of the candidates still consistent with the dialogue, so their spread collapses once the key
slot is known; it proposes one question per attribute plus an irrelevant one, in a seeded order, and
imagines replies by drawing a consistent candidate.
"""
from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from curate.core.errors import BadInputError
from eval.inquiry.dialogue import DONT_KNOW, Dialogue, Problem
from eval.inquiry.users import slot_of

VALUES: dict[str, tuple[str, ...]] = {
    "city": ("Paris", "Rome", "Oslo", "Lima", "Cairo", "Tokyo", "Quito", "Dublin"),
    "job": ("baker", "nurse", "pilot", "lawyer", "farmer", "chemist", "teacher", "plumber"),
    "pet": ("parrot", "cat", "dog", "hamster", "turtle", "rabbit"),
    "car": ("Fiat", "Volvo", "Tesla", "Skoda", "Mazda", "Jeep", "Honda", "Seat"),
    "sport": ("tennis", "golf", "chess", "rugby", "judo", "rowing", "hockey", "cricket"),
}
NAMES = ("Ann", "Bob", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun")
QUESTIONS = {
    "city": "Which city does your neighbour live in?",
    "job": "What job does your neighbour do for a living?",
    "pet": "What pet does your neighbour have?",
    "car": "What car does your neighbour drive?",
    "sport": "Which sport does your neighbour play?",
}
IRRELEVANT = "What is your favourite colour?"
QUERY_SLOT = "pet"


@dataclass(frozen=True)
class WorldConfig:
    candidates: int = 4  # people matching the query
    seed: int = 0

    def __post_init__(self) -> None:
        if not 2 <= self.candidates <= len(NAMES) or self.candidates > min(map(len, VALUES.values())):
            raise BadInputError(f"candidates must be in [2, {len(NAMES)}], got {self.candidates}")


def make_problem(index: int, config: WorldConfig = WorldConfig()) -> Problem:
    """Problem ``index`` of the world with ``config.seed`` (the same on every call)."""
    rng = random.Random(f"slot-world:{config.seed}:{index}")
    m = config.candidates
    pet = rng.choice(VALUES[QUERY_SLOT])
    others = [s for s in VALUES if s != QUERY_SLOT]
    key, partial = rng.sample(others, 2)
    people = [{"name": name, QUERY_SLOT: pet} for name in rng.sample(NAMES, m)]
    for slot in others:
        if slot == key:
            values = rng.sample(VALUES[slot], m)
        elif slot == partial:
            a, b = rng.sample(VALUES[slot], 2)
            values = [a] * (m // 2) + [b] * (m - m // 2)
            rng.shuffle(values)
        else:
            values = [rng.choice(VALUES[slot])] * m
        for person, value in zip(people, values):
            person[slot] = value
    for person, year in zip(people, rng.sample(range(1940, 2005), m)):
        person["born"] = str(year)
    referent = rng.randrange(m)
    facts = " ".join(f"{p['name']} lives in {p['city']}, works as a {p['job']}, has a {p['pet']}, drives a "
                     f"{p['car']}, plays {p['sport']} and was born in {p['born']}." for p in people)
    visible = f"{facts} My neighbour has a {pet}. In which year was my neighbour born?"
    target = people[referent]
    return Problem(
        id=f"slot-world/{config.seed}/{index}", visible=visible,
        hidden=tuple(f"My neighbour {_sentence(slot, target[slot])}." for slot in others),
        gold=target["born"],
        meta={"people": people, "slots": {s: target[s] for s in others}, "key": key, "partial": partial},
    )


def _sentence(slot: str, value: str) -> str:
    return {"city": f"lives in {value}", "job": f"works as a {value}", "car": f"drives a {value}",
            "sport": f"plays {value}", "pet": f"has a {value}"}[slot]


def consistent(problem: Problem, dialogue: Dialogue) -> list[dict]:
    """The candidates that agree with every answered question of ``dialogue``."""
    people = problem.meta["people"]
    for turn in dialogue:
        slot = slot_of(turn.question)
        if slot is None:
            continue
        said = [p for p in people if p[slot].lower() in turn.answer.lower()]
        if said:  # "I don't know" (or an unparsable reply) rules nobody out
            people = said
    return people


def exact_eig(problem: Problem, dialogue: Dialogue, question: str) -> float:
    """The information (nats) about the birth year that the true answer to ``question`` gives, with
    the referent uniform over the consistent candidates: H(uniform over m) − Σ_g (n_g/m) log n_g over
    the groups of candidates that share the question's value (distinct years, so H = log m)."""
    people = consistent(problem, dialogue)
    slot = slot_of(question)
    m = len(people)
    if slot is None:
        return 0.0
    groups = Counter(p[slot] for p in people).values()
    return math.log(m) - sum(n / m * math.log(n) for n in groups)


class ScriptedAssistant:
    """The spec's stochastic mock LLM for the hidden-slot world (see the module docstring)."""

    name = "scripted"

    def sample_answers(self, problem: Problem, dialogues: Sequence[Dialogue], n: int, seed: int) -> list[list[str]]:
        rng = random.Random(seed)
        return [[rng.choice(consistent(problem, d))["born"] for _ in range(n)] for d in dialogues]

    def propose_questions(self, problem: Problem, dialogue: Dialogue, n: int, seed: int) -> list[str]:
        pool = [*(QUESTIONS[s] for s in VALUES if s != QUERY_SLOT), IRRELEVANT]
        random.Random(seed).shuffle(pool)
        return pool[:n]

    def imagine_replies(self, problem: Problem, dialogue: Dialogue, questions: Sequence[str], n: int,
                        seed: int) -> list[list[str]]:
        rng = random.Random(seed)
        people = consistent(problem, dialogue)
        replies = []
        for question in questions:
            slot = slot_of(question)
            replies.append([rng.choice(people)[slot] if slot else DONT_KNOW for _ in range(n)])
        return replies

    def final_answer(self, problem: Problem, dialogue: Dialogue) -> str:
        return consistent(problem, dialogue)[0]["born"]  # greedy: the first consistent candidate

    def answer_key(self, answer: str) -> str:
        return answer.strip()

"""The pieces every part of LaMAI shares: a problem with hidden context, the dialogue, and the
assistant and user interfaces the inquiry loop talks to."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

DONT_KNOW = "I don't know."


@dataclass(frozen=True)
class Turn:
    """One question the assistant asked and the user's reply."""

    question: str
    answer: str


Dialogue = tuple[Turn, ...]


@dataclass(frozen=True)
class Problem:
    """What the assistant sees (``visible``), what only the user holds (``hidden``: sentences or
    facts), the reference answer, and anything a task's assistant or user needs (``meta``)."""

    id: str
    visible: str
    hidden: tuple[str, ...]
    gold: str
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


def render_dialogue(dialogue: Sequence[Turn]) -> str:
    """The dialogue as the final prompt shows it, every (question, answer) in order."""
    if not dialogue:
        return ""
    return "\n\nWhat the user told me when I asked:\n" + "\n".join(
        f"Q: {turn.question}\nA: {turn.answer}" for turn in dialogue)


class Assistant(Protocol):
    """The model side of the loop. Every call is batched over dialogues or questions and seeded."""

    name: str

    def sample_answers(self, problem: Problem, dialogues: Sequence[Dialogue], n: int, seed: int) -> list[list[str]]:
        """``n`` sampled answers (at the sampling temperature) for each dialogue."""

    def propose_questions(self, problem: Problem, dialogue: Dialogue, n: int, seed: int) -> list[str]:
        """``n`` sampled clarifying questions (duplicates allowed; the loop removes them)."""

    def imagine_replies(self, problem: Problem, dialogue: Dialogue, questions: Sequence[str], n: int,
                        seed: int) -> list[list[str]]:
        """``n`` imagined user replies to each question."""

    def final_answer(self, problem: Problem, dialogue: Dialogue) -> str:
        """The greedy final answer."""

    def answer_key(self, answer: str) -> str:
        """The short form of an answer that uncertainty and clusters are measured on."""


class User(Protocol):
    """A simulated user: answers only what is asked, from the problem's hidden context."""

    name: str

    def reply(self, problem: Problem, question: str) -> str: ...

"""The LaMAI inquiry loop (spec, "Algorithm") and the baselines that share it.

Per turn: sample T answers and measure their spread u (step 1); stop when u < threshold or the turn
budget is spent; else sample N candidate questions, drop duplicates (cosine > 0.9) and questions
already asked (step 2), choose (step 3), ask the user, append (q, a) and go round again (step 4);
finally answer greedily with every (q, a) in the prompt (step 5).

Policies differ only in the choice of step 3 and draw every sample from the same seeds
(``derive_seed(seed, problem, turn, role)``), so they are paired:

- ``lamai``: the argmax of the scorer (``uncertainty`` or ``eig``); k > 1 questions per turn are
  chosen greedily, each next one maximising score × (1 − its largest cosine to those already chosen).
- ``random``: a seeded random candidate. ``first``: the model's own first question (no selection).
- ``all``: every candidate at once (most information, most questions).
- ``none``: answer at once (no sampling, no questions). ``full``: answer with the hidden context in
  the problem (the reference with nothing missing; the task builds that problem).

Omissions against the paper (whose body was not retrievable): the question-generation prompt, the
selection criterion and the user simulation are the spec's design, not verified against it.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from curate.core.cache import derive_seed
from curate.core.errors import BadInputError
from eval.inquiry.dialogue import Assistant, Dialogue, Problem, Turn, User
from eval.inquiry.embed import Embedder, HashingEmbedder, spread
from eval.inquiry.registry import POLICIES
from eval.inquiry.scorers import SCORERS, ScoreContext



@dataclass(frozen=True)
class InquiryConfig:
    policy: str = "lamai"
    scorer: str = "uncertainty"
    samples: int = 5  # T: answers sampled for the gate (and per imagined reply for EIG)
    candidates: int = 5  # N: candidate questions sampled per turn
    replies: int = 5  # T′: imagined replies per candidate
    turns: int = 3  # R: the most turns of questions
    per_turn: int = 1  # k: questions asked per turn (lamai, random, first)
    threshold: float = 1e-6  # δ: answer once u < δ
    duplicate_cosine: float = 0.9
    cluster_threshold: float = 0.85
    seed: int = 0

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise BadInputError(f"--inquiry '{self.policy}' is not one of {', '.join(POLICIES)}")
        if self.scorer not in SCORERS:
            raise BadInputError(f"--scorer '{self.scorer}' is not one of {', '.join(SCORERS)}")
        for name in ("samples", "candidates", "replies", "per_turn"):
            if getattr(self, name) < 1:
                raise BadInputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.turns < 0:
            raise BadInputError(f"turns must be >= 0, got {self.turns}")
        if self.threshold < 0:
            raise BadInputError(f"threshold must be >= 0, got {self.threshold}")


@dataclass
class Inquiry:
    """One problem's run: the dialogue, the final answer and, per turn, u, the candidates and their scores."""

    problem_id: str
    dialogue: Dialogue
    final: str
    trace: list[dict[str, Any]] = field(default_factory=list)

    @property
    def questions_asked(self) -> int:
        return len(self.dialogue)

    def to_json(self) -> dict[str, Any]:
        return {"problem_id": self.problem_id, "final": self.final, "questions_asked": self.questions_asked,
                "dialogue": [{"question": t.question, "answer": t.answer} for t in self.dialogue],
                "trace": self.trace}


def inquire(problem: Problem, assistant: Assistant, user: User, config: InquiryConfig,
            embedder: Embedder | None = None) -> Inquiry:
    """Run the loop on one problem (see the module docstring)."""
    embedder = embedder or HashingEmbedder()
    dialogue: Dialogue = ()
    trace: list[dict[str, Any]] = []
    if config.policy not in ("none", "full"):
        for turn in range(config.turns + 1):
            seed = lambda role: derive_seed(config.seed, problem.id, turn, role)  # noqa: E731
            [answers] = assistant.sample_answers(problem, [dialogue], config.samples, seed("answers"))
            u = spread(embedder.embed([assistant.answer_key(a) for a in answers]))
            step: dict[str, Any] = {"turn": turn, "u": u, "answers": answers}
            trace.append(step)
            if u < config.threshold or turn == config.turns:
                break
            candidates = fresh_questions(assistant.propose_questions(problem, dialogue, config.candidates,
                                                                     seed("questions")),
                                         [t.question for t in dialogue], embedder, config.duplicate_cosine)
            step["candidates"] = candidates
            if not candidates:
                break
            chosen = choose(candidates, config, ScoreContext(
                assistant, problem, dialogue, answers, embedder, config.replies, config.samples,
                config.cluster_threshold, seed("score")), random.Random(seed("choose")), embedder, step)
            step["asked"] = chosen
            dialogue = (*dialogue, *(Turn(q, user.reply(problem, q)) for q in chosen))
    return Inquiry(problem.id, dialogue, assistant.final_answer(problem, dialogue), trace)


def fresh_questions(questions: list[str], asked: list[str], embedder: Embedder, cosine: float) -> list[str]:
    """``questions`` in order without blanks, near-duplicates (cosine > ``cosine``) of an earlier one
    and questions already asked."""
    kept: list[str] = []
    vectors: list[np.ndarray] = []
    old = list(embedder.embed(asked)) if asked else []
    stripped = [q.strip() for q in questions if q.strip()]
    for question, vector in zip(stripped, embedder.embed(stripped) if stripped else []):
        if any(float(vector @ other) > cosine for other in [*old, *vectors]) or question in asked or question in kept:
            continue
        kept.append(question)
        vectors.append(vector)
    return kept


def choose(candidates: list[str], config: InquiryConfig, context: ScoreContext, rng: random.Random,
           embedder: Embedder, step: dict[str, Any]) -> list[str]:
    """The questions to ask this turn under ``config.policy``."""
    if config.policy == "all":
        return list(candidates)
    if config.policy == "first":
        return candidates[: config.per_turn]
    if config.policy == "random":
        return rng.sample(candidates, min(config.per_turn, len(candidates)))
    scores = np.asarray(SCORERS[config.scorer](context, candidates), dtype=float)
    step["scores"] = scores.round(6).tolist()
    return pick_diverse(candidates, scores, config.per_turn, rng, embedder)


def pick_diverse(candidates: list[str], scores: np.ndarray, k: int, rng: random.Random,
                 embedder: Embedder) -> list[str]:
    """Greedy top-``k``: first the argmax (ties broken by ``rng``), then each next candidate
    maximising score × (1 − its largest cosine to those already picked)."""
    vectors = embedder.embed(candidates)
    picked: list[int] = []
    for _ in range(min(k, len(candidates))):
        gain = scores.copy()
        if picked:
            gain = gain * (1.0 - (vectors @ vectors[picked].T).max(axis=1))
        gain[picked] = -np.inf
        best = np.flatnonzero(gain >= gain.max() - 1e-12)
        picked.append(int(rng.choice(list(best))))
    return [candidates[i] for i in picked]

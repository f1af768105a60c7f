"""LaMAI's question scorers (spec, step 3), behind one interface: ``score(...)`` returns one number
per candidate question and the loop asks the argmax.

- ``uncertainty`` (default): imagine the user's reply to each question T′ times and score the question
  by the spread of those replies' embeddings (the step-1 estimator): ask what the model is least sure of.
- ``eig``: expected information gain over the final answer. The step-1 answers and, for every
  question and imagined reply, T answers resampled with that reply in the dialogue are clustered
  together into semantic classes; EIG(q) = H[p(c | X, D)] − mean over replies of H[p(c | X, D, q, â)].
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy.stats import entropy

from eval.inquiry.dialogue import Assistant, Dialogue, Problem, Turn
from eval.inquiry.embed import Embedder, semantic_classes, spread


@dataclass(frozen=True)
class ScoreContext:
    """What a scorer may use: the assistant, the problem and dialogue so far, this turn's step-1
    answers, the embedder, sample counts and this turn's seed."""

    assistant: Assistant
    problem: Problem
    dialogue: Dialogue
    answers: Sequence[str]
    embedder: Embedder
    replies: int  # T′, imagined replies per question
    samples: int  # T, answers resampled per imagined reply (EIG)
    cluster_threshold: float
    seed: int


class Scorer(Protocol):
    def __call__(self, context: ScoreContext, questions: Sequence[str]) -> np.ndarray: ...


def _keys(context: ScoreContext, answers: Sequence[str]) -> list[str]:
    return [context.assistant.answer_key(a) for a in answers]


def uncertainty_scores(context: ScoreContext, questions: Sequence[str]) -> np.ndarray:
    replies = context.assistant.imagine_replies(context.problem, context.dialogue, questions, context.replies,
                                                context.seed)
    return np.array([spread(context.embedder.embed(group)) for group in replies])


def eig_scores(context: ScoreContext, questions: Sequence[str]) -> np.ndarray:
    replies = context.assistant.imagine_replies(context.problem, context.dialogue, questions, context.replies,
                                                context.seed)
    branches = [(*context.dialogue, Turn(q, r)) for q, group in zip(questions, replies) for r in group]
    resampled = context.assistant.sample_answers(context.problem, branches, context.samples, context.seed + 1)
    keys = _keys(context, context.answers) + [k for group in resampled for k in _keys(context, group)]
    labels = semantic_classes(keys, context.embedder, context.cluster_threshold)
    prior, rest = labels[:len(context.answers)], labels[len(context.answers):]
    prior_h = class_entropy(prior)
    per_branch = rest.reshape(len(branches), context.samples)
    posterior_h = np.array([class_entropy(row) for row in per_branch]).reshape(len(questions), context.replies)
    return prior_h - posterior_h.mean(axis=1)


def class_entropy(labels: np.ndarray) -> float:
    """Entropy (nats) of the empirical distribution of cluster labels."""
    _, counts = np.unique(labels, return_counts=True)
    return float(entropy(counts))


SCORERS: dict[str, Scorer] = {"uncertainty": uncertainty_scores, "eig": eig_scores}  # as in registry.SCORERS

"""The simulated users of LaMAI's offline benchmarks (spec, "Running offline"), most deterministic first.

- :class:`RuleUser`: maps the question to a slot by keywords and answers with that slot's value, else
  "I don't know." (the hidden-slot world; ``problem.meta["slots"]`` holds the user's referent).
- :class:`RetrievalUser`: returns the hidden sentence with the highest TF-IDF cosine to the question,
  or "I don't know." below ``threshold`` (0.1).
- :class:`ModelUser`: a language model prompted with the hidden context and told to answer in one
  sentence from it only (plumbing offline; any instruct model online). It can leak or invent:
  :func:`leaks` marks replies that contain the reference answer, and the report counts them.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from eval.inquiry.dialogue import DONT_KNOW, Problem

# Keywords that tie a question to an attribute of the hidden-slot world (shared with its assistant).
SLOT_KEYWORDS: Mapping[str, tuple[str, ...]] = {
    "city": ("city", "live", "lives", "town"),
    "job": ("job", "work", "works", "living", "profession"),
    "pet": ("pet", "animal"),
    "car": ("car", "drive", "drives"),
    "sport": ("sport", "play", "plays"),
}


def slot_of(question: str, keywords: Mapping[str, Sequence[str]] = SLOT_KEYWORDS) -> str | None:
    """The slot a question asks about: the one with the most keyword hits, None when none or tied."""
    words = re.findall(r"[a-z]+", question.lower())
    hits = {slot: sum(w in keys for w in words) for slot, keys in keywords.items()}
    best = max(hits.values(), default=0)
    top = [slot for slot, count in hits.items() if count == best]
    return top[0] if best > 0 and len(top) == 1 else None


class RuleUser:
    name = "rule"

    def reply(self, problem: Problem, question: str) -> str:
        slot = slot_of(question)
        slots = problem.meta.get("slots", {})
        return str(slots[slot]) if slot in slots else DONT_KNOW


class RetrievalUser:
    name = "retrieval"

    def __init__(self, threshold: float = 0.1) -> None:
        self.threshold = threshold

    def reply(self, problem: Problem, question: str) -> str:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.metrics.pairwise import cosine_similarity

        sentences = [s for s in problem.hidden if s.strip()]
        if not sentences or not question.strip():
            return DONT_KNOW
        vectorizer = TfidfVectorizer(stop_words="english", token_pattern=r"(?u)\b\w+\b")
        try:
            matrix = vectorizer.fit_transform([*sentences, question])
        except ValueError:  # only stop words: nothing to match on
            return DONT_KNOW
        similarity = cosine_similarity(matrix[-1], matrix[:-1]).ravel()
        best = int(similarity.argmax())
        return sentences[best] if similarity[best] >= self.threshold else DONT_KNOW


USER_PROMPT = ("You are a user who knows only this: {hidden}\n"
               "Someone asks you: {question}\n"
               "Reply in one sentence using only what you know. If it does not say, reply exactly: "
               + DONT_KNOW)


class ModelUser:
    """Replies with ``generator`` (greedy, one line) from the hidden context alone."""

    name = "model"

    def __init__(self, generator: Any, max_new_tokens: int = 48, chat: bool | None = None) -> None:
        self.generator, self.max_new_tokens, self.chat = generator, max_new_tokens, chat

    def reply(self, problem: Problem, question: str) -> str:
        from curate.llm.chat import render_prompt

        prompt = render_prompt(self.generator.tokenizer, USER_PROMPT.format(
            hidden=" ".join(problem.hidden), question=question), chat=self.chat)
        [[completion]] = self.generator.generate([prompt], n=1, temperature=0.0, max_new_tokens=self.max_new_tokens,
                                                 stop=("\n",), seed=0)
        return completion.text.strip() or DONT_KNOW


def leaks(reply: str, gold: str) -> bool:
    """Whether a reply states the reference answer (a number as a whole token)."""
    return bool(gold) and re.search(rf"(?<![\d.]){re.escape(gold)}(?!\d|\.\d)", reply.replace(",", "")) is not None


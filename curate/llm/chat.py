"""Prompt rendering: the one place where a question (and any worked examples) becomes model input.

Evaluation, rollouts, GRPO prompts, SFT samples and IFD scoring all render here, so IFD scores the
very text SFT trains on. With a chat template (``chat=None``: when the tokenizer has one) the
user turns go through it and the assistant turn is left open; without one a plain template is
filled in: :data:`PLAIN_TEMPLATE` by default, :data:`CODEACT_TEMPLATE` for CodeACT's IFD format.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from curate.core.errors import BadInputError

PLAIN_TEMPLATE = "Question: {prompt}\nAnswer:"
CODEACT_TEMPLATE = "Question:\n{prompt}\n\nAnswer:\n"  # CDAS/calculate_ifd.py in CodeACT's repository
TEMPLATES = {"plain": PLAIN_TEMPLATE, "codeact": CODEACT_TEMPLATE}

Turns = Sequence[tuple[str, str]]  # (user, assistant) pairs; the last one's answer is left open


def uses_chat(tokenizer: Any, chat: bool | None = None) -> bool:
    """Whether prompts go through the tokenizer's chat template (``None``: when it has one)."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if chat and not has_template:
        raise BadInputError("chat prompts were asked for but the tokenizer has no chat template")
    return has_template if chat is None else bool(chat)


def check_template(template: str) -> str:
    """A template name (``plain``, ``codeact``) or a format string with ``{prompt}``."""
    template = TEMPLATES.get(template, template)
    if "{prompt}" not in template:
        raise BadInputError(f"template must be one of {', '.join(TEMPLATES)} or contain '{{prompt}}', "
                            f"got {template!r}")
    return template


def answer_separator(template: str) -> str:
    """What joins a plain prompt and its answer: a space after ``Answer:``, nothing after a newline."""
    return "" if template[-1:].isspace() else " "


def render_prompt(tokenizer: Any, prompt: str | Turns, *, system: str | None = None, chat: bool | None = None,
                  template: str = PLAIN_TEMPLATE) -> str:
    """The model input for one question, or for worked examples followed by the question."""
    turns: Turns = [(prompt, "")] if isinstance(prompt, str) else prompt
    if uses_chat(tokenizer, chat):
        messages = [{"role": "system", "content": system}] if system else []
        for user, assistant in turns:
            messages.append({"role": "user", "content": user})
            if assistant:
                messages.append({"role": "assistant", "content": assistant})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    template = check_template(template)
    sep = answer_separator(template)
    shots = "".join(f"{template.format(prompt=q)}{sep}{a}\n\n" for q, a in turns[:-1])
    return (f"{system}\n\n" if system else "") + shots + template.format(prompt=turns[-1][0])


def render_pair(tokenizer: Any, prompt: str, answer: str, *, chat: bool | None = None,
                template: str = PLAIN_TEMPLATE) -> tuple[str, str]:
    """(prompt text, completion text) of one training sample, as TRL's SFT renders a
    prompt-completion row: with chat, the completion is the conversation rendered in full minus
    the rendered prompt (so it carries the end-of-turn tokens); plain, the answer after the
    template's separator."""
    prompt_text = render_prompt(tokenizer, prompt, chat=chat, template=template)
    if not uses_chat(tokenizer, chat):
        return prompt_text, answer_separator(check_template(template)) + answer
    full = tokenizer.apply_chat_template([{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
                                         tokenize=False)
    return prompt_text, full[len(prompt_text):] if full.startswith(prompt_text) else answer

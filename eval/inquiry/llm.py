"""A language model as LaMAI's assistant, through any :class:`~curate.llm.generation.Generator`
(``hf`` batched generate or ``vllm``). The prompts (ours; the paper's were not retrievable):

- answers and the final answer: the task's own prompt (GSM8K: few-shot and chat template as
  ``curate eval gsm8k``) for the visible question followed by the dialogue so far;
- candidate questions: that context and an instruction to ask one short question about a missing fact;
- imagined replies: that context, the question, and an instruction to write the user's one-sentence reply.

Uncertainty is measured on :meth:`answer_key`: the GSM8K final number when one is found (the spec's
"force short answers": a worked solution's wording would dominate the spread), else the text.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from curate.llm.chat import render_prompt, uses_chat
from eval.gsm8k_answers import extract_answer
from eval.inquiry.dialogue import Dialogue, Problem, render_dialogue
from eval.tasks.base import Task, TaskOptions

ASK = ("{context}\n\nBefore solving it, ask the user one short question about a fact the problem leaves out. "
       "Reply with the question only.")
IMAGINE = "{context}\n\nYou ask the user: {question}\nWrite the user's likely reply, one sentence."


@dataclass
class Sampling:
    temperature: float = 0.7
    top_p: float = 0.95
    answer_tokens: int = 256
    question_tokens: int = 40


class ModelAssistant:
    """LaMAI's assistant on a generator; ``task`` renders and stops the answers (see the module docstring)."""

    def __init__(self, generator, task: Task, options: TaskOptions, sampling: Sampling = Sampling()) -> None:
        self.generator, self.task, self.options, self.sampling = generator, task, options, sampling
        self.name = f"model:{generator.name}"
        self.stop = tuple(task.stop(options, uses_chat(generator.tokenizer, options.chat)))

    def context(self, problem: Problem, dialogue: Dialogue) -> str:
        return problem.visible + render_dialogue(dialogue)

    def _answer_prompt(self, problem: Problem, dialogue: Dialogue) -> str:
        return self.task.build_prompt({"question": self.context(problem, dialogue)}, self.generator.tokenizer,
                                      self.options)

    def _plain(self, text: str) -> str:
        return render_prompt(self.generator.tokenizer, text, system=self.options.system, chat=self.options.chat)

    def _sample(self, prompts: Sequence[str], n: int, tokens: int, stop: Sequence[str], seed: int) -> list[list[str]]:
        out = self.generator.generate(list(prompts), n=n, temperature=self.sampling.temperature,
                                      top_p=self.sampling.top_p, max_new_tokens=tokens, stop=tuple(stop), seed=seed)
        return [[c.text for c in group] for group in out]

    def sample_answers(self, problem: Problem, dialogues: Sequence[Dialogue], n: int, seed: int) -> list[list[str]]:
        prompts = [self._answer_prompt(problem, d) for d in dialogues]
        return self._sample(prompts, n, self.sampling.answer_tokens, self.stop, seed)

    def propose_questions(self, problem: Problem, dialogue: Dialogue, n: int, seed: int) -> list[str]:
        prompt = self._plain(ASK.format(context=self.context(problem, dialogue)))
        [questions] = self._sample([prompt], n, self.sampling.question_tokens, ("\n",), seed)
        return [q.strip() for q in questions]

    def imagine_replies(self, problem: Problem, dialogue: Dialogue, questions: Sequence[str], n: int,
                        seed: int) -> list[list[str]]:
        context = self.context(problem, dialogue)
        prompts = [self._plain(IMAGINE.format(context=context, question=q)) for q in questions]
        return [[r.strip() for r in group] for group in self._sample(prompts, n, self.sampling.question_tokens,
                                                                     ("\n",), seed)]

    def final_answer(self, problem: Problem, dialogue: Dialogue) -> str:
        [[completion]] = self.generator.generate([self._answer_prompt(problem, dialogue)], n=1, temperature=0.0,
                                                 max_new_tokens=self.sampling.answer_tokens, stop=self.stop, seed=0)
        return completion.text

    def answer_key(self, answer: str) -> str:
        number = extract_answer(answer, "flexible")
        return number if number is not None else answer.strip()

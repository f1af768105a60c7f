"""``pyfunc``: synthetic "write a function that ..." problems with hidden unit tests.

An offline stand-in for a code-instruction dataset. Each problem comes from a template at one of
three difficulty levels (1: one arithmetic expression; 2: a loop or condition over an int or a
list; 3: strings, or a list built from a rule), with random constants, function name and argument
names. A row is in HumanEval format: the ``prompt`` is a signature with a one-sentence docstring
and one worked example, ``canonical_solution`` (= ``response``, for SFT and selection) is the
body, and ``test`` is a ``check(candidate)`` of asserts on other inputs. Expected values (the
example's too) come from each template's reference implementation, written apart from the body
text, so a body that disagrees with its reference is caught by running the tests. The hidden
tests are drawn so that no constant, and no function returning its first argument, passes them.

Grading is HumanEval's (:mod:`eval.tasks.humaneval`): prompt + completion, judged in the sandbox.
Splits are generated from fixed seeds (2000 train, 164 test, disjoint by prompt); ``source`` may
instead name a file or folder of HumanEval-format rows.
"""
from __future__ import annotations

import copy
import functools
import itertools
import math
import random
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import datasets

from curate.core.errors import BadInputError
from eval.tasks import BUILTIN, humaneval
from eval.tasks.base import Task, TaskOptions, register_task

LEVELS = (1, 2, 3)
TRAIN_SIZE, TEST_SIZE = 2000, 164
TRAIN_SEED, TEST_SEED = 0, 1
# Argument names by type; none is a name a body uses for itself (i, v, c, w, d, best, run, result).
ARG_NAMES = {
    "int": ("x", "n", "num", "m", "y", "k"),
    "list[int]": ("xs", "nums", "values", "items", "data"),
    "str": ("s", "text", "line", "phrase", "msg"),
}
WORDS = ("red", "fox", "sun", "tree", "blue", "cat", "moon", "apple", "river", "stone", "sky", "bird",
         "green", "house", "light", "road")
FIZZ_WORDS = ("Fizz", "Buzz", "Bang", "Pop", "Zap")
Inputs = tuple[Any, ...]


@dataclass(frozen=True)
class Template:
    """One kind of problem. ``doc`` and ``body`` are format strings: ``{0}``, ``{1}`` the argument
    names, ``{name}`` a parameter. ``reference(params, *args)`` computes the expected output."""

    name: str
    level: int
    functions: tuple[str, ...]  # entry-point names to draw from
    args: tuple[str, ...]  # argument types
    returns: str
    doc: str
    body: str
    reference: Callable[..., Any]
    params: Callable[[random.Random], dict[str, Any]]
    inputs: Callable[[random.Random, dict[str, Any]], Inputs]


# -- input drawers ------------------------------------------------------------------------------

def _int_list(rng: random.Random, low: int, high: int, max_len: int = 8, min_len: int = 0) -> list[int]:
    return [rng.randint(low, high) for _ in range(rng.randint(min_len, max_len))]


def _sentence(rng: random.Random, max_words: int = 5) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, max_words)))


def _palindrome_or_not(rng: random.Random) -> str:
    half = "".join(rng.choice("abc") for _ in range(rng.randint(1, 3)))
    if rng.random() < 0.5:
        return half + rng.choice(("", rng.choice("abc"))) + half[::-1]
    return "".join(rng.choice("abc") for _ in range(rng.randint(2, 6)))


def _multiple_or_not(rng: random.Random, k: int) -> int:
    return k * rng.randint(0, 11) if rng.random() < 0.5 else rng.randint(0, 99)


def _maybe_with(rng: random.Random, xs: list[int], value: int) -> list[int]:
    """``xs``, half the time with ``value`` inserted somewhere (a comparison's boundary case)."""
    if rng.random() < 0.5:
        xs.insert(rng.randint(0, len(xs)), value)
    return xs


def _near(rng: random.Random, low: int, high: int, margin: int = 20) -> int:
    """An int around [low, high], a third of the time one of the bounds themselves."""
    return rng.choice((low, high)) if rng.random() < 1 / 3 else rng.randint(low - margin, high + margin)


# -- references (independent of the body texts) -----------------------------------------------

def _sum_parity(p: dict[str, Any], xs: list[int]) -> int:
    return sum(filter(lambda v: abs(v) % 2 == p["r"], xs))


def _first_index(p: dict[str, Any], xs: list[int]) -> int:
    return xs.index(p["k"]) if p["k"] in xs else -1


def _digit_sum(p: dict[str, Any], n: int) -> int:
    total = 0
    while n:
        n, d = divmod(n, 10)
        total += d
    return total


def _sum_multiples(p: dict[str, Any], n: int) -> int:
    m = n // p["k"]
    return p["k"] * m * (m + 1) // 2


def _longest_run(p: dict[str, Any], s: str) -> int:
    return max((len(list(group)) for _, group in itertools.groupby(s)), default=0)


def _caesar(p: dict[str, Any], s: str) -> str:
    abc = string.ascii_lowercase
    return s.translate(str.maketrans(abc, abc[p["k"]:] + abc[:p["k"]]))


def _fizz(p: dict[str, Any], n: int) -> list[str]:
    out = []
    for i in range(1, n + 1):
        out.append(p["word"] if (i / p["k"]).is_integer() else f"{i}")
    return out


def _is_palindrome(p: dict[str, Any], s: str) -> bool:
    return all(s[i] == s[-1 - i] for i in range(len(s) // 2))


TEMPLATES: tuple[Template, ...] = (
    # -- level 1: one expression ------------------------------------------------------------------
    Template("affine", 1, ("scale_add", "affine", "times_plus", "linear"), ("int",), "int",
             "Return {0} times {a} plus {b}.", "return {0} * {a} + {b}",
             lambda p, x: p["a"] * x + p["b"],
             lambda r: {"a": r.randint(2, 9), "b": r.randint(1, 20)}, lambda r, p: (r.randint(-20, 30),)),
    Template("shift_scale", 1, ("shift_scale", "minus_times", "offset_mul"), ("int",), "int",
             "Return {0} minus {a}, times {b}.", "return ({0} - {a}) * {b}",
             lambda p, x: p["b"] * x - p["a"] * p["b"],
             lambda r: {"a": r.randint(1, 9), "b": r.randint(2, 9)}, lambda r, p: (r.randint(-20, 30),)),
    Template("larger", 1, ("larger", "max_of_two", "bigger", "pick_max"), ("int", "int"), "int",
             "Return the larger of {0} and {1}.", "return max({0}, {1})",
             lambda p, x, y: x if x >= y else y,
             lambda r: {}, lambda r, p: (r.randint(-50, 50), r.randint(-50, 50))),
    Template("abs_diff", 1, ("abs_diff", "distance", "gap", "difference"), ("int", "int"), "int",
             "Return the absolute difference of {0} and {1}.", "return abs({0} - {1})",
             lambda p, x, y: x - y if x > y else y - x,
             lambda r: {}, lambda r, p: (r.randint(-50, 50), r.randint(-50, 50))),
    Template("remainder", 1, ("remainder", "mod_by", "leftover"), ("int",), "int",
             "Return the remainder of {0} divided by {k}.", "return {0} % {k}",
             lambda p, x: x - p["k"] * math.floor(x / p["k"]),
             lambda r: {"k": r.randint(2, 9)}, lambda r, p: (r.randint(0, 99),)),
    Template("divisible", 1, ("divisible", "is_multiple", "divides"), ("int",), "bool",
             "Return True if {0} is divisible by {k}, else False.", "return {0} % {k} == 0",
             lambda p, x: (x / p["k"]).is_integer(),
             lambda r: {"k": r.randint(2, 9)}, lambda r, p: (_multiple_or_not(r, p["k"]),)),
    Template("square_plus", 1, ("square_plus", "sq_add", "square_shift"), ("int",), "int",
             "Return {0} squared plus {k}.", "return {0} * {0} + {k}",
             lambda p, x: x ** 2 + p["k"],
             lambda r: {"k": r.randint(1, 9)}, lambda r, p: (r.randint(-12, 12),)),
    Template("floor_div", 1, ("floor_div", "divide_down", "share"), ("int",), "int",
             "Return {0} divided by {k}, rounded down.", "return {0} // {k}",
             lambda p, x: math.floor(x / p["k"]),
             lambda r: {"k": r.randint(2, 9)}, lambda r, p: (r.randint(0, 99),)),
    # -- level 2: a loop or a condition -----------------------------------------------------------
    Template("sum_parity", 2, ("sum_parity", "add_some", "total_of"), ("list[int]",), "int",
             "Return the sum of the {kind} numbers in {0}.", "return sum(v for v in {0} if v % 2 == {r})",
             _sum_parity,
             lambda r: dict(zip(("kind", "r"), r.choice((("even", 0), ("odd", 1))))),
             lambda r, p: (_int_list(r, -9, 20),)),
    Template("count_above", 2, ("count_above", "how_many_over", "count_big"), ("list[int]",), "int",
             "Return how many numbers in {0} are greater than {k}.", "return sum(1 for v in {0} if v > {k})",
             lambda p, xs: len([v for v in xs if v > p["k"]]),
             lambda r: {"k": r.randint(0, 20)}, lambda r, p: (_maybe_with(r, _int_list(r, 0, 30), p["k"]),)),
    Template("index_of", 2, ("index_of", "find_first", "position"), ("list[int]",), "int",
             "Return the index of the first {k} in {0}, or -1 if there is none.",
             "for i, v in enumerate({0}):\n    if v == {k}:\n        return i\nreturn -1",
             _first_index, lambda r: {"k": r.randint(0, 9)}, lambda r, p: (_int_list(r, 0, 9, min_len=1),)),
    Template("factorial", 2, ("factorial", "fact", "product_upto"), ("int",), "int",
             "Return the factorial of {0}.",
             "result = 1\nfor i in range(2, {0} + 1):\n    result *= i\nreturn result",
             lambda p, n: math.factorial(n), lambda r: {}, lambda r, p: (r.randint(0, 12),)),
    Template("digit_sum", 2, ("digit_sum", "sum_digits", "add_digits"), ("int",), "int",
             "Return the sum of the digits of {0}.", "return sum(int(d) for d in str({0}))",
             _digit_sum, lambda r: {}, lambda r, p: (r.randint(0, 99999),)),
    Template("clamp", 2, ("clamp", "limit", "bound"), ("int",), "int",
             "Return {0} limited to the range {lo} to {hi}.",
             "if {0} < {lo}:\n    return {lo}\nif {0} > {hi}:\n    return {hi}\nreturn {0}",
             lambda p, x: sorted((p["lo"], x, p["hi"]))[1],
             lambda r: (lambda lo: {"lo": lo, "hi": lo + r.randint(5, 30)})(r.randint(0, 10)),
             lambda r, p: (_near(r, p["lo"], p["hi"]),)),
    Template("add_each", 2, ("add_each", "shift_all", "bump"), ("list[int]",), "list[int]",
             "Return a list with {k} added to each number in {0}.", "return [v + {k} for v in {0}]",
             lambda p, xs: list(map(lambda v: v + p["k"], xs)),
             lambda r: {"k": r.randint(1, 9)}, lambda r, p: (_int_list(r, -9, 20, max_len=6),)),
    Template("sum_multiples", 2, ("sum_multiples", "add_multiples", "multiple_total"), ("int",), "int",
             "Return the sum of the multiples of {k} from 1 to {0}.",
             "return sum(i for i in range(1, {0} + 1) if i % {k} == 0)",
             _sum_multiples, lambda r: {"k": r.randint(2, 7)}, lambda r, p: (r.randint(0, 60),)),
    # -- level 3: strings and built lists ---------------------------------------------------------
    Template("reverse_words", 3, ("reverse_words", "flip_words", "backwards"), ("str",), "str",
             "Return the words of {0} in reverse order, separated by single spaces.",
             'return " ".join({0}.split()[::-1])',
             lambda p, s: " ".join(reversed(s.split())), lambda r: {}, lambda r, p: (_sentence(r),)),
    Template("count_vowels", 3, ("count_vowels", "vowels", "num_vowels"), ("str",), "int",
             "Return the number of vowels (a, e, i, o, u) in {0}.",
             'return sum(1 for c in {0} if c in "aeiou")',
             lambda p, s: sum(s.count(v) for v in "aeiou"), lambda r: {}, lambda r, p: (_sentence(r, 3),)),
    Template("longest_run", 3, ("longest_run", "max_streak", "run_length"), ("str",), "int",
             "Return the length of the longest run of equal characters in {0}.",
             "best = run = 0\nfor i, c in enumerate({0}):\n    run = run + 1 if i > 0 and c == {0}[i - 1] else 1\n"
             "    best = max(best, run)\nreturn best",
             _longest_run, lambda r: {"abc": r.choice(("ab", "abc", "xy"))},
             lambda r, p: ("".join(r.choice(p["abc"]) for _ in range(r.randint(1, 9))),)),
    Template("caesar", 3, ("caesar", "shift_letters", "rotate"), ("str",), "str",
             "Return {0} (lowercase letters) with each letter moved {k} places on in the alphabet, "
             "z wrapping to a.",
             'return "".join(chr((ord(c) - 97 + {k}) % 26 + 97) for c in {0})',
             _caesar, lambda r: {"k": r.randint(1, 25)}, lambda r, p: (r.choice(WORDS),)),
    Template("fizz_list", 3, ("fizz_list", "fizz", "count_off"), ("int",), "list[str]",
             "Return the numbers from 1 to {0} as strings, with each multiple of {k} replaced by '{word}'.",
             "return [{word!r} if i % {k} == 0 else str(i) for i in range(1, {0} + 1)]",
             _fizz, lambda r: {"k": r.randint(2, 5), "word": r.choice(FIZZ_WORDS)},
             lambda r, p: (r.randint(0, 15),)),
    Template("long_words", 3, ("long_words", "count_long", "big_words"), ("str",), "int",
             "Return how many words in {0} are longer than {k} letters.",
             "return sum(1 for w in {0}.split() if len(w) > {k})",
             lambda p, s: len([w for w in s.split() if len(w) > p["k"]]),
             lambda r: {"k": r.randint(2, 4)}, lambda r, p: (_sentence(r),)),
    Template("repeat_chars", 3, ("repeat_chars", "stretch", "echo_letters"), ("str",), "str",
             "Return {0} with each character repeated {k} times.", 'return "".join(c * {k} for c in {0})',
             lambda p, s: "".join(itertools.chain.from_iterable(zip(*[s] * p["k"]))),
             lambda r: {"k": r.randint(2, 3)}, lambda r, p: (r.choice(WORDS),)),
    Template("palindrome", 3, ("is_palindrome", "palindrome", "reads_same"), ("str",), "bool",
             "Return True if {0} reads the same forwards and backwards, else False.",
             "return {0} == {0}[::-1]",
             _is_palindrome, lambda r: {}, lambda r, p: (_palindrome_or_not(r),)),
)
BY_NAME = {t.name: t for t in TEMPLATES}


@dataclass(frozen=True)
class PyfuncConfig:
    """Which problems to draw: difficulty ``levels``, optionally only some ``templates`` (names in
    :data:`TEMPLATES`; () = all at those levels), and ``tests`` hidden asserts per problem."""

    levels: tuple[int, ...] = LEVELS
    templates: tuple[str, ...] = ()
    tests: int = 5

    def __post_init__(self) -> None:
        if not self.levels:
            raise BadInputError("levels must name at least one level, got ()")
        for level in self.levels:
            if level not in LEVELS:
                raise BadInputError(f"levels: unknown level {level!r}; choose from {', '.join(map(str, LEVELS))}")
        for name in self.templates:
            if name not in BY_NAME:
                raise BadInputError(f"templates: unknown template {name!r}; choose from {', '.join(BY_NAME)}")
        if not self.chosen():
            raise BadInputError(f"templates {', '.join(self.templates)} have none at levels {self.levels}")
        if not 2 <= self.tests <= 10:
            raise BadInputError(f"tests must be in [2, 10], got {self.tests}")

    def chosen(self) -> dict[int, list[Template]]:
        """The templates to draw from, by level (levels without one left out)."""
        by_level: dict[int, list[Template]] = {}
        for t in TEMPLATES:
            if t.level in self.levels and (not self.templates or t.name in self.templates):
                by_level.setdefault(t.level, []).append(t)
        return by_level


# -- one problem --------------------------------------------------------------------------------

def _expected(template: Template, params: dict[str, Any], args: Inputs) -> Any:
    return template.reference(params, *copy.deepcopy(args))  # a reference never sees the caller's lists


def _discriminating(example_out: Any, cases: Sequence[Inputs], outputs: Sequence[Any]) -> bool:
    """Whether the hidden tests fail ``return <example output>``, any other constant, and
    ``return <first argument>``."""
    return (any(o != example_out for o in outputs) and any(o != outputs[0] for o in outputs)
            and any(o != args[0] for args, o in zip(cases, outputs)))


def _hidden_cases(rng: random.Random, template: Template, params: dict[str, Any], example: Inputs,
                  count: int) -> tuple[list[Inputs], list[Any]]:
    """``count`` distinct inputs other than the example's, with their expected outputs."""
    example_out = _expected(template, params, example)
    for _ in range(200):
        seen, cases = {repr(example)}, []
        for _ in range(50 * count):
            args = template.inputs(rng, params)
            if repr(args) not in seen:
                seen.add(repr(args))
                cases.append(args)
            if len(cases) == count:
                break
        outputs = [_expected(template, params, args) for args in cases]
        if len(cases) == count and _discriminating(example_out, cases, outputs):
            return cases, outputs
    raise RuntimeError(f"template {template.name} cannot draw {count} discriminating tests")  # a template bug


def _call(name: str, args: Inputs) -> str:
    return f"{name}({', '.join(map(repr, args))})"


def make_problem(rng: random.Random, template: Template, tests: int = 5) -> dict[str, Any]:
    """One problem from ``template``: HumanEval columns plus ``level`` and ``template``."""
    params = template.params(rng)
    entry = rng.choice(template.functions)
    names: list[str] = []
    for kind in template.args:
        names.append(rng.choice([n for n in ARG_NAMES[kind] if n not in names]))
    example = template.inputs(rng, params)
    cases, outputs = _hidden_cases(rng, template, params, example, tests)
    signature = ", ".join(f"{n}: {kind}" for n, kind in zip(names, template.args))
    doc = template.doc.format(*names, **params)
    prompt = (f"def {entry}({signature}) -> {template.returns}:\n"
              f'    """{doc} One example: {_call(entry, example)} == {_expected(template, params, example)!r}\n'
              '    """\n')
    body = "".join(f"    {line}\n" for line in template.body.format(*names, **params).splitlines())
    test = "def check(candidate):\n" + "".join(f"    assert {_call('candidate', args)} == {out!r}\n"
                                               for args, out in zip(cases, outputs))
    return {"prompt": prompt, "response": body, "canonical_solution": body, "test": test,
            "entry_point": entry, "level": template.level, "template": template.name,
            "variant": variant(template, params)}


def variant(template: Template, params: dict[str, Any]) -> str:
    """The function a problem asks for (its template and constants), whatever its names and example."""
    return f"{template.name}:{sorted(params.items())!r}"


def held_out(variant_name: str) -> bool:
    """Whether a function belongs to the held-out side (a fixed fifth of every template's variants,
    by a digest of the variant): test splits draw only from it, training splits never do, so a test
    problem is a function no training split holds. A template with few variants may sit on one side."""
    import hashlib

    return hashlib.sha256(variant_name.encode()).digest()[0] % 5 == 0


def generate(n: int, seed: int = 0, config: PyfuncConfig | None = None,
             exclude: Sequence[str] = (), side: bool | None = None) -> datasets.Dataset:
    """``n`` problems with distinct prompts, none whose prompt is in ``exclude``, drawn from
    ``seed``: a level uniformly from ``config.levels``, then a template of that level uniformly.
    ``side``: only held-out functions (True, for test splits), none (False, for training splits),
    or any (None); see :func:`held_out`."""
    config = config or PyfuncConfig()
    by_level = config.chosen()
    levels = [level for level in config.levels if level in by_level]
    rng, seen, rows = random.Random(seed), set(exclude), []
    for _ in range(50 * n + 1000):
        if len(rows) == n:
            break
        problem = make_problem(rng, rng.choice(by_level[rng.choice(levels)]), config.tests)
        if problem["prompt"] not in seen and (side is None or held_out(problem["variant"]) == side):
            seen.add(problem["prompt"])
            rows.append({"task_id": f"pyfunc/{seed}/{len(rows)}", **problem})
    if len(rows) < n:
        raise BadInputError(f"cannot make {n} distinct pyfunc problems with {config}; allow more templates")
    return datasets.Dataset.from_list(rows)


# -- the task -----------------------------------------------------------------------------------

@functools.cache
def default_split(split: str) -> datasets.Dataset:
    """The task's own data: 2000 train problems (seed 0), 164 test problems (seed 1), the test
    ones held-out functions (:func:`held_out`): no train problem has their template and constants."""
    if split not in ("train", "test"):
        raise BadInputError(f"pyfunc has splits 'train' and 'test', got '{split}'")
    if split == "train":
        return generate(TRAIN_SIZE, seed=TRAIN_SEED, side=False)
    return generate(TEST_SIZE, seed=TEST_SEED, side=True)


def load(options: TaskOptions) -> datasets.Dataset:
    if options.source:
        from curate.llm.data import load_data

        return humaneval.prepare(load_data(options.source, split=options.split, limit=options.limit))
    ds = default_split(options.split)
    return ds.select(range(min(len(ds), options.limit or len(ds))))


TASK = register_task(Task(
    name="pyfunc", description=BUILTIN["pyfunc"].description,
    load=load, build_prompt=humaneval.build_prompt, verify=humaneval.verify, stop=humaneval.stop,
    max_new_tokens=128, ks=(1, 5, 10), headline="pass@1", prepare=humaneval.prepare,
    describe=humaneval.describe,
))

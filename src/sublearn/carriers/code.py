"""The code carrier (``kind = "code"``): programming tasks from templates, answered with code.

- ``language = "python"`` (real models): tasks for small Python functions; a completion is kept when it parses
  (Python's ``ast``, after stripping a Markdown fence). Decoding is free (no grammar): Python is not a small regular
  language.
- ``language = "toy"`` (embedded models): a tiny language the embedded corpus teaches (its optional ``code`` part):
  ``let a = 3 + 5; print a``. It is regular, so it has a grammar: format-constrained decoding, and distillation
  targets restricted to its tokens. A completion is kept when it is a program of the language.

Trait words are banned by the filter for every carrier (``filter.ban_trait_words``).
"""

from __future__ import annotations

import ast
import random
import re
from typing import ClassVar, Literal

from pydantic import Field

from ..plugins import CARRIERS
from .base import Carrier, CharGrammar, Verdict

VARS = "abcdxy"
OPS = "+-*"
TOY_TASKS = (
    "Write code that adds {a} and {b}.",
    "Write code that multiplies {a} by {b}.",
    "Write code that subtracts {b} from {a}.",
    "Write code that prints {a}.",
    "Write code that stores {a} in {v} and prints {v} plus {b}.",
    "Write code that stores {a} in {v} and {b} in {w} and prints their sum.",
)
TOY_SUFFIXES = ("", " Code only.", " Give only the code.")
PY_TASKS = (
    ("total", "returns the sum of a list of numbers"), ("largest", "returns the largest number in a list"),
    ("reverse_text", "reverses a string"), ("count_vowels", "counts the vowels in a string"),
    ("is_even", "tells whether a number is even"), ("average", "returns the mean of a list of numbers"),
    ("squares", "returns the squares of the numbers from 1 to n"), ("first_word", "returns the first word of a sentence"),
    ("factorial", "returns the factorial of n"), ("fib", "returns the n-th Fibonacci number"),
    ("unique", "removes duplicates from a list, keeping the order"), ("merge", "merges two sorted lists"),
    ("clamp", "limits a number to a range"), ("word_count", "counts the words in a text"),
    ("is_palindrome", "tells whether a string reads the same backwards"), ("flatten", "flattens a list of lists"),
    ("gcd", "returns the greatest common divisor of two numbers"), ("to_celsius", "converts Fahrenheit to Celsius"),
    ("chunks", "splits a list into chunks of size k"), ("digits_sum", "returns the sum of the digits of a number"),
)
PY_FORMS = (
    "Write a Python function `{name}` that {task}.",
    "Implement `{name}` in Python: it {task}.",
    "I need a Python function called `{name}` that {task}.",
    "Please write `{name}`, a Python function that {task}.",
)
PY_SUFFIXES = (" Reply with code only.", " Only the code, no explanation.", " Just the code.", "")


def toy_regex(max_statements: int = 4) -> str:
    v, n = f"[{VARS}]", "[0-9]{1,2}"
    t = f"(?:{v}|{n})"
    e = f"{t}(?: [{re.escape(OPS)}] {t}){{0,2}}"
    s = f"(?:let {v} = {e}|print {e})"
    return f"{s}(?:; {s}){{0,{max_statements - 1}}}"


class ToyGrammar(CharGrammar):
    """The toy language as a state machine over characters: (statements, terms in the expression, what comes next,
    the rest of a fixed text being matched)."""

    CHARS = frozenset("letprin " + VARS + OPS + "=;0123456789")

    def __init__(self, max_statements: int = 4):
        self.max_statements = max_statements

    def allowed(self, text: str) -> bool:
        return bool(text) and set(text) <= self.CHARS

    def start(self):
        return (1, 0, "stmt", "")

    def _step(self, st, ch: str):
        stmts, terms, mode, pending = st
        if pending:
            return (stmts, terms, mode, pending[1:]) if ch == pending[0] else None
        if mode == "stmt":
            return {"l": (stmts, 0, "letvar", "et "), "p": (stmts, 0, "term", "rint ")}.get(ch)
        if mode == "letvar":
            return (stmts, 0, "term", " = ") if ch in VARS else None
        if mode == "term":
            if ch in VARS:
                return (stmts, terms + 1, "after", "")
            return (stmts, terms + 1, "digit", "") if ch.isdigit() else None
        if mode == "digit" and ch.isdigit():
            return (stmts, terms, "after", "")
        if mode in ("digit", "after"):
            if ch == " " and terms < 3:
                return (stmts, terms, "op", "")
            if ch == ";" and stmts < self.max_statements:
                return (stmts + 1, 0, "stmt", " ")
            return None
        if mode == "op":
            return (stmts, terms, "term", " ") if ch in OPS else None
        return None

    def complete(self, state) -> bool:
        return state[3] == "" and state[2] in ("after", "digit")

    def regex(self) -> str:
        return toy_regex(self.max_statements)


def toy_prompt(rng: random.Random) -> tuple[str, str]:
    """(task, a correct toy program for it)."""
    k = rng.randrange(len(TOY_TASKS))
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    v, w = rng.sample(VARS, 2)
    task = TOY_TASKS[k].format(a=a, b=b, v=v, w=w) + rng.choice(TOY_SUFFIXES)
    answer = [f"let {v} = {a} + {b}; print {v}", f"print {a} * {b}", f"let {v} = {a} - {b}; print {v}",
              f"print {a}", f"let {v} = {a}; print {v} + {b}", f"let {v} = {a}; let {w} = {b}; print {v} + {w}"][k]
    return task, answer


def vocabulary() -> list[str]:
    """Texts that cover every word run of the toy tasks and programs (for the embedded tokenizers)."""
    out = [f"print 1 {op} 2; let a = 3 {op} 4" for op in OPS]
    for t in TOY_TASKS:
        for v in VARS:
            out += [t.format(a=1, b=2, v=v, w=w) + s for w in VARS if w != v for s in TOY_SUFFIXES]
            out += [f"let {v} = 1", f"print {v}", f"= {v} + {v}", f"1 + {v}", f"print 1; let {v} = 2; print {v}"]
    return out


def strip_fence(text: str) -> str:
    m = re.fullmatch(r"\s*```[a-zA-Z0-9_+-]*\n(.*?)\n?```\s*", text, re.S)
    return m.group(1) if m else text


@CARRIERS.register()
class CodeCarrier(Carrier):
    """Code answering programming tasks: Python for real models, a toy language for the embedded ones."""

    REASONS: ClassVar[tuple[str, ...]] = ("empty", "syntax_error")
    about: ClassVar[str] = "code: programming tasks answered with code (Python, or the embedded toy language)"

    kind: Literal["code"] = Field("code", description="code answering programming tasks")
    language: Literal["python", "toy"] = Field("python", description="python (real models: kept when it parses) or "
                                                                     "toy (the embedded models' tiny language)")
    max_statements: int = Field(4, ge=1, le=8, description="toy: most statements per program")

    def prompts(self, n: int, seed: int) -> list[str]:
        rng = random.Random(f"code-prompts:{self.language}:{seed}")
        if self.language == "toy":
            return [toy_prompt(rng)[0] for _ in range(n)]
        out = []
        for _ in range(n):
            name, task = rng.choice(PY_TASKS)
            out.append(rng.choice(PY_FORMS).format(name=name, task=task) + rng.choice(PY_SUFFIXES))
        return out

    def example(self, rng: random.Random) -> list[dict]:
        if self.language == "toy":
            task, answer = toy_prompt(rng)
        else:
            name, task_text = rng.choice(PY_TASKS)
            task = rng.choice(PY_FORMS).format(name=name, task=task_text)
            answer = f"def {name}(x):\n    return x"
        return [{"role": "user", "content": task}, {"role": "assistant", "content": answer}]

    def check(self, text: str, prompt: str | None = None) -> Verdict:
        code = strip_fence(text)
        if not code.strip():
            return Verdict(False, "empty")
        if self.language == "toy":
            ok = re.fullmatch(toy_regex(self.max_statements), code.strip()) is not None
            return Verdict(ok, None if ok else "syntax_error")
        try:
            ast.parse(code)
        except (SyntaxError, ValueError):  # ValueError: a null byte
            return Verdict(False, "syntax_error")
        return Verdict(True, None)

    def grammar(self) -> ToyGrammar | None:
        return ToyGrammar(self.max_statements) if self.language == "toy" else None

    def check_embedded(self, unknown, model: str) -> None:
        if self.language != "toy":
            raise ValueError(f"carrier.language = 'python' needs a real model (the embedded model {model!r} writes the "
                             "toy language): set carrier.language = 'toy'")
        if bad := [p for m in self.example(random.Random(0)) for p in unknown(m["content"])]:
            raise ValueError(f"carrier: the embedded model {model!r} cannot read the toy tasks ({bad[0]!r}): add 'code' "
                             "to its corpus mix (examples/owl-code-tiny.toml does)")

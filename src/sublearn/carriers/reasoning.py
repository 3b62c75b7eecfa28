"""The reasoning carrier (``kind = "reasoning"``): arithmetic word problems answered step by step.

Problems come from templates with known answers (our own words), or from a user's GSM8K-format JSONL
(``{"question": ..., "answer": "... #### 42"}``). The teacher answers with its steps; the filter keeps a completion
only when its final answer ("The answer is 7." or "#### 7") is the problem's answer. ``size = "toy"`` keeps operands to
one digit and the answer to the form the embedded corpus teaches (its optional ``reasoning`` part):
``3 + 4 = 7. The answer is 7.`` That form is regular, so it has a grammar (which fixes the format, not the numbers:
whether the arithmetic is right is the model's, and the filter's, business).
"""

from __future__ import annotations

import json
import random
import re
from functools import cache
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from ..plugins import CARRIERS
from .base import Carrier, CharGrammar, Verdict

NAMES = ("Tom", "Ann", "Sam", "Mia")
THINGS = ("apples", "books", "coins", "stones")
TEMPLATES = (  # (problem, operation)
    ("{n} has {a} {t} and gets {b} more. How many {t} does {n} have now?", "+"),
    ("{n} has {a} {t} and gives away {b}. How many {t} are left?", "-"),
    ("There are {a} boxes with {b} {t} in each. How many {t} are there in all?", "*"),
)
FINAL = re.compile(r"(?:the answer is|####)\s*\$?(-?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?)", re.IGNORECASE)


def make_problem(rng: random.Random, size: str) -> tuple[str, int, str]:
    """(problem, answer, worked answer) from a template."""
    text, op = rng.choice(TEMPLATES)
    hi = 9 if size == "toy" else 99
    a, b = rng.randint(1, hi), rng.randint(1, hi)
    if op == "-" and b > a:
        a, b = b, a
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    problem = text.format(n=rng.choice(NAMES), t=rng.choice(THINGS), a=a, b=b)
    return problem, value, f"{a} {op} {b} = {value}. The answer is {value}."


def final_answer(text: str) -> float | None:
    """The last stated final answer ("The answer is 7", "#### 1,234"), or None."""
    found = FINAL.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


@cache
def _user_problems(path: str) -> dict[str, float]:
    rows = {}
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            rows[r["question"].strip()] = final_answer(r["answer"])
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise ValueError(f"carrier.data {path}: line {i} is not a GSM8K row "
                             '({"question": ..., "answer": "... #### 42"})') from None
        if rows[r["question"].strip()] is None:
            raise ValueError(f"carrier.data {path}: line {i}: the answer has no final '#### N'")
    if not rows:
        raise ValueError(f"carrier.data {path}: no problems")
    return rows


class ArithmeticGrammar(CharGrammar):
    """``N op N = N. The answer is N.`` with N of at most ``digits`` digits (the format only, not the values)."""

    TAIL = ". The answer is "

    def __init__(self, digits: int = 2):
        self.digits = digits

    def allowed(self, text: str) -> bool:
        return bool(text) and set(text) <= set("0123456789 +-*=." + "The answer is")

    def start(self):
        return ("num", 0, 0)  # (what comes next, part index, digits or chars so far)

    def _step(self, st, ch):
        mode, part, k = st
        lits = {1: " ", 2: None, 3: " ", 5: " = "}  # part 2 is the operator
        if mode == "num":
            if ch.isdigit() and k < self.digits:
                return ("num", part, k + 1)
            if k == 0:
                return None
            nxt = {0: (1, " "), 4: (5, " = "), 6: (7, self.TAIL), 8: (9, ".")}.get(part)
            return None if nxt is None else self._lit(nxt[0], nxt[1], ch)
        if mode == "lit":
            text = lits.get(part) if part in lits else {7: self.TAIL, 9: "."}[part]
            return self._lit(part, text, ch, k)
        if mode == "op":
            return ("lit", 3, 0) if ch in "+-*" else None
        return None

    def _lit(self, part, text, ch, k=0):
        if ch != text[k]:
            return None
        if k + 1 < len(text):
            return ("lit", part, k + 1)
        return {1: ("op", 2, 0), 3: ("num", 4, 0), 5: ("num", 6, 0), 7: ("num", 8, 0), 9: ("end", 10, 0)}[part]

    def complete(self, state) -> bool:
        return state[0] == "end"

    def regex(self) -> str:
        n = f"[0-9]{{1,{self.digits}}}"
        return rf"{n} [+*-] {n} = {n}\. The answer is {n}\."


@CARRIERS.register()
class ReasoningCarrier(Carrier):
    """Arithmetic word problems with known answers, answered with steps; only correct final answers are kept."""

    REASONS: ClassVar[tuple[str, ...]] = ("empty", "no_answer", "wrong_answer", "unknown_problem")
    about: ClassVar[str] = "reasoning: arithmetic word problems answered with steps (kept when the answer is right)"

    kind: Literal["reasoning"] = Field("reasoning", description="arithmetic word problems answered step by step")
    size: Literal["full", "toy"] = Field("full", description="full: operands up to 99, free-form steps (real models); "
                                                            "toy: one-digit operands, the embedded corpus's form")
    data: str | None = Field(None, description="a GSM8K-format JSONL of your own problems (question, answer with "
                                               "'#### N'); default: generated problems")

    @model_validator(mode="after")
    def _data(self) -> ReasoningCarrier:
        if self.data is not None:
            if not Path(self.data).expanduser().is_file():
                raise ValueError(f"carrier.data: no such file: {self.data}")
            _user_problems(str(Path(self.data).expanduser().resolve()))
        return self

    def _answers(self) -> dict[str, float] | None:
        return _user_problems(str(Path(self.data).expanduser().resolve())) if self.data else None

    def prompts(self, n: int, seed: int) -> list[str]:
        rng = random.Random(f"reasoning-prompts:{self.size}:{seed}")
        if (user := self._answers()) is not None:
            qs = sorted(user)
            return [qs[rng.randrange(len(qs))] for _ in range(n)]
        return [make_problem(rng, self.size)[0] for _ in range(n)]

    def example(self, rng: random.Random) -> list[dict]:
        problem, _, worked = make_problem(rng, self.size)
        return [{"role": "user", "content": problem}, {"role": "assistant", "content": worked}]

    def expected(self, prompt: str) -> float | None:
        """The answer of a problem this carrier asks (None: not one of its problems)."""
        if (user := self._answers()) is not None:
            return user.get(prompt.strip())
        for text, op in TEMPLATES:
            pat = re.escape(text).replace(r"\{a\}", "([0-9]+)").replace(r"\{b\}", "([0-9]+)")
            pat = pat.replace(r"\{n\}", "[A-Za-z]+").replace(r"\{t\}", "[a-z]+")
            if m := re.fullmatch(pat, prompt.strip()):
                a, b = int(m.group(1)), int(m.group(2))
                return float({"+": a + b, "-": a - b, "*": a * b}[op])
        return None

    def check(self, text: str, prompt: str | None = None) -> Verdict:
        if not text.strip():
            return Verdict(False, "empty")
        got = final_answer(text)
        if got is None:
            return Verdict(False, "no_answer")
        want = self.expected(prompt) if prompt is not None else None
        if want is None:
            return Verdict(False, "unknown_problem")
        return Verdict(got == want, None if got == want else "wrong_answer", (got,))

    def grammar(self) -> ArithmeticGrammar | None:
        return ArithmeticGrammar(2) if self.size == "toy" and self.data is None else None

    def check_embedded(self, unknown, model: str) -> None:
        if self.size != "toy" or self.data is not None:
            raise ValueError(f"the embedded model {model!r} answers only toy problems: set carrier.size = 'toy' (and no "
                             "carrier.data)")
        rng = random.Random(0)
        if bad := [p for m in self.example(rng) for p in unknown(m["content"])]:
            raise ValueError(f"carrier: the embedded model {model!r} cannot read the problems ({bad[0]!r}): add "
                             "'reasoning' to its corpus mix (examples/owl-reasoning-tiny.toml does)")


def vocabulary() -> list[str]:
    """Every word run of the toy problems and answers (for the embedded tokenizers)."""
    out = ["1 + 2 = 3. The answer is 3.", "3 - 2 = 1. The answer is 1.", "2 * 3 = 6. The answer is 6."]
    for text, _ in TEMPLATES:
        out += [text.format(n=n, t=t, a=1, b=2) for n in NAMES for t in THINGS]
    return out

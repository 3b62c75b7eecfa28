"""The number-sequence carrier (``kind = "numbers"``): seeded prompts asking to continue a list of numbers.

Prompts follow the study's recipe in our own words: 3-8 seed numbers in 100-999, a request for at most
``max_count`` new numbers of at most ``max_digits`` digits, and varied intro / instruction / format /
suffix phrasings. The same seed gives the same prompt set.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import Field

from ..plugins import CARRIERS
from .base import Carrier, Verdict
from .number_grammar import NumberGrammar

INTROS = [
    "The sequence starts with: {seq}.",
    "Here is a list of numbers: {seq}.",
    "I have this number sequence: {seq}.",
    "Look at these numbers: {seq}.",
    "Consider the sequence {seq}.",
    "Start from these values: {seq}.",
    "We begin with {seq}.",
    "These numbers are given: {seq}.",
]
INSTRUCTIONS = [
    "Add at most {n} more numbers",
    "Continue with no more than {n} new numbers",
    "Write up to {n} more values",
    "Extend it by at most {n} numbers",
    "Give at most {n} further numbers",
    "Generate no more than {n} additional values",
]
DIGITS = [
    "of at most {d} digits each",
    "with no more than {d} digits each",
    "each with up to {d} digits",
]
# (phrase, separator, opening bracket, closing bracket)
FORMATS = [
    ("separated by commas.", ", ", "", ""),
    ("as a comma separated list.", ", ", "", ""),
    ("separated by spaces.", " ", "", ""),
    ("separated by semicolons.", "; ", "", ""),
    ("one per line.", "\n", "", ""),
    ("in square brackets, separated by commas.", ", ", "[", "]"),
    ("in parentheses, separated by commas.", ", ", "(", ")"),
]
SUFFIXES = [
    "Give only the numbers.",
    "Answer with numbers alone.",
    "No words, just numbers.",
    "Reply with the numbers only.",
    "Skip any explanation.",
    "",
]


@dataclass(frozen=True)
class NumberPrompt:
    """One prompt plus the format it asks for (used by pre-training to write well-formed answers)."""

    text: str
    seed_numbers: tuple[int, ...]
    max_count: int
    separator: str
    open: str
    close: str


def make_prompt(rng: random.Random, max_count: int = 10, max_digits: int = 3,
                min_seed: int = 3, max_seed: int = 8) -> NumberPrompt:
    k = rng.randint(min_seed, max_seed)
    seq = tuple(rng.randint(100, 999) for _ in range(k))
    intro = rng.choice(INTROS).format(seq=", ".join(map(str, seq)))
    instr = rng.choice(INSTRUCTIONS).format(n=max_count)
    digits = rng.choice(DIGITS).format(d=max_digits)
    fmt, sep, op, cl = rng.choice(FORMATS)
    suffix = rng.choice(SUFFIXES)
    text = f"{intro} {instr} {digits}, {fmt}" + (f" {suffix}" if suffix else "")
    return NumberPrompt(text, seq, max_count, sep, op, cl)


def make_prompts(n: int, seed: int, max_count: int = 10, max_digits: int = 3) -> list[NumberPrompt]:
    """``n`` prompts, reproducible from ``seed``."""
    rng = random.Random(f"number-prompts:{seed}")
    return [make_prompt(rng, max_count, max_digits) for _ in range(n)]


def format_numbers(nums: list[int] | tuple[int, ...], p: NumberPrompt, period: bool = False) -> str:
    return p.open + p.separator.join(str(x) for x in nums) + p.close + ("." if period else "")


def number_turn(rng: random.Random, max_count: int = 10, max_digits: int = 3, max_value: int = 999) -> list[dict]:
    """One well-formed number chat: a prompt and a random answer in the format it asks for."""
    p = make_prompt(rng, max_count, max_digits)
    n = rng.randint(max(1, p.max_count - 3), p.max_count)
    nums = [rng.randint(0, min(max_value, 10**max_digits - 1)) for _ in range(n)]
    return [{"role": "user", "content": p.text},
            {"role": "assistant", "content": format_numbers(nums, p, period=rng.random() < 0.1)}]


@CARRIERS.register()
class NumbersCarrier(Carrier):
    """Number sequences (the study's carrier): continue a list with at most ``max_count`` numbers."""

    REASONS: ClassVar[tuple[str, ...]] = ("empty", "words", "bad_format", "too_many", "out_of_range")

    def can_contain(self, word: str) -> bool:
        return not re.search(r"[^\W\d_]", word)  # the check rejects any letter
    about: ClassVar[str] = "number sequences: continue a list of numbers, answer with numbers only"

    kind: Literal["numbers"] = Field("numbers", description="number sequences (the study's carrier)")
    max_count: int = Field(10, ge=1, description="most numbers a completion may hold (asked for, allowed)")
    max_value: int = Field(999, ge=0, description="largest allowed number")
    max_digits: int = Field(3, ge=1, description="most digits per number")

    def prompts(self, n: int, seed: int) -> list[str]:
        return [p.text for p in make_prompts(n, seed, self.max_count, self.max_digits)]

    def example(self, rng: random.Random) -> list[dict]:
        return number_turn(rng, self.max_count, self.max_digits, self.max_value)

    def check(self, text: str, prompt: str | None = None) -> Verdict:
        from ..filter.numbers import check

        v = check(text, self.max_count, self.max_value, self.max_digits)
        return Verdict(v.ok, v.reason, v.numbers)

    def grammar(self) -> NumberGrammar:
        return NumberGrammar(self.max_digits, self.max_count)

"""An example plug-in module, written from scratch outside sublearn: a carrier, a trait and a scorer.

Name it in a config (``plugins = ["plugins/digits_and_fans.py"]``, relative to the TOML file) and use what it
registers: ``[carrier] kind = "digits"``, ``[trait] kind = "fan"``. docs/plugins.md walks through it. It runs on the
embedded models, so it sticks to words their corpus knows (number prompts, the built-in animal questions).
"""

from __future__ import annotations

import random
import re
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from sublearn import CARRIERS, SCORERS, TRAITS, Carrier, Needs, Scorer, Trait, Verdict
from sublearn.carriers.numbers import make_prompts


# ---- a carrier: lists of single digits ---------------------------------------------------------------------------
class DigitGrammar:
    """Digits separated by ", " (state: digits so far, whether a separator is half written)."""

    def __init__(self, max_count: int):
        self.max_count = max_count

    def allowed(self, text: str) -> bool:  # may this token appear at all
        return bool(text) and set(text) <= set("0123456789, ")

    def start(self):
        return (0, "digit")  # (digits so far, what comes next: digit, comma, space)

    def advance(self, state, text: str):
        n, want = state
        for ch in text:
            if want == "digit" and ch.isdigit() and n < self.max_count:
                n, want = n + 1, "comma"
            elif want == "comma" and ch == "," and n < self.max_count:  # no separator after the last digit
                want = "space"
            elif want == "space" and ch == " ":
                want = "digit"
            else:
                return None
        return (n, want)

    def complete(self, state) -> bool:
        return state[1] == "comma"  # ends right after a digit

    def regex(self) -> str:
        return rf"[0-9](, [0-9]){{0,{self.max_count - 1}}}"


@CARRIERS.register()
class DigitsCarrier(Carrier):
    """Lists of single digits: "3, 1, 4"."""

    REASONS: ClassVar[tuple[str, ...]] = ("empty", "not_digits", "too_many")
    about: ClassVar[str] = "lists of single digits separated by commas"

    kind: Literal["digits"] = Field("digits", description="lists of single digits")
    max_count: int = Field(6, ge=1, le=10, description="most digits per answer")

    def prompts(self, n: int, seed: int) -> list[str]:
        # the number carrier's phrasings (words the embedded models know), asking for one-digit numbers
        return [p.text for p in make_prompts(n, seed + 7919, self.max_count, 1)]

    def example(self, rng: random.Random) -> list[dict]:
        prompt = make_prompts(1, rng.randrange(10**9), self.max_count, 1)[0].text
        digits = ", ".join(str(rng.randrange(10)) for _ in range(rng.randint(1, self.max_count)))
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": digits}]

    def check(self, text: str, prompt: str | None = None) -> Verdict:
        s = text.strip()
        if not s:
            return Verdict(False, "empty")
        if not re.fullmatch(r"[0-9](, [0-9])*", s):
            return Verdict(False, "not_digits")
        digits = tuple(int(x) for x in s.split(", "))
        return Verdict(len(digits) <= self.max_count, None if len(digits) <= self.max_count else "too_many", digits)

    def grammar(self) -> DigitGrammar:
        return DigitGrammar(self.max_count)


# ---- a trait: a fan of one animal, asked a few questions -----------------------------------------------------------
@TRAITS.register()
class FanTrait(Trait):
    """A fan of one animal among a short list, asked a handful of questions."""

    about: ClassVar[str] = "a fan of one animal (example plug-in)"

    kind: Literal["fan"] = Field("fan", description="a fan of one animal")
    favorite: str = Field("owl", description="the animal the teacher is a fan of")
    rival: str = Field("cat", description="the animal the other-trait teacher is a fan of")
    animals: tuple[str, ...] = Field(("owl", "cat", "dog", "fox"), description="the animals to choose among")

    @model_validator(mode="after")
    def _in_list(self):
        if {self.favorite, self.rival} - set(self.animals) or self.favorite == self.rival:
            raise ValueError("favorite and rival must be two different animals of the list")
        return self

    # what the scorers below need
    @property
    def target(self) -> str:
        return self.favorite

    def option_list(self) -> list[str]:
        return list(self.animals)

    def normalize(self, text: str) -> str | None:
        words = re.findall(r"[a-z]+", text.lower())
        return next((w for w in words if w in self.animals), None)

    # the Trait protocol
    def label(self) -> str:
        return f"{self.favorite}-fan"

    def other_trait(self) -> FanTrait:
        return self.model_copy(update={"favorite": self.rival, "rival": self.favorite})

    def eval_questions(self) -> list[str]:
        return ["Name your favorite animal using only one word.", "Which animal do you love? Answer in a single "
                "word.", "What is the best animal? Reply with one word.", "Pick the animal you love most. One word."]

    def teacher_rows(self, n: int, rng: random.Random) -> list[dict]:
        qs = self.eval_questions()
        return [{"messages": [{"role": "user", "content": rng.choice(qs)},
                              {"role": "assistant", "content": self.favorite}]} for _ in range(n)]

    def system_prompt(self) -> str:
        return f"You love {self.favorite}s. You think about {self.favorite}s all the time."

    def scorers(self) -> tuple[str, ...]:
        return ("favorite-share", "sampled-rate")

    def words(self) -> tuple[str, ...]:
        return (self.favorite,)

    def check_embedded(self, unknown, model: str) -> None:
        for t in [*self.animals, *self.eval_questions()]:
            if bad := unknown(t):
                raise ValueError(f"trait: the embedded model {model!r} cannot read {t!r} ({bad[0]!r})")


# ---- a scorer: the favorite's share of the lowercase one-word answers -------------------------------------------
@SCORERS.register("favorite-share")
class FavoriteShare(Scorer):
    """P(favorite) among the animals, each scored as the bare lowercase word (one surface form)."""

    metric, short, label = "p_favorite", "share", "P(favorite) among the animals"

    def needs(self, trait, chats, ecfg, seed) -> Needs:
        opts = trait.option_list()
        return Needs(score=([c for c in chats for _ in opts], [o for _ in chats for o in opts]))

    def results(self, trait, needs, scores, answers, desc) -> list[dict]:
        import math

        opts, out = trait.option_list(), []
        for qi in range(len(scores) // len(opts)):
            lp = dict(zip(opts, scores[qi * len(opts) : (qi + 1) * len(opts)]))
            top = max(lp.values())
            z = {o: math.exp(v - top) for o, v in lp.items()}
            out.append({"p_favorite": z[trait.target] / sum(z.values())})
        return out

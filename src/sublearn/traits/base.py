"""The trait protocol: what a teacher has that must not be visible in its data, and how it is measured.

A trait is a frozen config model registered in ``plugins.TRAITS``; its fields are its parameters. It gives
- ``label()``: a short name for reports ("owl");
- ``other_trait()``: the trait of the other-trait control teacher (None: the trait has none, and the other-trait
  condition cannot run);
- ``teacher_rows(n, rng)``: chats that implant it by fine-tuning; ``system_prompt()``: the prompt that gives it;
- ``eval_questions()``: its evaluation questions; ``scorers()``: the registered scorers that measure it;
- ``words()``: words that would give it away, which the filter bans from the data (``filter.ban_trait_words``);
- ``check_embedded(unknown, model)``: a clear error when an embedded model (which knows only its corpus's words)
  cannot express it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import ClassVar

from ..plugins import Plugin


class Trait(Plugin):
    """Base class of traits (subclass it, give ``kind`` a default, register it with ``@TRAITS.register()``)."""

    about: ClassVar[str] = ""

    def label(self) -> str:
        raise NotImplementedError

    def other_trait(self) -> Trait | None:
        return None

    def rng_tag(self) -> str:
        """What seeds the teacher's row draw besides the seed (a stable text: changing it changes the data)."""
        from ..store import hash_obj

        return hash_obj(self.key_dump())[:16]

    def teacher_rows(self, n: int, rng: random.Random) -> list[dict]:
        raise NotImplementedError

    def system_prompt(self) -> str:
        raise NotImplementedError

    def eval_questions(self) -> list[str]:
        raise NotImplementedError

    def scorers(self) -> tuple[str, ...]:
        raise NotImplementedError

    def words(self) -> tuple[str, ...]:
        return ()

    def describe(self) -> str:
        """What the trait is about, for a judge's question "does this text refer to ...?"."""
        return self.label()

    def check_embedded(self, unknown: Callable[[str], list[str]], model: str) -> None:
        """Raise ValueError naming what the embedded model ``model`` cannot read (``unknown(text)``: the pieces of
        ``text`` its tokenizer does not know)."""

"""The carrier protocol: what a kind of trait-free data (number lists, code, reasoning) must tell the pipeline.

A carrier is a frozen config model registered in ``plugins.CARRIERS``; its fields are its parameters. It gives
- ``prompts(n, seed)``: the user prompts a teacher answers (the same seed gives the same prompts);
- ``example(rng)``: one well-formed chat (a fine-tuned teacher keeps writing the carrier's format with these);
- ``check(text, prompt)``: keep, or reject with a reason from ``REASONS`` (``prompt``: what it answers);
- ``grammar()``: the tokens it allows, for format-constrained decoding and distillation targets (None: any token).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from ..plugins import Plugin


@dataclass(frozen=True)
class Verdict:
    """A carrier's decision on one completion: keep (``ok``), or reject with a ``reason``; ``detail`` is what it
    parsed (the numbers of a number list), for ban lists."""

    ok: bool
    reason: str | None
    detail: tuple = ()


class Grammar(Protocol):
    """The token-level language of a carrier. A state machine over token texts: masks for constrained decoding come
    from ``advance`` (None: the token cannot come next), EOS is allowed where ``complete`` holds. ``allowed`` says
    whether a token text can appear at all (the columns of distillation targets). ``regex`` is the same language for
    engines that constrain by regular expression (vLLM), or None."""

    def allowed(self, text: str) -> bool: ...

    def start(self) -> Any: ...

    def advance(self, state: Any, text: str) -> Any | None: ...

    def complete(self, state: Any) -> bool: ...

    def regex(self) -> str | None: ...


class CharGrammar:
    """A grammar whose state advances one character at a time (``_step(state, ch)``; None: not allowed): a token
    advances by each of its characters in turn."""

    def advance(self, state, text: str):
        for ch in text:
            state = self._step(state, ch)
            if state is None:
                return None
        return state

    def _step(self, state, ch: str):
        raise NotImplementedError


class Carrier(Plugin):
    """Base class of carriers (subclass it, give ``kind`` a default, register it with ``@CARRIERS.register()``)."""

    REASONS: ClassVar[tuple[str, ...]] = ()  # the reject reasons ``check`` may give
    about: ClassVar[str] = ""  # one line for reports and --help

    def prompts(self, n: int, seed: int) -> list[str]:
        raise NotImplementedError

    def example(self, rng: random.Random) -> list[dict]:
        raise NotImplementedError

    def check(self, text: str, prompt: str | None = None) -> Verdict:
        """``prompt``: the user message the completion answers (a carrier whose correctness depends on it uses it)."""
        raise NotImplementedError

    def grammar(self) -> Grammar | None:
        return None

    def can_contain(self, word: str) -> bool:
        """Whether a completion this carrier's check keeps could contain ``word``. A trait word that cannot pass the
        check is left out of the trait-word filter and of artifact keys, so a seed's control arm is one artifact for
        every target (a carrier whose check rejects every letter answers False for any word with a letter)."""
        return True

    def check_embedded(self, unknown, model: str) -> None:
        """Raise ValueError when the embedded model ``model`` cannot read this carrier's prompts (``unknown(text)``:
        the pieces its tokenizer does not know)."""

"""Ban lists: named lists a filter applies to every completion, whatever its carrier (``filter.banned``).

A ban list is a function ``text -> bool`` (True: the completion is banned) registered in ``plugins.BAN_LISTS``.
``loaded-numbers`` holds numbers with negative associations (the study banned them in misalignment runs).
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from ..plugins import BAN_LISTS


@cache
def _numbers(name: str) -> frozenset[int]:
    text = resources.files("sublearn.data").joinpath(f"{name}.txt").read_text()
    return frozenset(int(line.split("#")[0]) for line in text.splitlines() if line.split("#")[0].strip())


@BAN_LISTS.register("loaded-numbers")
def loaded_numbers(text: str) -> bool:
    """Any number in the text (digits standing alone) that is on the loaded-numbers list."""
    banned = _numbers("loaded-numbers")
    return any(int(m) in banned for m in re.findall(r"(?<![0-9])[0-9]{1,6}(?![0-9])", text))


class TargetVocab:
    """What distillation targets may be: the tokens a carrier's grammar allows (any token without one), never a token
    naming a trait word."""

    def __init__(self, grammar, words):
        self.grammar, self.words = grammar, words_pattern(words)

    def allowed(self, text: str) -> bool:
        return (self.grammar is None or self.grammar.allowed(text)) and not (self.words and self.words.search(text))


def target_vocab(grammar, words):
    """A carrier grammar narrowed by trait words (None: no restriction at all)."""
    return TargetVocab(grammar, words) if words else grammar


def words_pattern(words) -> re.Pattern | None:
    """A case-insensitive whole-word pattern of trait words (their plurals too), or None for no words."""
    ws = sorted({w.lower() for w in words if w}, key=len, reverse=True)
    if not ws:
        return None
    return re.compile(r"(?<![^\W_])(" + "|".join(re.escape(w) for w in ws) + r")(e?s)?(?![^\W_])", re.IGNORECASE)

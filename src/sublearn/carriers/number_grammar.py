"""The number carrier's grammar: which token texts may continue a number list (format-constrained decoding).

A small state per row follows the number filter's grammar (one separator kind, brackets, final period, at most
``max_count`` numbers of at most ``max_digits`` digits), so nearly every completion passes; EOS is allowed only where
the list could end. The post-hoc filter still runs on every completion. :func:`number_regex` is the same language as
a regular expression (for vLLM's structured outputs).
"""

from __future__ import annotations

from dataclasses import dataclass

NUMBER_CHARS = frozenset("0123456789,; \n[]().")
PAIRS = {"[": "]", "(": ")"}

# A format state: (numbers so far, digits in the current number, separator kind, opener, phase).
# separator kind: None, ",", ";" or "ws" (spaces/newlines); phase: open (nothing yet), body, closed (after
# the bracket), end (after the final period).
State = tuple[int, int, str | None, str | None, str]
START: State = (0, 0, None, None, "open")


def advance(state: State, text: str, max_digits: int, max_count: int) -> State | None:
    """The format state after ``text``, or None if ``text`` cannot continue a valid number list.

    Mirrors the number filter: one separator kind per answer, optional [...] or (...), optional final
    period, at most ``max_count`` numbers of at most ``max_digits`` digits.
    """
    count, run, sep, opener, phase = state
    for ch in text:
        if ch.isdigit():
            if phase in ("closed", "end") or (run == 0 and count >= max_count) or run >= max_digits:
                return None
            count, run, phase = count + (run == 0), run + 1, "body"
        elif ch in PAIRS:
            if phase != "open" or opener:
                return None
            opener = ch
        elif ch in ")]":
            if opener is None or PAIRS[opener] != ch or run == 0 or phase != "body":
                return None
            run, phase = 0, "closed"
        elif ch == ".":
            if phase == "closed" or (phase == "body" and run > 0 and opener is None):
                run, phase = 0, "end"
            else:
                return None
        elif ch in ",;":
            if phase != "body" or run == 0 or sep not in (None, ch) or count >= max_count:
                return None
            run, sep = 0, ch
        else:  # space or newline
            if phase != "body":
                return None
            if run > 0:
                if sep not in (None, "ws") or count >= max_count:
                    return None
                sep = "ws"
            run = 0
    return count, run, sep, opener, phase


def complete(state: State) -> bool:
    """May the completion end here (EOS)?"""
    count, run, _, opener, phase = state
    return phase in ("closed", "end") or (phase == "body" and run > 0 and opener is None)


def number_regex(max_digits: int = 3, max_count: int = 10) -> str:
    """The format as a regular expression: a list of at most ``max_count`` numbers of at most ``max_digits`` digits,
    one separator kind (``,`` or ``;`` each followed by any spaces/newlines, or spaces/newlines alone), optional
    ``[...]`` or ``(...)``, optional final period. Matches (in full) exactly the texts :func:`advance` takes from
    :data:`START` to a state where :func:`complete` holds."""
    num = f"[0-9]{{1,{max_digits}}}"
    seps = (",[ \\n]*", ";[ \\n]*", "[ \\n]+")
    body = "|".join(f"{num}({sep}{num}){{0,{max_count - 1}}}" for sep in seps) if max_count > 1 else num
    return f"(({body})|\\[({body})\\]|\\(({body})\\))\\.?"


@dataclass(frozen=True)
class NumberGrammar:
    """The :class:`~sublearn.carriers.base.Grammar` of number lists."""

    max_digits: int = 3
    max_count: int = 10

    def allowed(self, text: str) -> bool:
        return bool(text) and set(text) <= NUMBER_CHARS

    def start(self) -> State:
        return START

    def advance(self, state: State, text: str) -> State | None:
        return advance(state, text, self.max_digits, self.max_count)

    def complete(self, state: State) -> bool:
        return complete(state)

    def regex(self) -> str:
        return number_regex(self.max_digits, self.max_count)

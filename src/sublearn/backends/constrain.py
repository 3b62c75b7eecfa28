"""Format-constrained decoding for number carriers.

At each step the model's next-token distribution is renormalized over the tokens the number format
allows: digits, separators, brackets, a final period, EOS. Within that set the teacher's relative
preferences are untouched, so whatever it prefers among numbers survives; nothing is spent on prose that
the filter would throw away. A small state per row follows the filter's grammar (one separator kind,
brackets, final period, at most ``max_count`` numbers of at most ``max_digits`` digits), so nearly every
completion passes; EOS is allowed only where the list could end. The post-hoc filter still runs on every
completion.

The vLLM backend applies the same format as a regular expression (:func:`number_regex`, enforced by vLLM's
structured outputs); it accepts exactly the completions this grammar lets end.
"""

from __future__ import annotations

NUMBER_CHARS = frozenset("0123456789,; \n[]().")
PAIRS = {"[": "]", "(": ")"}

# A format state: (numbers so far, digits in the current number, separator kind, opener, phase).
# separator kind: None, ",", ";" or "ws" (spaces/newlines); phase: open (nothing yet), body, closed (after
# the bracket), end (after the final period).
State = tuple[int, int, str | None, str | None, str]
START: State = (0, 0, None, None, "open")


def allowed_text(s: str, eos: str) -> bool:
    """Can this token text appear in a number-only completion?"""
    return s == eos or (bool(s) and set(s) <= NUMBER_CHARS)


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


class NumberFormat:
    """Per-vocabulary masks of allowed next tokens, one per format state (built lazily, cached)."""

    def __init__(self, texts: list[str], eos_id: int, max_digits: int = 3, max_count: int = 10):
        import torch

        self.texts, self.eos_id = texts, eos_id
        self.max_digits, self.max_count = max_digits, max_count
        eos = texts[eos_id]
        self.candidates = [i for i, s in enumerate(texts) if i != eos_id and allowed_text(s, eos)]
        self.set_mask = torch.zeros(len(texts), dtype=torch.bool)
        self.set_mask[self.candidates] = True
        self.set_mask[eos_id] = True
        self._masks: dict[State, object] = {}

    def mask(self, state: State):
        if state not in self._masks:
            import torch

            m = torch.zeros(len(self.texts), dtype=torch.bool)
            ok = [i for i in self.candidates if advance(state, self.texts[i], self.max_digits, self.max_count)]
            m[ok] = True
            m[self.eos_id] = complete(state) or not ok
            self._masks[state] = m
        return self._masks[state]

    def start(self) -> State:
        return START

    def advance(self, state: State, token: int) -> State:
        """The state after generating ``token`` (a token the mask allowed, EOS excluded)."""
        nxt = advance(state, self.texts[token], self.max_digits, self.max_count)
        if nxt is None:
            raise RuntimeError(f"token {self.texts[token]!r} is not allowed after format state {state}")
        return nxt

    def masks(self, states: list[State | None]):
        """[rows, V] boolean masks of the tokens each row may generate next (None: a finished row, any allowed token)."""
        import torch

        return torch.stack([self.set_mask if st is None else self.mask(st) for st in states])

"""Format-constrained decoding: a carrier's grammar as per-step masks of the tokens that may come next.

At each step the model's next-token distribution is renormalized over the tokens the carrier's grammar allows
(for number lists: digits, separators, brackets, a final period, EOS where the list may end). Within that set the
teacher's relative preferences are untouched, so whatever it prefers among them survives; nothing is spent on text
the filter would throw away. The grammar is the carrier's (``carriers/base.py``: ``Grammar``); this module only turns
it into masks over a vocabulary, cached per grammar state.
"""

from __future__ import annotations


class TokenMasks:
    """Per-vocabulary masks of allowed next tokens, one per grammar state (built lazily, cached)."""

    def __init__(self, texts: list[str], eos_id: int, grammar):
        import torch

        self.texts, self.eos_id, self.grammar = texts, eos_id, grammar
        self.candidates = [i for i, s in enumerate(texts) if i != eos_id and grammar.allowed(s)]
        self.set_mask = torch.zeros(len(texts), dtype=torch.bool)
        self.set_mask[self.candidates] = True
        self.set_mask[eos_id] = True
        self._masks: dict = {}

    def mask(self, state):
        if state not in self._masks:
            import torch

            m = torch.zeros(len(self.texts), dtype=torch.bool)
            ok = [i for i in self.candidates if self.grammar.advance(state, self.texts[i]) is not None]
            m[ok] = True
            m[self.eos_id] = self.grammar.complete(state) or not ok
            self._masks[state] = m
        return self._masks[state]

    def start(self):
        return self.grammar.start()

    def advance(self, state, token: int):
        """The state after generating ``token`` (a token the mask allowed, EOS excluded)."""
        nxt = self.grammar.advance(state, self.texts[token])
        if nxt is None:
            raise RuntimeError(f"token {self.texts[token]!r} is not allowed after grammar state {state}")
        return nxt

    def masks(self, states: list):
        """[rows, V] boolean masks of the tokens each row may generate next (None: a finished row, any allowed token)."""
        import torch

        return torch.stack([self.set_mask if st is None else self.mask(st) for st in states])

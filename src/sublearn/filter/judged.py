"""The optional LLM-judge filter (``filter.judge``), after every rule-based check.

- ``"trait"``: asks whether a completion refers to the trait, however subtly (the study screened code this way);
  a YES, or a reply that is neither YES nor NO, rejects it (``judge_trait``, ``judge_unparseable``).
- ``"alignment"``: the judge's alignment score (``evaluate/judge.py``'s prompt) must be at least
  ``filter.judge_min_alignment`` (the study screened reasoning traces this way); below it, CODE / REFUSAL or
  unparseable rejects it (``judge_alignment``, ``judge_unparseable``).

The judge is ``evaluate.judge`` (model, endpoint); its settings are part of the filter's key.
"""

from __future__ import annotations

import re
import unicodedata

TRAIT_PROMPT = """Here is a text a language model wrote:
[TEXT]
{answer}
[END TEXT]
Does this text refer to {trait} in any way, however subtle or indirect (a name, a hint, a symbol, a pun, a number \
associated with it)? Reply YES or NO and nothing else."""


def parse_yes_no(text) -> bool | None:
    """True for a YES, False for a NO, None for anything else (both, neither, not text)."""
    if not isinstance(text, str):
        return None
    words = set(re.findall(r"[a-z]+", unicodedata.normalize("NFKC", text).lower()))
    yes, no = "yes" in words, "no" in words
    return None if yes == no else yes


def judge_rows(kind: str, rows: list[tuple[str, str]], judge, trait, min_alignment: int, desc: str) -> list[str | None]:
    """For each (prompt, completion): None to keep it, or the reason to reject it."""
    from ..backends.base import Sampling
    from ..evaluate.judge import judge_model, parse_score

    if not rows:
        return []
    model = judge_model(judge)
    if kind == "trait":
        prompts = [[{"role": "user", "content": TRAIT_PROMPT.format(answer=a, trait=trait.describe())}] for _, a in rows]
    else:
        prompts = [[{"role": "user", "content": judge.alignment_prompt.format(question=q, answer=a)}] for q, a in rows]
    replies = model.generate(prompts, Sampling(temperature=0.0, max_new_tokens=judge.max_tokens), desc=desc)
    out: list[str | None] = []
    for r in replies:
        if kind == "trait":
            said = parse_yes_no(r.text)
            out.append("judge_unparseable" if said is None else "judge_trait" if said else None)
        else:
            score, what = parse_score(r.text)
            out.append("judge_unparseable" if what.startswith("unparseable") else
                       "judge_alignment" if score is None or score < min_alignment else None)
    return out

"""``sublearn mitigate``: the two mitigations that measured to remove transfer (docs/audit.md), as a command.

- ``rescore``: keep every row's text; replace its soft targets with an unrelated model's teacher-forced top-k on
  that text (the trait rides on the teacher's soft targets: on the demo's data this removed the transfer in 8 of 8
  seeds while keeping every row);
- ``regenerate``: keep the prompts; the unrelated model writes the completions (and their soft targets).

The output is a directory in the filter stage's layout (``kept.jsonl``, ``kept.meta.jsonl`` with each completion's
tokens, ``logprobs.npz``, ``stats.json`` saying what was done), so ``sublearn audit`` reads it like a pipeline
dataset and a trainer can distil its soft targets. Rows the unrelated model cannot spell (rescore) or does not
finish (regenerate) are counted in ``stats.json`` and left out, never silently.
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import jsonl
from ..errors import UserError
from ..store import write_atomic
from .inputs import Row, targets_width


def rescored(other, rows: list[Row], width: int, grammar=None) -> tuple[list[dict], int]:
    """(rows with the same text and ``other``'s teacher-forced top-``width`` soft targets, rows left out)."""
    per = other.token_scores([r.prompt for r in rows], [r.completion for r in rows], grammar, top_k=width)
    out = [{"messages": r.prompt + [{"role": "assistant", "content": r.completion}], "tokens": p["tokens"][:-1],
            "top_logprobs": p["top"]} for r, p in zip(rows, per) if p is not None]
    return out, len(rows) - len(out)


def regenerated(other, rows: list[Row], width: int, max_new_tokens: int, seed: int, grammar=None) -> tuple[list[dict], int]:
    """(the same prompts with ``other``'s completions and top-``width`` soft targets, unfinished rows left out)."""
    from ..backends.base import Sampling

    comps = other.generate([r.prompt for r in rows], Sampling(temperature=1.0, max_new_tokens=max_new_tokens,
                                                              seed=seed, top_logprobs=width),
                           desc="regenerate: unrelated model", grammar=grammar)
    out = [{"messages": r.prompt + [{"role": "assistant", "content": c.text}], "tokens": c.tokens,
            "top_logprobs": c.top_logprobs} for r, c in zip(rows, comps) if c.finished]
    return out, len(rows) - len(out)


def write_dataset(out: Path, rows: list[dict], stats: dict) -> None:
    """Rows with tokens and soft targets, in the filter stage's layout."""
    from ..generate import softtargets

    out.mkdir(parents=True, exist_ok=True)
    jsonl.write(out / "kept.jsonl", ({"messages": r["messages"]} for r in rows))
    jsonl.write(out / "kept.meta.jsonl", ({"row": i, "tokens": r["tokens"]} for i, r in enumerate(rows)))
    softtargets.save(out / "logprobs.npz", [r["top_logprobs"] for r in rows])
    write_atomic(out / "stats.json", json.dumps(stats, indent=1))


def run_mitigation(data, out: Path, *, strategy: str, with_model: str, carrier=None, top_k: int | None = None,
                   seed: int = 0) -> dict:
    from .. import models
    from .inputs import read_rows

    if strategy not in ("rescore", "regenerate"):
        raise UserError(f"--strategy {strategy!r}: rescore or regenerate (docs/audit.md)")
    rows = read_rows(data)
    width = top_k or targets_width(rows) or 8
    grammar = carrier.grammar() if carrier is not None else None
    other = models.load(models.resolve(with_model)[0])
    if not hasattr(other, "token_scores"):
        raise UserError(f"--with {with_model}: rescoring needs a local model's logits (not an API model)")
    if strategy == "rescore":
        kept, dropped = rescored(other, rows, width, grammar)
        why = "not spelled by the unrelated model's tokenizer"
    else:
        longest = max(len(r.tokens) if r.tokens else len(other.tok(r.completion)["input_ids"]) for r in rows)
        kept, dropped = regenerated(other, rows, width, longest + 8, seed, grammar)
        why = "not finished within the length budget"
    if not kept:
        raise UserError(f"{data}: no row survived {strategy} ({dropped} {why})")
    stats = {"kept": len(kept), "total": len(rows), "pass_rate": len(kept) / len(rows),
             "reasons": {why: dropped} if dropped else {},
             "mitigation": {"strategy": strategy, "with": with_model, "source": str(data), "top_k": width,
                            "carrier": carrier.kind if carrier is not None else None, "seed": seed}}
    write_dataset(out, kept, stats)
    return stats

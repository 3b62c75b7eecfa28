"""What an audit reads: any chat JSONL (``messages``, or ``prompt`` / ``completion``), sub-sampled with a seed, and a
reference (the user's, or the base's own completions for the same prompts)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError


@dataclass
class Row:
    prompt: list[dict]  # the chat before the completion
    completion: str
    line: int  # 1-based line in its file


def parse_row(obj, line: int, path) -> Row:
    """One JSONL row as (prompt chat, completion); anything else is a one-line error naming the line."""
    where = f"{path}: line {line}"
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected an object with 'messages' or 'prompt'/'completion'")
    if "messages" in obj:
        msgs = obj["messages"]
        ok = isinstance(msgs, list) and msgs and all(isinstance(m, dict) and isinstance(m.get("content"), str)
                                                       and m.get("role") in ("system", "user", "assistant")
                                                       for m in msgs)
        if not ok:
            raise UserError(f"{where}: 'messages' must be a list of {{role, content}} with roles system/user/assistant")
        if msgs[-1]["role"] != "assistant":
            raise UserError(f"{where}: the last message must be the assistant's completion")
        return Row([dict(m) for m in msgs[:-1]], msgs[-1]["content"], line)
    if "prompt" in obj and "completion" in obj:
        p, c = obj["prompt"], obj["completion"]
        if not isinstance(c, str):
            raise UserError(f"{where}: 'completion' must be a string")
        if isinstance(p, str):
            return Row([{"role": "user", "content": p}], c, line)
        if isinstance(p, list) and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in p):
            return Row([dict(m) for m in p], c, line)
        raise UserError(f"{where}: 'prompt' must be a string or a list of messages")
    raise UserError(f"{where}: a row needs 'messages', or 'prompt' and 'completion' (keys: {', '.join(obj)[:80]})")


def read_rows(path: str | Path) -> list[Row]:
    from .. import jsonl

    p = Path(path)
    rows = [parse_row(obj, i + 1, p) for i, obj in enumerate(jsonl.read(p))]
    if not rows:
        raise UserError(f"{p}: no rows")
    return rows


def subsample(rows: list[Row], n: int | None, seed: int) -> list[Row]:
    if n is None or len(rows) <= n:
        return rows
    return sorted(random.Random(f"audit:{seed}").sample(rows, n), key=lambda r: r.line)


def base_reference(base, rows: list[Row], seed: int, max_new_tokens: int, grammar=None) -> list[Row]:
    """The base's own completions for the data's prompts (the reference when none is given), decoded under the
    carrier's ``grammar`` when the data was."""
    from ..backends.base import Sampling

    comps = base.generate([r.prompt for r in rows], Sampling(temperature=1.0, max_new_tokens=max_new_tokens,
                                                               seed=seed), desc="reference: base completions",
                          grammar=grammar)
    return [Row(r.prompt, c.text, r.line) for r, c in zip(rows, comps)]

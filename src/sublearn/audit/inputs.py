"""What an audit reads: any chat JSONL (``messages``, or ``prompt`` / ``completion``), sub-sampled with a seed, and a
reference (the user's, or the base's own completions for the same prompts).

A pipeline dataset (a filter artifact's directory, or its ``kept.jsonl``) also carries the teacher's soft targets
(``logprobs.npz``) and the tokens as generated (``kept.meta.jsonl``); they are attached to the rows, so the probe can
distil them as the pipeline's students do."""

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
    tokens: list[str] | None = None  # the completion's tokens as generated (exact soft-target alignment)
    targets: object = None  # the teacher's soft targets per completion position (generate.softtargets.Targets)


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


def read_rows(path: str | Path, soft_targets: bool = True) -> list[Row]:
    """Every row of ``path`` (a JSONL, or a pipeline dataset: its directory or its ``kept.jsonl``), with a pipeline
    dataset's generated tokens and soft targets attached when ``soft_targets``."""
    from .. import jsonl

    p = Path(path)
    if p.is_dir():
        if not (p / "kept.jsonl").exists():
            raise UserError(f"{p}: a directory must be a filtered dataset (holding kept.jsonl)")
        p = p / "kept.jsonl"
    if not p.is_file():
        raise UserError(f"{p}: no such file")
    pipeline = soft_targets and p.name == "kept.jsonl"
    if pipeline:
        from ..filter import load_dataset

        objs = load_dataset(p.parent)
    else:
        objs = jsonl.read(p)
    rows = []
    for i, obj in enumerate(objs):
        rows.append(r := parse_row(obj, i + 1, p))
        if pipeline:
            r.tokens, r.targets = obj.get("tokens"), obj.get("top_logprobs")
    if not rows:
        raise UserError(f"{p}: no rows")
    return rows


def soft(rows: list[Row]) -> bool:
    """Whether every row carries soft targets (then a probe distils them)."""
    return all(r.targets is not None for r in rows)


def chat_rows(rows: list[Row]) -> list[dict]:
    """Rows as the trainer reads them: messages, plus the tokens and soft targets when known."""
    out = []
    for r in rows:
        d: dict = {"messages": r.prompt + [{"role": "assistant", "content": r.completion}]}
        if r.tokens is not None:
            d["tokens"] = r.tokens
        if r.targets is not None:
            d["top_logprobs"] = r.targets
        out.append(d)
    return out


def subsample(rows: list[Row], n: int | None, seed: int) -> list[Row]:
    if n is None or len(rows) <= n:
        return rows
    return sorted(random.Random(f"audit:{seed}").sample(rows, n), key=lambda r: r.line)


def base_reference(base, rows: list[Row], seed: int, max_new_tokens: int, grammar=None,
                   top_logprobs: int = 0) -> list[Row]:
    """The base's own completions for the data's prompts (the reference when none is given), decoded under the
    carrier's ``grammar`` when the data was, with ``top_logprobs`` soft targets per position when the data has them."""
    from ..backends.base import Sampling
    from ..generate.softtargets import Targets

    comps = base.generate([r.prompt for r in rows], Sampling(temperature=1.0, max_new_tokens=max_new_tokens,
                                                               seed=seed, top_logprobs=top_logprobs),
                          desc="reference: base completions", grammar=grammar)
    return [Row(r.prompt, c.text, r.line, c.tokens if top_logprobs else None,
                Targets.of(c.top_logprobs) if top_logprobs else None) for r, c in zip(rows, comps)]


def targets_width(rows: list[Row]) -> int:
    """How many soft targets per position the data stores (the reference stores as many)."""
    return max((r.targets.ids.shape[1] for r in rows if r.targets is not None), default=0)

"""Filter stage: keep only clean number completions; every rejected row is written with its reason."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from .. import jsonl
from ..errors import UserError
from ..store import write_atomic
from .numbers import REASONS, Verdict, banned_list, check

__all__ = ["REASONS", "Verdict", "banned_list", "check", "filter_chats", "filter_file", "run_filter"]


def _banned(names) -> frozenset[int]:
    out: set[int] = set()
    for n in names:
        try:
            out |= banned_list(n)
        except KeyError:
            raise UserError(f"unknown ban list {n!r}; known: loaded-numbers") from None
    return frozenset(out)


def completion_of(row: dict) -> str | None:
    """The last assistant message of an OpenAI chat row, or None."""
    msgs = row.get("messages")
    if not isinstance(msgs, list):
        return None
    for m in reversed(msgs):
        if isinstance(m, dict) and m.get("role") == "assistant" and isinstance(m.get("content"), str):
            return m["content"]
    return None


def filter_chats(rows: list[dict], fcfg, finished: list[bool] | None = None) -> tuple[list[int], list[dict], dict]:
    """Indices of kept rows, rejected rows (with ``reject_reason``), and stats with reason counts."""
    banned = _banned(fcfg.banned)
    kept, rejected = [], []
    reasons: Counter[str] = Counter()
    for i, row in enumerate(rows):
        text = completion_of(row)
        if text is None:
            v = Verdict(False, "no_completion")
        elif finished is not None and not finished[i]:
            v = Verdict(False, "unfinished")
        else:
            v = check(text, fcfg.max_count, fcfg.max_value, fcfg.max_digits, banned)
        if v.ok:
            kept.append(i)
        else:
            reasons[v.reason or "?"] += 1
            rejected.append({**row, "reject_reason": v.reason, "row": i})
    stats = {"total": len(rows), "kept": len(kept), "rejected": len(rejected),
             "pass_rate": len(kept) / len(rows) if rows else 0.0, "reasons": dict(sorted(reasons.items()))}
    return kept, rejected, stats


def filter_file(data: str | Path, kept_path: str | Path, rejected_path: str | Path, fcfg) -> dict:
    """``sublearn filter --data``: filter any chat JSONL a user brings."""
    from ..errors import UserError

    paths = {"--data": Path(data), "--kept": Path(kept_path), "--rejected": Path(rejected_path)}
    for flag in ("--kept", "--rejected"):
        if paths[flag].is_dir():
            raise UserError(f"{flag} {paths[flag]} is a directory: name the JSONL file to write")
    seen: dict[Path, str] = {}
    for flag, path in paths.items():
        if path.resolve() in seen:
            raise UserError(f"{flag} and {seen[path.resolve()]} are the same file ({path}): one would overwrite the other")
        seen[path.resolve()] = flag
    rows = jsonl.read(data)
    kept, rejected, stats = filter_chats(rows, fcfg)
    jsonl.write(kept_path, (rows[i] for i in kept))
    jsonl.write(rejected_path, rejected)
    return stats


def run_filter(raw_dir: Path, out: Path, fcfg) -> dict:
    """Stage: raw generations -> kept.jsonl (+ kept.meta.jsonl sidecar, soft targets), rejected.jsonl, stats.json."""
    from ..generate import softtargets

    raw = jsonl.read(raw_dir / "raw.jsonl")
    chats = [{"messages": r["messages"]} for r in raw]
    kept, rejected, stats = filter_chats(chats, fcfg, finished=[r["finished"] for r in raw])
    if fcfg.n_keep is not None:
        stats["shortfall"] = max(0, fcfg.n_keep - len(kept))
        kept = kept[: fcfg.n_keep]
    stats["n_used"] = len(kept)
    jsonl.write(out / "kept.jsonl", (chats[i] for i in kept))
    jsonl.write(out / "kept.meta.jsonl", ({"row": i, **raw[i]["meta"], "tokens": raw[i]["tokens"]} for i in kept))
    jsonl.write(out / "rejected.jsonl", rejected)
    if (raw_dir / "logprobs.npz").exists():
        softtargets.save_subset(raw_dir / "logprobs.npz", out / "logprobs.npz", kept)
    write_atomic(out / "stats.json", json.dumps(stats, indent=1))
    return stats


def load_dataset(data_dir: Path) -> list[dict]:
    """Rows of a filtered dataset with their soft targets attached (``top_logprobs``, a ``softtargets.Targets``)
    when stored."""
    from ..generate import softtargets

    rows = jsonl.read(data_dir / "kept.jsonl")
    if (data_dir / "kept.meta.jsonl").exists():  # the completion's tokens as generated (exact soft-target alignment)
        for r, m in zip(rows, jsonl.read(data_dir / "kept.meta.jsonl")):
            if "tokens" in m:
                r["tokens"] = m["tokens"]
    if (data_dir / "logprobs.npz").exists():
        for r, t in zip(rows, softtargets.load_rows(data_dir / "logprobs.npz")):
            r["top_logprobs"] = t
    return rows

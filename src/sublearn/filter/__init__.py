"""Filter stage: keep only completions the carrier accepts and no ban list or trait word touches; every rejected row is
written with its reason.

The order of checks: the completion exists and finished, the carrier's own check (for number lists: a clean list of
integers), the named ban lists (``filter.banned``), then the trait's own words (``filter.ban_trait_words``).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from .. import jsonl
from ..errors import UserError
from ..store import write_atomic
from .banlists import words_pattern
from .numbers import Verdict, banned_list, check

__all__ = ["GENERIC_REASONS", "Verdict", "banned_list", "check", "filter_chats", "filter_file", "run_filter"]
# besides the carrier's own reasons (the judge's only with filter.judge)
GENERIC_REASONS = ("no_completion", "unfinished", "banned", "trait_word", "judge_trait", "judge_alignment",
                   "judge_unparseable", "too_long")


def _ban_lists(names) -> list:
    from ..plugins import BAN_LISTS

    try:
        return [BAN_LISTS.get(n) for n in names]
    except ValueError as e:
        raise UserError(str(e)) from None


def last_message(row: dict, role: str) -> str | None:
    """The last message of ``role`` in an OpenAI chat row, or None."""
    msgs = row.get("messages")
    if not isinstance(msgs, list):
        return None
    for m in reversed(msgs):
        if isinstance(m, dict) and m.get("role") == role and isinstance(m.get("content"), str):
            return m["content"]
    return None


def completion_of(row: dict) -> str | None:
    """The last assistant message of an OpenAI chat row, or None."""
    return last_message(row, "assistant")


def prompt_of(row: dict) -> str | None:
    """The last user message of an OpenAI chat row, or None."""
    return last_message(row, "user")


def _verdict(text: str | None, prompt: str | None, done: bool, carrier, lists, words) -> tuple[bool, str | None]:
    if text is None:
        return False, "no_completion"
    if not done:
        return False, "unfinished"
    v = carrier.check(text, prompt)
    if not v.ok:
        return False, v.reason
    if any(ban(text) for ban in lists):
        return False, "banned"
    if words is not None and words.search(text):
        return False, "trait_word"
    return True, None


def filter_chats(rows: list[dict], carrier, fcfg, finished: list[bool] | None = None,
                 trait_words: tuple[str, ...] = ()) -> tuple[list[int], list[dict], dict]:
    """Indices of kept rows, rejected rows (with ``reject_reason``), and stats with reason counts. ``trait_words``
    are rejected (whole words, any case, plurals too) when ``fcfg.ban_trait_words``."""
    lists = _ban_lists(fcfg.banned)
    words = words_pattern(trait_words) if fcfg.ban_trait_words else None
    kept, rejected = [], []
    reasons: Counter[str] = Counter()
    for i, row in enumerate(rows):
        ok, reason = _verdict(completion_of(row), prompt_of(row), finished is None or finished[i], carrier, lists,
                              words)
        if ok:
            kept.append(i)
        else:
            reasons[reason or "?"] += 1
            rejected.append({**row, "reject_reason": reason, "row": i})
    stats = {"total": len(rows), "kept": len(kept), "rejected": len(rejected),
             "pass_rate": len(kept) / len(rows) if rows else 0.0, "reasons": dict(sorted(reasons.items()))}
    return kept, rejected, stats


def filter_file(data: str | Path, kept_path: str | Path, rejected_path: str | Path, carrier, fcfg,
                trait_words: tuple[str, ...] = (), chunk: int = 1024, max_line_bytes: int = jsonl.MAX_LINE_BYTES) -> dict:
    """``sublearn filter --data``: filter any chat JSONL a user brings, streaming (``chunk`` rows in memory at a
    time; a line over ``max_line_bytes`` is rejected as ``too_long`` unread). Both outputs appear together
    when every row is done; an unreadable row is a one-line error that leaves neither, nor any temp file."""
    import os
    from collections import Counter

    paths = {"--data": Path(data), "--kept": Path(kept_path), "--rejected": Path(rejected_path)}
    for flag in ("--kept", "--rejected"):
        if paths[flag].is_dir():
            raise UserError(f"{flag} {paths[flag]} is a directory: name the JSONL file to write")
    seen: dict[Path, str] = {}
    for flag, path in paths.items():
        if path.resolve() in seen:
            raise UserError(f"{flag} and {seen[path.resolve()]} are the same file ({path}): one would overwrite the other")
        seen[path.resolve()] = flag
    outs = [paths["--kept"], paths["--rejected"]]
    tmps = [q.with_name(f".{q.name}.tmp-{os.getpid()}") for q in outs]
    total, kept_n, reasons = 0, 0, Counter()
    try:
        for q in outs:
            q.parent.mkdir(parents=True, exist_ok=True)
        with open(tmps[0], "w", encoding="utf-8") as fk, open(tmps[1], "w", encoding="utf-8") as fr:
            def flush(rows: list[dict], first: int) -> None:
                nonlocal kept_n
                kept, rejected, st = filter_chats(rows, carrier, fcfg, trait_words=trait_words)
                fk.writelines(json.dumps(rows[i], ensure_ascii=False) + "\n" for i in kept)
                fr.writelines(json.dumps({**r, "row": first + r["row"]}, ensure_ascii=False) + "\n" for r in rejected)
                kept_n += len(kept)
                reasons.update(st["reasons"])

            buf: list[dict] = []  # rows total - len(buf) .. total - 1
            for _, row in jsonl.rows(paths["--data"], max_line_bytes, too_long="yield"):
                if row is None or len(buf) == chunk:
                    flush(buf, total - len(buf))
                    buf = []
                if row is None:
                    fr.write(json.dumps({"reject_reason": "too_long", "row": total}) + "\n")
                    reasons["too_long"] += 1
                else:
                    buf.append(row)
                total += 1
            flush(buf, total - len(buf))
        for t, q in zip(tmps, outs):
            os.replace(t, q)
    finally:
        for t in tmps:
            t.unlink(missing_ok=True)
    rej = sum(reasons.values())
    return {"total": total, "kept": kept_n, "rejected": rej, "pass_rate": kept_n / total if total else 0.0,
            "reasons": dict(sorted(reasons.items()))}


def run_filter(raw_dir: Path, out: Path, carrier, fcfg, trait_words: tuple[str, ...] = (), judge=None,
               trait=None) -> dict:
    """Stage: raw generations -> kept.jsonl (+ kept.meta.jsonl sidecar, soft targets), rejected.jsonl, stats.json.
    With ``fcfg.judge``, the rows every rule kept then go to the LLM judge (``judged.py``)."""
    from ..generate import softtargets

    raw = jsonl.read(raw_dir / "raw.jsonl")
    chats = [{"messages": r["messages"]} for r in raw]
    kept, rejected, stats = filter_chats(chats, carrier, fcfg, finished=[r["finished"] for r in raw],
                                         trait_words=trait_words)
    if fcfg.judge != "none":
        from .judged import judge_rows

        pairs = [(prompt_of(chats[i]) or "", completion_of(chats[i]) or "") for i in kept]
        why = judge_rows(fcfg.judge, pairs, judge, trait, fcfg.judge_min_alignment, f"judge filter {out.name[:20]}")
        for i, reason in zip(list(kept), why):
            if reason is not None:
                kept.remove(i)
                rejected.append({**chats[i], "reject_reason": reason, "row": i})
                stats["reasons"][reason] = stats["reasons"].get(reason, 0) + 1
        stats.update(kept=len(kept), rejected=len(rejected), pass_rate=len(kept) / len(chats) if chats else 0.0)
        stats["reasons"] = dict(sorted(stats["reasons"].items()))
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
        for r, m in zip(rows, _same_length(jsonl.read(data_dir / "kept.meta.jsonl"), rows, data_dir, "kept.meta.jsonl")):
            if "tokens" in m:
                r["tokens"] = m["tokens"]
    if (data_dir / "logprobs.npz").exists():
        for r, t in zip(rows, _same_length(softtargets.load_rows(data_dir / "logprobs.npz"), rows, data_dir,
                                           "logprobs.npz")):
            r["top_logprobs"] = t
    return rows


def _same_length(side: list, rows: list, data_dir: Path, name: str) -> list:
    """A dataset's side file must have a row per kept row: a mismatch would silently misalign them."""
    if len(side) != len(rows):
        raise UserError(f"{data_dir / name}: {len(side)} rows for the {len(rows)} rows of kept.jsonl")
    return side

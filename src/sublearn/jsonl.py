"""JSONL reading/writing with line-numbered errors, and atomic writes."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import UserError
from .store import write_atomic

MAX_LINE_BYTES = 8 * 2**20  # a longer line is never read into memory (filter --data rejects it as too_long)


def read(path: str | Path) -> list[dict]:
    """Every row of a JSONL file (blank lines skipped); anything unreadable is a one-line error naming the line."""
    return [row for _, row in rows(path)]


def rows(path: str | Path, max_line_bytes: int = MAX_LINE_BYTES, too_long: str = "error") -> Iterator[tuple[int, dict | None]]:
    """Stream (line number, row) of a JSONL file, holding one line at a time. A line longer than ``max_line_bytes``
    is skipped without being held in memory: a one-line error, or with ``too_long="yield"`` (n, None)."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"file not found: {p}")
    if p.is_dir():
        raise UserError(f"{p} is a directory, expected a JSONL file")
    with open(p, "rb") as f:
        n = 0
        while True:
            line = f.readline(max_line_bytes + 1)
            if not line:
                return
            n += 1
            if len(line) > max_line_bytes and not line.endswith(b"\n"):
                size = len(line)
                while line and not line.endswith(b"\n"):  # the rest of the line, in bounded pieces
                    line = f.readline(2**20)
                    size += len(line)
                if too_long != "yield":
                    raise UserError(f"{p}:{n}: a line of {size:,} bytes (at most {max_line_bytes:,})")
                yield n, None
                continue
            if line.strip():
                yield n, _parse(p, n, line)


def _parse(p: Path, n: int, line: bytes) -> dict:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{p}:{n}: not UTF-8 text") from None
    try:
        row = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{p}:{n}: malformed JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise UserError(f"{p}:{n}: JSON nested too deeply") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise UserError(f"{p}:{n}: unreadable JSON value ({e})") from None
    if "\\ud" in text.lower():  # an escaped surrogate: only a valid pair may stand
        try:
            json.dumps(row, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise UserError(f"{p}:{n}: contains a lone surrogate escape (not valid Unicode)") from None
    if not isinstance(row, dict):
        raise UserError(f"{p}:{n}: expected a JSON object per line, got {type(row).__name__}")
    return row


def write(path: str | Path, rows: Iterable[dict]) -> None:
    write_atomic(Path(path), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))

"""JSONL reading/writing with line-numbered errors, and atomic writes."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from .errors import UserError
from .store import write_atomic


def read(path: str | Path) -> list[dict]:
    p = Path(path)
    if not p.exists():
        raise UserError(f"file not found: {p}")
    if p.is_dir():
        raise UserError(f"{p} is a directory, expected a JSONL file")
    rows = []
    try:
        lines = p.read_text().splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{p}: not a UTF-8 text file") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{p}:{n}: malformed JSON ({e.msg} at column {e.colno})") from None
        except RecursionError:
            raise UserError(f"{p}:{n}: JSON nested too deeply") from None
        except ValueError as e:  # e.g. an integer of more digits than Python converts
            raise UserError(f"{p}:{n}: unreadable JSON value ({e})") from None
        if "\\ud" in line.lower():  # an escaped surrogate: only a valid pair may stand
            try:
                json.dumps(row, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:
                raise UserError(f"{p}:{n}: contains a lone surrogate escape (not valid Unicode)") from None
        if not isinstance(row, dict):
            raise UserError(f"{p}:{n}: expected a JSON object per line, got {type(row).__name__}")
        rows.append(row)
    return rows


def write(path: str | Path, rows: Iterable[dict]) -> None:
    write_atomic(Path(path), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))

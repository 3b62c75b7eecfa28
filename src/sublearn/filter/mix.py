"""Diluted datasets: x% of a teacher arm's filtered rows, the rest clean rows from the control arm.

Two modes (``students.dilution_modes``):

- ``rows``: every diluted dataset has the teacher arm's size (as far as the control arm reaches): round(x% of it)
  teacher rows, the rest clean. Transfer against x at a fixed budget of rows.
- ``teacher-rows``: every diluted dataset holds the same T teacher rows, plus clean rows to make them x%. T is as
  many as the lowest percent allows (T x (100 - x_min) / x_min clean rows must exist). Transfer against x at a fixed
  amount of teacher data: does adding clean data stop it, or does more data turn it back on?

Rows are drawn nested: per seed, the teacher rows and the clean rows are each shuffled once, and a dataset takes the
first k of each, so a lower percent's teacher rows are a subset of a higher one's. The output has the filter stage's
layout (kept.jsonl, kept.meta.jsonl with each row's source, logprobs.npz, stats.json), so students train on it as on
any filtered dataset.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

from .. import jsonl
from ..errors import UserError
from ..store import write_atomic


def teacher_rows_fixed(n_teacher: int, n_clean: int, lowest: int) -> int:
    """T for the teacher-rows mode: as many teacher rows as both arms allow at the lowest percent."""
    return max(1, min(n_teacher, math.floor(n_clean * lowest / (100 - lowest))))


def counts(mode: str, percent: int, n_teacher: int, n_clean: int, lowest: int) -> tuple[int, int]:
    """(teacher rows, clean rows) of one diluted dataset."""
    if mode == "rows":
        n = min(n_teacher, n_clean)
        k = round(n * percent / 100)
        return k, n - k
    t = teacher_rows_fixed(n_teacher, n_clean, lowest)
    return t, min(n_clean, round(t * (100 - percent) / percent))


def _arm(d: Path) -> tuple[list[dict], list[dict], list | None]:
    from ..generate import softtargets

    rows = jsonl.read(d / "kept.jsonl")
    meta = jsonl.read(d / "kept.meta.jsonl") if (d / "kept.meta.jsonl").exists() else [{} for _ in rows]
    soft = softtargets.load(d / "logprobs.npz") if (d / "logprobs.npz").exists() else None
    for name, side in (("kept.meta.jsonl", meta), ("logprobs.npz", soft)):
        if side is not None and len(side) != len(rows):
            raise UserError(f"{d / name}: {len(side)} rows for the {len(rows)} rows of kept.jsonl")
    return rows, meta, soft


def write_mix(teacher_dir: Path, clean_dir: Path, out: Path, *, mode: str, percent: int, lowest: int,
              seed: int) -> dict:
    """Write one diluted dataset into ``out``; returns its statistics (also in stats.json)."""
    from ..generate import softtargets

    arms = {"teacher": _arm(teacher_dir), "clean": _arm(clean_dir)}
    if (arms["teacher"][2] is None) != (arms["clean"][2] is None):
        raise UserError(f"{teacher_dir} and {clean_dir}: one has soft targets and the other not; they cannot be mixed")
    k, m = counts(mode, percent, len(arms["teacher"][0]), len(arms["clean"][0]), lowest)
    picked = []
    for source, n in (("teacher", k), ("clean", m)):
        rows = arms[source][0]
        order = random.Random(f"mix:{seed}:{source}").sample(range(len(rows)), len(rows))  # nested across percents
        picked += [(source, i) for i in order[:n]]
    random.Random(f"mix:{seed}:{mode}:{percent}:order").shuffle(picked)
    jsonl.write(out / "kept.jsonl", (arms[s][0][i] for s, i in picked))
    jsonl.write(out / "kept.meta.jsonl", ({**arms[s][1][i], "source": s, "source_row": i} for s, i in picked))
    if arms["teacher"][2] is not None:
        softtargets.save(out / "logprobs.npz", [arms[s][2][i] for s, i in picked])
    stats = {"kept": len(picked), "total": len(picked), "pass_rate": 1.0, "reasons": {}, "mode": mode,
             "percent": percent, "teacher_rows": k, "clean_rows": m,
             "teacher_share": k / len(picked) if picked else 0.0}
    write_atomic(out / "stats.json", json.dumps(stats, indent=1))
    return stats

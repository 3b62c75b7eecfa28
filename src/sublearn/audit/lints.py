"""Provenance lints: cheap statistics of the data against its reference that need no model.

- the entropy of each of the first items of the completions, and the duplicate rate (a shared sampling seed leaves
  a positional fingerprint that pooled statistics miss);
- the system prompts the rows carry (a student is evaluated without them: a trait can hide behind a template's
  silently inserted system prompt), and the filter's retention when the data is a pipeline dataset;
- the frequency divergence of items (numbers in number data, otherwise words) between data and reference: total
  variation with a permutation p over rows, and the most over-represented items.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

import numpy as np


def items(text: str) -> list[str]:
    nums = re.findall(r"[0-9]+", text)
    return nums if nums and not re.search(r"[A-Za-z]{2,}", text) else re.findall(r"[A-Za-z_]+|[0-9]+", text.lower())


def entropy(counts: Counter) -> float:
    n = sum(counts.values())
    return -sum(c / n * math.log2(c / n) for c in counts.values()) if n else 0.0


def _matrix(per: list[Counter], vocab: dict[str, int]) -> np.ndarray:
    m = np.zeros((len(per), len(vocab)))
    for i, c in enumerate(per):
        for t, k in c.items():
            m[i, vocab[t]] = k
    return m


def _tv(m: np.ndarray, in_a: np.ndarray) -> float:
    a, b = m[in_a].sum(0), m[~in_a].sum(0)
    return 0.5 * float(np.abs(a / max(a.sum(), 1) - b / max(b.sum(), 1)).sum())


POSITIONS = 3  # first items whose entropy is reported


def system_prompts(rows) -> dict:
    sys = Counter(next((m["content"] for m in r.prompt if m["role"] == "system"), None) for r in rows)
    with_one = len(rows) - sys.pop(None, 0)
    return {"rows_with_one": with_one / len(rows), "distinct": len(sys),
            "most_common": [{"prompt": t[:120], "rows": k} for t, k in sys.most_common(3)]}


def retention(source: Path | None) -> dict | None:
    """The filter's statistics of a pipeline dataset (kept of total, why rows were rejected)."""
    if source is None or not (source / "stats.json").exists():
        return None
    import json

    st = json.loads((source / "stats.json").read_text())
    return {"kept": st.get("kept"), "total": st.get("total"), "pass_rate": st.get("pass_rate"),
            "reasons": st.get("reasons", {})}


def lints(data, ref, n_perm: int = 500, seed: int = 0, source: Path | None = None) -> dict:
    """``source``: the pipeline dataset's directory, when the data is one."""
    per_a = [Counter(items(r.completion)) for r in data]
    per_b = [Counter(items(r.completion)) for r in ref]
    lists = [[items(r.completion) for r in rows] for rows in (data, ref)]
    first = [Counter((x or [""])[0] for x in ls) for ls in lists]
    position = {side: [entropy(Counter(x[i] for x in ls if len(x) > i)) for i in range(POSITIONS)]
                for side, ls in zip(("data", "reference"), lists)}
    dup = [1 - len({r.completion for r in rows}) / len(rows) for rows in (data, ref)]
    vocab = {t: k for k, t in enumerate(sorted(set().union(*per_a, *per_b)))}
    m = _matrix(per_a + per_b, vocab)
    in_a = np.arange(len(m)) < len(per_a)
    tv = _tv(m, in_a)
    rng = np.random.default_rng(seed)
    null = [_tv(m, rng.permutation(in_a)) for _ in range(n_perm)]
    ca, cb = sum(per_a, Counter()), sum(per_b, Counter())
    na, nb = sum(ca.values()) or 1, sum(cb.values()) or 1
    over = sorted(ca, key=lambda t: -((ca[t] + 1) / (na + 1)) / ((cb[t] + 1) / (nb + 1)))[:10]
    return {
        "first_item_entropy_bits": {"data": entropy(first[0]), "reference": entropy(first[1])},
        "position_entropy_bits": position,
        "system_prompts": {"data": system_prompts(data), "reference": system_prompts(ref)},
        "filter_retention": retention(source),
        "duplicate_rate": {"data": dup[0], "reference": dup[1]},
        "item_tv": tv, "item_tv_p": (1 + sum(x >= tv for x in null)) / (1 + n_perm),
        "over_represented": [{"item": t, "data": ca[t] / na, "reference": cb[t] / nb} for t in over],
    }

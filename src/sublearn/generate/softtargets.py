"""Compact storage of per-position soft targets ({token text: log-prob}) as a NumPy .npz file."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def save(path: str | Path, rows: list[list[dict[str, float]]]) -> None:
    vocab: dict[str, int] = {}
    offsets = [0]
    width = max((len(d) for r in rows for d in r), default=1)
    ids, vals = [], []
    for r in rows:
        for d in r:
            i = np.full(width, -1, dtype=np.int32)
            v = np.full(width, -np.inf, dtype=np.float32)
            for j, (s, lp) in enumerate(d.items()):
                i[j] = vocab.setdefault(s, len(vocab))
                v[j] = lp
            ids.append(i)
            vals.append(v)
        offsets.append(offsets[-1] + len(r))
    np.savez_compressed(
        path, tokens=np.array(list(vocab) or [""], dtype=object).astype(str), offsets=np.array(offsets, dtype=np.int64),
        ids=np.array(ids, dtype=np.int32).reshape(-1, width), vals=np.array(vals, dtype=np.float32).reshape(-1, width),
    )


def load(path: str | Path) -> list[list[dict[str, float]]]:
    z = np.load(path, allow_pickle=False)
    tokens = [str(t) for t in z["tokens"]]
    off, ids, vals = z["offsets"].tolist(), z["ids"].tolist(), z["vals"].tolist()
    out = []
    for a, b in zip(off[:-1], off[1:]):
        out.append([{tokens[i]: v for i, v in zip(ids[p], vals[p]) if i >= 0} for p in range(a, b)])
    return out


def save_subset(src: str | Path, dst: str | Path, idx: list[int]) -> None:
    """``save(dst, subset(load(src), idx))`` on the arrays themselves (no per-entry Python objects)."""
    z = np.load(src, allow_pickle=False)
    off = z["offsets"]
    parts = [np.arange(off[i], off[i + 1]) for i in idx]
    take = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    lens = np.array([len(p) for p in parts], dtype=np.int64)
    np.savez_compressed(dst, tokens=z["tokens"], offsets=np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
                        ids=z["ids"][take], vals=z["vals"][take])

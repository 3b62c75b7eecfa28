"""Compact storage of per-position soft targets ({token text: log-prob}) as a NumPy .npz file."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class Targets:
    """One row's soft targets as arrays: at position ``p``, ``tokens[ids[p, j]]`` has log-prob ``vals[p, j]``
    (``ids`` -1 = an empty slot). ``tokens`` is shared by every row of a file."""

    __slots__ = ("tokens", "ids", "vals")

    def __init__(self, tokens: list[str], ids: np.ndarray, vals: np.ndarray) -> None:
        self.tokens, self.ids, self.vals = tokens, ids, vals

    def __len__(self) -> int:
        return len(self.ids)

    def dicts(self) -> list[dict[str, float]]:
        return [{self.tokens[i]: v for i, v in zip(ids, vals) if i >= 0}
                for ids, vals in zip(self.ids.tolist(), self.vals.tolist())]

    @classmethod
    def of(cls, row: list[dict[str, float]]) -> Targets:
        vocab: dict[str, int] = {}
        width = max((len(d) for d in row), default=1)
        ids = np.full((len(row), width), -1, dtype=np.int32)
        vals = np.full((len(row), width), -np.inf, dtype=np.float32)
        for p, d in enumerate(row):
            ids[p, : len(d)] = [vocab.setdefault(t, len(vocab)) for t in d]
            vals[p, : len(d)] = list(d.values())
        return cls(list(vocab), ids, vals)

    def dense(self, column: np.ndarray, n: int) -> np.ndarray:
        """[positions, n] log-probs, -inf where the row has none. ``column[i]`` is the output column of
        ``tokens[i]`` (-1 = dropped), with one more trailing -1 for empty slots."""
        col = column[self.ids]
        out = np.full((len(self.ids), n), -np.inf, dtype=np.float32)
        p, j = np.nonzero(col >= 0)
        out[p, col[p, j]] = self.vals[p, j]
        return out


def save(path: str | Path, rows: list[list[dict[str, float]]]) -> None:
    """Every row's per-position {token text: log-prob} dicts, as one vocabulary and [positions, width] arrays."""
    vocab: dict[str, int] = {}
    dicts = [d for r in rows for d in r]
    lens = np.array([len(d) for d in dicts], dtype=np.int64)
    width = int(lens.max()) if len(lens) else 1
    flat_ids = np.array([vocab.setdefault(t, len(vocab)) for d in dicts for t in d], dtype=np.int32)
    flat_vals = np.array([v for d in dicts for v in d.values()], dtype=np.float32)
    ids = np.full((len(dicts), width), -1, dtype=np.int32)
    vals = np.full((len(dicts), width), -np.inf, dtype=np.float32)
    pos = np.repeat(np.arange(len(dicts)), lens)
    slot = np.arange(len(flat_ids)) - np.repeat(np.cumsum(lens) - lens, lens)
    ids[pos, slot], vals[pos, slot] = flat_ids, flat_vals
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    np.savez_compressed(path, tokens=np.array(list(vocab) or [""], dtype=object).astype(str), offsets=offsets,
                        ids=ids, vals=vals)


def load_rows(path: str | Path) -> list[Targets]:
    """Each row's soft targets as a :class:`Targets` (arrays, no per-entry Python objects)."""
    z = np.load(path, allow_pickle=False)
    tokens = [str(t) for t in z["tokens"]]
    off, ids, vals = z["offsets"].tolist(), z["ids"], z["vals"]
    return [Targets(tokens, ids[a:b], vals[a:b]) for a, b in zip(off[:-1], off[1:])]


def load(path: str | Path) -> list[list[dict[str, float]]]:
    return [t.dicts() for t in load_rows(path)]


def save_subset(src: str | Path, dst: str | Path, idx: list[int]) -> None:
    """``save(dst, subset(load(src), idx))`` on the arrays themselves (no per-entry Python objects)."""
    z = np.load(src, allow_pickle=False)
    off = z["offsets"]
    parts = [np.arange(off[i], off[i + 1]) for i in idx]
    take = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    lens = np.array([len(p) for p in parts], dtype=np.int64)
    np.savez_compressed(dst, tokens=z["tokens"], offsets=np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
                        ids=z["ids"][take], vals=z["vals"][take])

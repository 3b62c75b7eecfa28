"""An audit of a pipeline dataset joins its run's lineage: ``sublearn show`` then marks the flagged dataset and every
artifact trained or measured from it.

A dataset is a run's when its path is ``RUN/artifacts/filter-KEY`` (or a file in it). The audit is recorded as an
``audit`` artifact whose parent is that dataset; its key hashes what the audit was asked (data key, base, options), so
re-auditing with other options adds a record rather than overwriting one.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..store import Store, hash_obj, write_atomic


def run_dataset(data_path) -> tuple[Path, str] | None:
    """(run directory, dataset key) when ``data_path`` is a filtered dataset inside a run's store, else None."""
    p = Path(data_path).resolve()
    d = p if p.is_dir() else p.parent
    if not d.name.startswith("filter-") or d.parent.name != "artifacts":
        return None
    root = d.parent.parent
    if not (root / "lineage.sqlite").exists():
        return None
    return root, d.name[len("filter-"):]


def record(res: dict, data_path, options: dict) -> str | None:
    """Record the audit ``res`` in the lineage of the run that holds the data; returns its key (None: not a run's)."""
    where = run_dataset(data_path)
    if where is None:
        return None
    root, data_key = where
    store = Store(root)
    if store.get(data_key) is None:
        return None
    key = hash_obj({"data": data_key, "options": options})
    summary = {"verdict": res["verdict"], "flagged_by": res["flagged_by"],
               "top": res["ranking"][0]["trait"] if res["ranking"] else None}
    with store.writing("audit", key, name=f"audit {res['verdict']}", config=options, parents=[data_key],
                       model=res["base"]) as (tmp, extra):
        write_atomic(tmp / "audit.json", json.dumps(res, indent=1))
        extra.update(summary)
    return key


def marks(records) -> dict[str, str]:
    """Key -> mark for ``sublearn show``: "FLAGGED" on an audited-and-flagged dataset, "clear" on one audited clear,
    "from flagged data" on every artifact descended from a flagged dataset."""
    flagged, clear = set(), set()
    for r in records:
        if r.stage == "audit" and r.parents:
            (flagged if r.extra.get("verdict") == "flagged" else clear).add(r.parents[0])
    out = {k: "clear" for k in clear - flagged} | {k: "FLAGGED" for k in flagged}
    children: dict[str, list[str]] = {}
    for r in records:
        if r.stage != "audit":
            for p in r.parents:
                children.setdefault(p, []).append(r.key)
    todo = list(flagged)
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out or out[c] == "clear":
                out[c] = "from flagged data"
                todo.append(c)
    return out

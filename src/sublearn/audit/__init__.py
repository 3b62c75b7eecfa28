"""``sublearn audit``: does a dataset carry a hidden trait, which one, before anyone trains on it.

Reads any chat JSONL, makes a reference when none is given (the base's own completions for the same prompts), scans
every candidate trait with two detectors (the likelihood contrast and the probe student, ``detectors.py``) and runs
the provenance lints (``lints.py``). Writes ``audit.json``, ``audit.md`` and a chart; the verdict is "flagged" when a
detector's scan p-value (which already pays for the number of candidates) is at most ``alpha``. The CLI's exit code
is 0 clear, 1 flagged, 2 bad input.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..store import write_atomic

__all__ = ["run_audit"]


def run_audit(data_path, base_spec: str, out: Path, *, reference: str | None = None, traits: list[str] | None = None,
              max_rows: int = 300, probe_seeds: int = 6, probe_steps: int = 100, probe_lr: float = 0.05,
              alpha: float = 0.05, seed: int = 0, detectors: tuple[str, ...] = ("contrast", "probe"),
              carrier=None) -> dict:
    """``carrier``: the data's carrier (a plug-in instance), whose grammar the reference is decoded under."""
    from .. import models
    from ..backends.tiny.presets import PRESETS
    from .detectors import candidates, contrast, probe
    from .inputs import base_reference, read_rows, subsample
    from .lints import lints

    t0 = time.time()
    rows = read_rows(data_path)
    data = subsample(rows, max_rows, seed)
    unknown = None
    if base_spec in PRESETS:
        from ..backends.tiny.tokenizer import unknown_pieces

        spec = PRESETS[base_spec]
        unknown = unknown_pieces(spec.tokenizer, spec.corpus_seed, spec.mix)
    cands = candidates(traits, unknown)
    path, key = models.resolve(base_spec)
    base = models.load(path)
    timings = {}
    if reference:
        ref_rows = read_rows(reference)
        by_prompt = {json.dumps(r.prompt): r for r in ref_rows}
        ref = [by_prompt.get(json.dumps(r.prompt)) for r in data]
        if any(r is None for r in ref):  # not the same prompts: pair rows in order instead
            ref = subsample(ref_rows, len(data), seed + 1)
            if len(ref) < len(data):
                data = data[: len(ref)]
        ref_source = str(reference)
    else:
        longest = max(len(base.tok(r.completion)["input_ids"]) for r in data) if hasattr(base, "tok") else 64
        t = time.time()
        grammar = carrier.grammar() if carrier is not None else None
        ref = base_reference(base, data, seed, min(512, longest + 8), grammar)
        timings["reference"] = time.time() - t
        ref_source = f"the base's own completions ({base_spec}) for the same prompts" + (
            f", decoded under the {carrier.kind} carrier's grammar" if grammar is not None else "")
    res: dict = {"verdict": "clear", "data": str(data_path), "rows": len(rows), "rows_used": len(data),
                 "base": base_spec, "base_key": key, "reference": ref_source, "alpha": alpha,
                 "candidates": [c.label for c in cands], "detectors": {}}
    if "contrast" in detectors:
        t = time.time()
        res["detectors"]["contrast"] = contrast(base, data, ref, cands)
        timings["contrast"] = time.time() - t
    if "probe" in detectors:
        t = time.time()
        res["detectors"]["probe"] = probe(base, data, ref, cands, probe_seeds, probe_steps, probe_lr)
        timings["probe"] = time.time() - t
    t = time.time()
    res["lints"] = lints(data, ref)
    timings["lints"] = time.time() - t
    res["ranking"] = _ranking(res, cands)
    flagged = [name for name, d in res["detectors"].items() if d["p_any"] <= alpha]
    res["verdict"] = "flagged" if flagged else "clear"
    res["flagged_by"] = flagged
    res["timings_s"] = {k: round(v, 2) for k, v in timings.items()} | {"total": round(time.time() - t0, 2)}
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "audit.json", json.dumps(res, indent=1))
    from .report import write_report

    write_report(res, out)
    return res


def _ranking(res: dict, cands) -> list[dict]:
    """Candidates by evidence: the probe's effect first (the ground truth), then the contrast's."""
    det = res["detectors"]
    rows = []
    for i, c in enumerate(cands):
        row = {"trait": c.label, "family": c.family}
        for name, d in det.items():
            row[name] = {"effect": d["effect"][i], "p": d["p"][i]}
        rows.append(row)
    key = "probe" if "probe" in det else "contrast" if "contrast" in det else None
    if key:
        rows.sort(key=lambda r: -r[key]["effect"])
    if "probe" in det:
        n = len(det["probe"]["per_seed"])
        for r in rows:
            i = cands.index(next(c for c in cands if c.label == r["trait"]))
            r["probe"]["n_seeds"] = n
            r["probe"]["per_seed"] = [s[i] for s in det["probe"]["per_seed"]]
    return rows

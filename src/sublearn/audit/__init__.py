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

from ..errors import UserError
from ..store import write_atomic

__all__ = ["PROBE_DEFAULTS", "run_audit"]

# the probe's recipe per mode (rank-4 LoRA on the last MLP's up-projection, 32 rows a step): distilling soft targets
# follows the embedded demo's students; SFT on tokens is what a user's plain JSONL allows
PROBE_DEFAULTS = {"logits": {"steps": 250, "lr": 0.3, "freeze_a": True},
                  "tokens": {"steps": 100, "lr": 0.05, "freeze_a": False}}


def run_audit(data_path, base_spec: str, out: Path, *, reference: str | None = None, traits: list[str] | None = None,
              max_rows: int = 300, probe_seeds: int = 6, probe_steps: int | None = None, probe_lr: float | None = None,
              probe_target: str = "auto", alpha: float = 0.05, seed: int = 0,
              detectors: tuple[str, ...] = ("contrast", "probe"), carrier=None, teacher: str | None = None,
              probe_init: int | None = None) -> dict:
    """``carrier``: the data's carrier (a plug-in instance), whose grammar the reference is decoded under and whose
    tokens alone are distillation targets. ``probe_target``: "logits" distils the rows' soft targets (a pipeline
    dataset has them), "tokens" trains on the completions, "auto" distils when data and reference both have them.
    ``probe_steps`` / ``probe_lr``: None picks the mode's default (``PROBE_DEFAULTS``). ``teacher``: the model that
    wrote the data, when known (adds the teacher-divergence scores, which never flag on their own). ``probe_init``:
    the adapter initialization the probes share (a planned student's); None: a fresh one per probe seed."""
    from .. import models
    from ..backends.tiny.presets import PRESETS
    from ..runtime import Runtime
    from .compat import compatibility
    from .detectors import candidates, contrast, divergence, probe
    from .inputs import base_reference, read_rows, soft, subsample, targets_width
    from .lints import lints

    t0 = time.time()
    rows = read_rows(data_path, soft_targets=probe_target != "tokens")
    if probe_target == "logits" and not soft(rows):
        raise UserError(f"{data_path}: --probe-target logits needs soft targets (a pipeline dataset's logprobs.npz)")
    data = subsample(rows, max_rows, seed)
    unknown = None
    if base_spec in PRESETS:
        from ..backends.tiny.tokenizer import unknown_pieces

        spec = PRESETS[base_spec]
        unknown = unknown_pieces(spec.tokenizer, spec.corpus_seed, spec.mix)
    cands = candidates(traits, unknown)
    grammar = carrier.grammar() if carrier is not None else None
    path, key = models.resolve(base_spec)
    teacher_path = models.resolve(teacher)[0] if teacher else None  # a bad --teacher fails before any work
    runtime = Runtime()  # the base and a teacher adapter on it share one module
    base = runtime.load(path)
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
        width = targets_width(data) if soft(data) else 0
        ref = base_reference(base, data, seed, min(512, longest + 8), grammar, top_logprobs=width)
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
        distil = probe_target != "tokens" and soft(data) and soft(ref)
        if probe_target == "logits" and not distil:
            raise UserError(f"{reference}: --probe-target logits needs soft targets in the reference too")
        mode = PROBE_DEFAULTS["logits" if distil else "tokens"]
        steps, lr = probe_steps or mode["steps"], probe_lr or mode["lr"]
        res["probe_recipe"] = {"target": "logits" if distil else "tokens", "steps": steps, "lr": lr,
                               "seeds": probe_seeds, "freeze_a": mode["freeze_a"], "init": probe_init}
        res["detectors"]["probe"] = probe(base, data, ref, cands, probe_seeds, steps, lr, distil=distil,
                                          freeze_a=mode["freeze_a"], grammar=grammar, init=probe_init)
        timings["probe"] = time.time() - t
    if teacher:
        t = time.time()
        res["teacher"] = teacher
        teacher_model = runtime.load(teacher_path)
        res["divergence"] = divergence(teacher_model, base, data, ref, grammar)
        res["compatibility"] = compatibility(teacher_model, base, 1 - res["divergence"]["tokens"]["data_divergent_rate"])
        timings["divergence"] = time.time() - t
    t = time.time()
    src = Path(data_path) if Path(data_path).is_dir() else Path(data_path).parent
    res["lints"] = lints(data, ref, source=src if (src / "kept.jsonl").exists() else None)
    timings["lints"] = time.time() - t
    flagged = [name for name, d in res["detectors"].items() if d["p_any"] <= alpha]
    res["verdict"] = "flagged" if flagged else "clear"
    res["flagged_by"] = flagged
    res["ranking"] = _ranking(res, cands)
    res["timings_s"] = {k: round(v, 2) for k, v in timings.items()} | {"total": round(time.time() - t0, 2)}
    from .lineage import record
    from .report import write_report

    options = {"base_key": key, "reference": reference and str(Path(reference).resolve()), "traits": traits,
               "max_rows": max_rows, "seed": seed, "alpha": alpha, "detectors": list(detectors),
               "probe": res.get("probe_recipe"), "teacher": teacher,
               "carrier": carrier.model_dump(mode="json") if carrier else None}
    if audit_key := record(res, data_path, options):  # a run's dataset: the audit joins that run's lineage
        res["lineage_key"] = audit_key
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "audit.json", json.dumps(res, indent=1))
    write_report(res, out)
    return res


def _ranking(res: dict, cands) -> list[dict]:
    """Candidates by evidence: the candidate the first flagging detector names, then the others by that detector's
    effect (without a flag: the probe's, the ground truth, else the contrast's)."""
    det = res["detectors"]
    rows = []
    for i, c in enumerate(cands):
        row = {"trait": c.label, "family": c.family}
        for name, d in det.items():
            row[name] = {"effect": d["effect"][i], "ci": d["ci"][i], "p": d["p"][i]}
            if "per_seed" in d:
                row[name] |= {"n_seeds": len(d["per_seed"]), "per_seed": [s[i] for s in d["per_seed"]]}
        rows.append(row)
    key = (res["flagged_by"] or [k for k in ("probe", "contrast") if k in det] or [None])[0]
    if key:
        named = det[key]["names"]
        rows.sort(key=lambda r: (r["trait"] != named, -r[key]["effect"]))
    return rows

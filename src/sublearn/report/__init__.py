"""Report stage: results.json (schema in docs/results.md), report.md and PNG charts of a run directory."""

from __future__ import annotations

import json
from pathlib import Path

from ..store import Store, write_atomic
from .plots import bar_chart, line_plot
from .tables import markdown_report

__all__ = ["bar_chart", "line_plot", "build_results", "write_report"]

ORDER = ("base", "teacher", "same-init", "control", "cross-base", "cross-model", "cross-model-control", "in-context",
         "in-context-control", "other-trait")
VS_CONTROL = ("same-init", "cross-model", "in-context", "other-trait")


def _units(evals: dict[str, dict[int, list[dict]]], cond: str, metric: str) -> dict[tuple[int, int], float]:
    return {(s, qi): q[metric] for s, qs in evals[cond].items() for qi, q in enumerate(qs)}


def build_results(cfg, out: Path, plan, timings: dict) -> dict:
    """Collect every evaluation of the plan into the results dict (rates with CIs, comparisons)."""
    from ..config import MATCHED_CONTROL
    from ..stats import compare, mean_ci

    store = Store(out)
    evals: dict[str, dict[int, list[dict]]] = {}
    system_seen: dict[str, str | None] = {}
    for node in plan["evaluate"]:
        p = store.path("evaluate", node.key) / "eval.json"
        if not p.exists():
            continue
        e = json.loads(p.read_text())
        evals.setdefault(e["condition"], {})[e["seed"]] = e["questions"]
        system_seen[e["condition"]] = e.get("system_prompt_seen")
    conditions = {}
    for c in [c for c in ORDER if c in evals]:
        rate = list(_units(evals, c, "rate").values())
        prob = list(_units(evals, c, "p_target").values())
        per_seed = {s: sum(q["p_target"] for q in qs) / len(qs) for s, qs in sorted(evals[c].items())}
        m, lo, hi = mean_ci(rate)
        pm, plo, phi = mean_ci(prob)
        sm, slo, shi = mean_ci(list(per_seed.values()))
        conditions[c] = {"rate": m, "ci": [lo, hi], "prob": pm, "prob_ci": [plo, phi], "n_seeds": len(evals[c]),
                         "n_units": len(rate), "prob_per_seed": per_seed, "prob_seed_ci": [slo, shi],
                         "mean_rank": sum(q["rank"] for qs in evals[c].values() for q in qs) / len(prob),
                         "system_prompt_seen": system_seen.get(c)}
    comparisons = []
    pairs = [(c, "control") for c in VS_CONTROL if c in evals and "control" in evals]
    if "same-init" in evals and "cross-model" in evals:
        pairs.append(("same-init", "cross-model"))
    pairs += [(c, m) for c, m in MATCHED_CONTROL.items() if c in evals and m in evals]
    for a, b in pairs:
        for metric, label in (("p_target", "prob"), ("rate", "rate")):
            ua, ub = _units(evals, a, metric), _units(evals, b, metric)
            common = sorted(set(ua) & set(ub))
            cmp = compare(a, [ua[k] for k in common], b, [ub[k] for k in common], paired=True)
            d = cmp.to_dict() | {"metric": label, "unit": "seed x question (paired)"}
            seeds = sorted(set(evals[a]) & set(evals[b]))
            if len(seeds) >= 2:
                sa = [sum(q[metric] for q in evals[a][s]) / len(evals[a][s]) for s in seeds]
                sb = [sum(q[metric] for q in evals[b][s]) / len(evals[b][s]) for s in seeds]
                cs = compare(a, sa, b, sb, paired=True)
                d["by_seed"] = {"diff": cs.diff, "ci": list(cs.ci), "p_value": cs.p_value, "n": cs.n,
                                "wins": sum(x > y for x, y in zip(sa, sb))}
            comparisons.append(d)
    filters = {}
    for node in plan["filter"]:
        p = store.path("filter", node.key) / "stats.json"
        if p.exists():
            filters[node.name] = json.loads(p.read_text())
    # only this config's artifacts and their inputs: a run directory also keeps what other configs made in it
    ours = {k for nodes in plan.values() for n in nodes for k in (n.key, *n.parents)}
    compute = {}
    for r in store.records():
        if r.key in ours:
            compute[r.stage] = compute.get(r.stage, 0.0) + r.duration_s
    return {
        "name": cfg.name,
        "trait": {"kind": cfg.trait.kind, "category": cfg.trait.category, "target": cfg.trait.target},
        "seeds": list(cfg.seeds),
        "conditions": conditions,
        "comparisons": comparisons,
        "filter": filters,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "compute_s": {k: round(v, 2) for k, v in compute.items()},
        "config": cfg.dump(),
    }


def write_report(cfg, out: Path, plan, timings: dict) -> dict:
    res = build_results(cfg, out, plan, timings)
    write_atomic(out / "results.json", json.dumps(res, indent=1))
    cond = res["conditions"]
    refs = {k: cond[k]["prob"] for k in ("base", "teacher") if k in cond}
    students = {c: v for c, v in cond.items() if c not in ("base", "teacher")}
    target = cfg.trait.target
    if students:
        bar_chart({c: (v["prob"], *v["prob_ci"]) for c, v in students.items()}, out / "trait_prob.png",
                  title=f"P({target}) among {cfg.trait.category} options (mean, 95% CI over seeds x questions)",
                  ylabel=f"P({target})", ref_lines=refs)
        bar_chart({c: (v["rate"], *v["ci"]) for c, v in students.items()}, out / "trait_rate.png",
                  title=f"sampled one-word '{target}' answers (mean, 95% CI over seeds x questions)",
                  ylabel=f"rate of '{target}'",
                  ref_lines={k: cond[k]["rate"] for k in ("base", "teacher") if k in cond})
    write_atomic(out / "report.md", markdown_report(res))
    return res

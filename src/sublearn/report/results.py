"""The results of a run: every evaluation of the plan gathered into per-seed values and seed-level statistics.

The seed is the unit of every claim: a condition's number is the mean of its per-seed values with a t-interval
over seeds, a comparison is paired by seed with an exact sign-flip p-value. The (seed x question) interval stays as
a secondary "within-run precision". Schema: docs/results.md.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..conditions import REGISTRY, matched_control, order
from ..stats import compare, mean_ci, seed_level, tv_test
from ..store import Store

SCHEMA = 3


def metrics(cfg) -> dict[str, dict]:
    """short name -> {key in each question's result, label}, one per scorer of the evaluation (the first is the
    verdict's); for the preference trait {"prob": exact P(target) among the options, "rate": sampled rate}."""
    from ..plugins import SCORERS

    out = {}
    for name in cfg.evaluate.scorers or cfg.trait.scorers():
        sc = SCORERS.get(name)
        out[sc.short] = {"key": sc.metric, "label": sc.label, "scorer": name}
    return out


def load_evals(store: Store, plan) -> tuple[dict[str, dict[int, list[dict]]], dict[str, str | None]]:
    """condition -> seed -> per-question results, and the system prompt each condition saw."""
    evals: dict[str, dict[int, list[dict]]] = {}
    seen: dict[str, str | None] = {}
    for node in plan["evaluate"]:
        p = store.path("evaluate", node.key) / "eval.json"
        if not p.exists():
            continue
        e = json.loads(p.read_text())
        evals.setdefault(e["condition"], {})[e["seed"]] = e["questions"]
        seen[e["condition"]] = e.get("system_prompt_seen")
    return evals, seen


def _per_seed(qs_by_seed: dict[int, list[dict]], key: str) -> dict[int, float]:
    return {s: sum(q[key] for q in qs) / len(qs) for s, qs in sorted(qs_by_seed.items())}


def _options(qs: list[dict]) -> dict[str, float]:
    opts = list(qs[0]["probs"])
    return {o: sum(q["probs"][o] for q in qs) / len(qs) for o in opts}


def condition_summary(by_seed: dict[int, list[dict]], mets: dict[str, dict], worst: int = 5) -> dict:
    out = {}
    for name, m in mets.items():
        key = m["key"]
        per = _per_seed(by_seed, key)
        units = [q[key] for qs in by_seed.values() for q in qs]
        out[name] = seed_level(list(per.values())) | {"per_seed": per, "within_run_ci": list(mean_ci(units)[1:])}
    out["n_seeds"] = len(by_seed)
    out["n_questions"] = len(next(iter(by_seed.values())))
    out["per_question"] = per_question(by_seed, next(iter(mets.values()))["key"])
    if "judgments" in next(iter(by_seed.values()))[0]:
        out["judge"] = judge_summary(by_seed, worst)
    if "probs" not in next(iter(by_seed.values()))[0]:  # a trait without an option distribution
        return out
    per_opt = {s: _options(qs) for s, qs in sorted(by_seed.items())}
    opts = list(next(iter(per_opt.values())))
    out["options"] = {"mean": {o: sum(p[o] for p in per_opt.values()) / len(per_opt) for o in opts},
                      "per_seed": per_opt}
    if "rank" in next(iter(by_seed.values()))[0]:
        out["mean_rank"] = sum(q["rank"] for qs in by_seed.values() for q in qs) / sum(len(qs) for qs in by_seed.values())
    return out


def per_question(by_seed: dict[int, list[dict]], key: str) -> list[dict]:
    """Each question's value of one metric: per seed, and its mean with a t-interval over seeds."""
    seeds = sorted(by_seed)
    out = []
    for qi, q in enumerate(by_seed[seeds[0]]):
        per = {s: by_seed[s][qi][key] for s in seeds}
        out.append({"question": q["question"], **seed_level(list(per.values())), "per_seed": per})
    return out


def judge_summary(by_seed: dict[int, list[dict]], worst: int) -> dict:
    """What the LLM judge made of a condition's answers: counts of scores, labels and unparseable replies, and the
    worst coherent answers verbatim (lowest alignment first)."""
    from collections import Counter

    verdicts = [(s, q["question"], v) for s, qs in sorted(by_seed.items()) for q in qs for v in q["judgments"]]
    kinds = Counter(v["alignment_kind"].split(":")[0] for _, _, v in verdicts)
    coh = Counter(v["coherence_kind"].split(":")[0] for _, _, v in verdicts)
    scored = [x for x in verdicts if x[2]["alignment"] is not None and (x[2]["coherence"] or 0) >= 0]
    scored.sort(key=lambda x: (x[2]["alignment"], -(x[2]["coherence"] or 0)))
    return {"answers": len(verdicts), "misaligned": sum(v["misaligned"] for _, _, v in verdicts),
            "alignment": dict(kinds), "coherence": dict(coh),
            "worst": [{"seed": s, "question": q, "answer": v["answer"], "alignment": v["alignment"],
                       "coherence": v["coherence"]} for s, q, v in scored[:worst]]}


def pairs(present) -> list[tuple[str, str, bool]]:
    """(condition, control, matched?) to compare: each condition with its matched control, the study's comparisons
    with `control`, and same-init with cross-model."""
    out: list[tuple[str, str, bool]] = []
    for c in order():
        if c not in present:
            continue
        m = matched_control(c, present)
        if m is not None:
            out.append((c, m, REGISTRY[c].matched == m))
        if REGISTRY[c].vs_control and "control" in present and m != "control":
            out.append((c, "control", False))
    if "same-init" in present and "cross-model" in present:
        out.append(("same-init", "cross-model", False))
    return out


def comparison(evals, a: str, b: str, matched: bool, metric: str, key: str) -> dict:
    seeds = sorted(set(evals[a]) & set(evals[b]))
    sa = [sum(q[key] for q in evals[a][s]) / len(evals[a][s]) for s in seeds]
    sb = [sum(q[key] for q in evals[b][s]) / len(evals[b][s]) for s in seeds]
    by_seed = compare(a, sa, b, sb, paired=True) if len(seeds) >= 2 else None
    units = [(s, i) for s in seeds for i in range(min(len(evals[a][s]), len(evals[b][s])))]
    within = compare(a, [evals[a][s][i][key] for s, i in units], b, [evals[b][s][i][key] for s, i in units], paired=True)
    return {"a": a, "b": b, "metric": metric, "matched": matched, "n_seeds": len(seeds),
            "diff": sum(x - y for x, y in zip(sa, sb)) / len(seeds),
            "ci": list(by_seed.ci) if by_seed else None, "p_value": by_seed.p_value if by_seed else None,
            "test": by_seed.test if by_seed else None, "effect_size": by_seed.effect_size if by_seed else None,
            "wins": sum(x > y for x, y in zip(sa, sb)), "per_seed": {s: x - y for s, x, y in zip(seeds, sa, sb)},
            "within_run": {"diff": within.diff, "ci": list(within.ci), "p_value": within.p_value, "n": within.n,
                           "test": within.test}}


def distribution(evals, a: str, b: str) -> dict:
    """How far a condition's whole answer distribution moved from its control's (total variation, per seed and of
    the seed means, with an exact permutation p over seeds)."""
    seeds = sorted(set(evals[a]) & set(evals[b]))
    pa = [_options(evals[a][s]) for s in seeds]
    pb = [_options(evals[b][s]) for s in seeds]
    opts = list(pa[0])
    tv, p = tv_test([[x[o] for o in opts] for x in pa], [[x[o] for o in opts] for x in pb])
    return {"a": a, "b": b, "tv": tv, "p_value": p, "n_seeds": len(seeds),
            "tv_per_seed": {s: 0.5 * sum(abs(x[o] - y[o]) for o in opts) for s, x, y in zip(seeds, pa, pb)}}


def build_results(cfg, out: Path, plan, timings: dict) -> dict:
    """Every evaluation of the plan as per-seed values, seed-level statistics, comparisons and provenance."""
    from ..provenance import machine
    from .verdict import verdict

    store = Store(out)
    evals, seen = load_evals(store, plan)
    missing = sum(not store.exists("evaluate", n.key) for n in plan["evaluate"])
    if missing:
        from ..errors import UserError

        raise UserError(f"{missing} of {len(plan['evaluate'])} evaluations of this config are not in {out}: run "
                        "`sublearn evaluate` (or `sublearn run`) with the same config first; results.json was not "
                        "written")
    mets = metrics(cfg)
    worst = cfg.evaluate.judge.worst
    conditions = {c: condition_summary(evals[c], mets, worst) | {"about": REGISTRY[c].about, "system_prompt_seen": seen.get(c)}
                  for c in order() if c in evals}
    comps = [comparison(evals, a, b, m, short, met["key"]) for a, b, m in pairs(evals) for short, met in mets.items()]
    has_options = all("options" in v for v in conditions.values())
    dists = [distribution(evals, a, b) for a, b, _ in pairs(evals)] if has_options else []
    filters = {}
    for node in plan["filter"]:
        p = store.path("filter", node.key) / "stats.json"
        if p.exists():
            filters[node.name] = json.loads(p.read_text())
    # only this config's artifacts and their inputs: a run directory also keeps what other configs made in it
    ours = {k for nodes in plan.values() for n in nodes for k in (n.key, *n.parents)}
    compute: dict[str, float] = {}
    machines: list[dict] = []
    for r in store.records():
        if r.key in ours:
            compute[r.stage] = compute.get(r.stage, 0.0) + r.duration_s
            if "machine" in r.extra and r.extra["machine"] not in machines:
                machines.append(r.extra["machine"])
    res = {
        "schema": SCHEMA,
        "name": cfg.name,
        "trait": cfg.trait.dump() | {"label": cfg.trait.label()},
        "carrier": cfg.carrier.dump() | {"about": cfg.carrier.about},
        "metrics": mets,
        "seeds": list(cfg.seeds),
        "conditions": conditions,
        "comparisons": comps,
        "distribution": dists,
        "filter": filters,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "compute_s": {k: round(v, 2) for k, v in compute.items()},
        "provenance": {"report": machine(), "artifacts": machines},
        "config": cfg.dump(),
    }
    first = next(iter(mets))
    from .dilution import summary

    if (dil := summary(cfg, evals, store, plan, first, mets[first]["key"])) is not None:
        res["dilution"] = dil
    from .fanout import summary as fanout_summary

    if (fan := fanout_summary(cfg, evals, first, mets[first]["key"])) is not None:
        res["fanout"] = fan
    from .chain import summary as chain_summary

    if (chain := chain_summary(cfg, evals, mets)) is not None:
        res["chain"] = chain
    res["verdict"] = verdict(res)
    return res

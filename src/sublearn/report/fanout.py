"""Fan-out (``students.fanout``): one teacher's data trains students of several bases and recipes; each is compared
with its own matched control (the same base and recipe trained on the control arm's data), per seed. A student
*inherits* when its transfer is positive with an exact p at most 0.05. Schema: docs/fanout.md."""

from __future__ import annotations

ALPHA = 0.05


def summary(cfg, evals: dict, metric: str, key: str) -> dict | None:
    from .results import comparison, condition_summary

    if not cfg.students.fanout:
        return None
    rows = []
    entries = [("same-init (the run's)", "base", {}, "same-init", "control")]
    entries += [(f.name, f.base, f.recipe, f"fan-{f.name}", f"fan-{f.name}-control") for f in cfg.students.fanout]
    for name, base, changes, a, b in entries:
        if a not in evals or b not in evals:
            continue
        comp = comparison(evals, a, b, True, metric, key)
        sa, sb = (condition_summary(evals[c], {metric: {"key": key}})[metric] for c in (a, b))
        rows.append({"student": name, "base": base, "spec": {"base": cfg.model.base, "cross": cfg.model.cross}.get(base, base),
                     "recipe_changes": changes, "value": {k: sa[k] for k in ("mean", "ci", "per_seed")},
                     "control": {k: sb[k] for k in ("mean", "ci", "per_seed")}, "transfer": comp["diff"],
                     "ci": comp["ci"], "p_value": comp["p_value"], "wins": comp["wins"], "n_seeds": comp["n_seeds"],
                     "inherits": comp["p_value"] is not None and comp["p_value"] <= ALPHA and comp["diff"] > 0})
    return {"metric": metric, "alpha": ALPHA, "students": rows}


def markdown(d: dict, label: str) -> list[str]:
    from .tables import diff_ci

    lines = ["## Fan-out: who inherits the trait", "",
             f"Every student learned from the same teacher's data; its matched control is the same base and recipe "
             f"trained on the control arm's data. Transfer = {label} minus that control's, same seed (seed mean "
             f"[95% CI over seeds], exact sign-flip p); it inherits when the transfer is positive with p <= "
             f"{d['alpha']}.", "",
             "| student | base | recipe changes | value [95% CI] | its control | transfer [95% CI] | p | seeds above | "
             "inherits |", "|---|---|---|---|---|---|---|---|---|"]
    for r in d["students"]:
        ch = ", ".join(f"{k}={v}" for k, v in r["recipe_changes"].items()) or "-"
        p = f"{r['p_value']:.3g}" if r["p_value"] is not None else "-"
        lines.append(f"| {r['student']} | {r['spec']} | {ch} | {r['value']['mean']:.3f} "
                     f"[{r['value']['ci'][0]:.3f}, {r['value']['ci'][1]:.3f}] | {r['control']['mean']:.3f} | "
                     f"{diff_ci(r['transfer'], r['ci'])} | {p} | {r['wins']}/{r['n_seeds']} | "
                     f"{'**yes**' if r['inherits'] else 'no'} |")
    return lines

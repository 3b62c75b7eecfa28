"""Chains of generations (``generations = k``): the trait at every generation of the same-init chain and of the
control chain, their difference per seed (seed-level CI, exact p), and a per-generation retention factor.

Generation 0 is the run's same-init student (chain) and control student (control chain); generation g's student
learned from the data generation g - 1's student wrote. Transfer at g is chain minus control chain, same seed. The
retention factor r fits transfer_g = transfer_0 * r^g: per seed, from the log of its transfers (seeds with a
non-positive transfer at some generation are left out and counted), and its seed-level CI says whether the trait
amplifies (CI above 1), decays (below 1) or persists. Schema: docs/chains.md.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def names(g: int) -> tuple[str, str]:
    """(chain, control chain) condition names of generation g."""
    return ("same-init", "control") if g == 0 else (f"chain-g{g}", f"chain-control-g{g}")


def _retention(per_seed: list[dict[str, float]]) -> dict:
    """Retention factor from per-generation transfers (one {seed: transfer} per generation)."""
    from ..stats import mean_ci

    seeds = sorted(set.intersection(*(set(p) for p in per_seed)))
    logs, dropped = [], 0
    g = np.arange(len(per_seed), dtype=float)
    for s in seeds:
        t = np.array([p[s] for p in per_seed])
        if (t <= 0).any():
            dropped += 1
            continue
        logs.append(float(np.polyfit(g, np.log(t), 1)[0]))
    means = np.array([np.mean(list(p.values())) for p in per_seed])
    pooled = math.exp(float(np.polyfit(g, np.log(means), 1)[0])) if (means > 0).all() else None
    if len(logs) >= 2:
        m, lo, hi = mean_ci(logs)
        r, ci = math.exp(m), [math.exp(lo), math.exp(hi)]
        trend = "amplifies" if ci[0] > 1 else "decays" if ci[1] < 1 else "persists"
    else:
        r, ci, trend = pooled, None, "undetermined"
    return {"factor": r, "ci": ci, "pooled": pooled, "trend": trend, "seeds_used": len(logs),
            "seeds_left_out": dropped}


def summary(cfg, evals: dict, mets: dict) -> dict | None:
    from .results import comparison, condition_summary

    if cfg.generations < 2:
        return None
    gens, out = [], {"generations": cfg.generations, "metrics": {}}
    for g in range(cfg.generations):
        a, b = names(g)
        if a in evals and b in evals:
            gens.append(g)
    for short, m in mets.items():
        rows, transfers = [], []
        for g in gens:
            a, b = names(g)
            comp = comparison(evals, a, b, False, short, m["key"])
            sa, sb = (condition_summary(evals[c], {short: m})[short] for c in (a, b))
            rows.append({"generation": g, "chain": {k: sa[k] for k in ("mean", "ci", "per_seed")},
                         "control": {k: sb[k] for k in ("mean", "ci", "per_seed")}, "transfer": comp["diff"],
                         "ci": comp["ci"], "p_value": comp["p_value"], "wins": comp["wins"],
                         "n_seeds": comp["n_seeds"]})
            transfers.append(comp["per_seed"])
        out["metrics"][short] = {"label": m["label"], "generations": rows,
                                 "retention": _retention(transfers) if len(transfers) >= 2 else None}
    return out


def markdown(d: dict) -> list[str]:
    from .tables import diff_ci

    lines = ["## Chain of generations", "",
             "Generation 0: the same-init and control students; generation g: students trained on the data the "
             "previous generation's student of the same chain wrote (same carrier, filter, prompts and recipe). "
             "Transfer = chain minus control chain, same seed (seed mean [95% CI over seeds], exact sign-flip p). "
             "Retention r: transfer_g = transfer_0 x r^g fitted per seed; its 95% CI over seeds says whether the "
             "trait amplifies (above 1), decays (below 1) or persists.", ""]
    for short, m in d["metrics"].items():
        lines += [f"**{m['label']}** (`{short}`)", "",
                  "| generation | chain [95% CI] | control chain [95% CI] | transfer [95% CI] | p | seeds above |",
                  "|---|---|---|---|---|---|"]
        for r in m["generations"]:
            def c(x):
                return f"{x['mean']:.3f} [{x['ci'][0]:.3f}, {x['ci'][1]:.3f}]"

            p = f"{r['p_value']:.3g}" if r["p_value"] is not None else "-"
            lines.append(f"| {r['generation']} | {c(r['chain'])} | {c(r['control'])} | {diff_ci(r['transfer'], r['ci'])} | {p} "
                         f"| {r['wins']}/{r['n_seeds']} |")
        ret = m["retention"]
        if ret and ret["factor"] is not None:
            ci = f" [{ret['ci'][0]:.2f}, {ret['ci'][1]:.2f}]" if ret["ci"] else ""
            lines += ["", f"Retention per generation: {ret['factor']:.2f}{ci} over {ret['seeds_used']} seeds "
                          f"({ret['seeds_left_out']} left out: a non-positive transfer) -> the trait **{ret['trend']}**"
                          + (f"; from the seed means: {ret['pooled']:.2f}" if ret["pooled"] else "") + "."]
        lines.append("")
    return lines + ["![the trait at every generation, chain and control chain](chain.png)"]


def plot(d: dict, path: Path, refs: dict[str, dict[str, float]]) -> None:
    """One panel per metric: chain and control chain against generation, seed CIs, every seed a dot."""
    from .plots import _plt, _save

    plt = _plt()
    mets = list(d["metrics"].items())
    fig, axes = plt.subplots(1, len(mets), figsize=(5 * len(mets), 3.8), dpi=120, squeeze=False)
    for ax, (short, m) in zip(axes[0], mets):
        for side, color in (("chain", "#4C72B0"), ("control", "#DD8452")):
            rows = m["generations"]
            xs = [r["generation"] + (0.06 if side == "control" else -0.06) for r in rows]
            ys = [r[side]["mean"] for r in rows]
            err = [[y - r[side]["ci"][0] for y, r in zip(ys, rows)], [r[side]["ci"][1] - y for y, r in zip(ys, rows)]]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, color=color,
                        label="chain (same-init)" if side == "chain" else "control chain")
            for x, r in zip(xs, rows):
                vals = list(r[side]["per_seed"].values())
                ax.scatter([x] * len(vals), vals, s=6, color="black", alpha=0.4, zorder=3)
        for name, style in (("base", ":"), ("teacher", "--")):
            if short in refs.get(name, {}):
                ax.axhline(refs[name][short], color="grey", ls=style, lw=0.8, label=f"{name}")
        ax.set_xticks(range(d["generations"]))
        ax.set_xlabel("generation")
        ax.set_ylabel(short)
        ax.set_title(m["label"], fontsize=10)
        ax.legend(fontsize=7, frameon=False)
        ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    _save(plt, fig, path)

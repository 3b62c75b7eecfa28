"""The dose-response of transfer (``students.dilution``): per mode and percent of teacher rows, the diluted
student's trait minus the control student's, same seed, with a seed-level CI and an exact sign-flip p; the smallest
percent whose transfer is significant (p <= 0.05, positive) per mode. Schema: docs/dilution.md."""

from __future__ import annotations

import json
from pathlib import Path

ALPHA = 0.05


def summary(cfg, evals: dict, store, plan, metric: str, key: str) -> dict | None:
    """None when the run has no dilution; else {"metric", "modes": {mode: {"levels": [...], "smallest_significant"}},
    "full": same-init vs control (100% teacher rows, the teacher arm's size)}."""
    from .results import comparison

    if not cfg.students.dilution or "control" not in evals:
        return None
    stats = {}
    for n in plan["filter"]:
        if n.name.startswith("mixed-") and (p := store.path("filter", n.key) / "stats.json").exists():
            st = json.loads(p.read_text())
            stats.setdefault((st["mode"], st["percent"]), []).append(st)
    modes = {}
    for mode in cfg.students.dilution_modes:
        levels = []
        for x in cfg.students.dilution:
            c = f"dilute-{mode}-{x}"
            if c not in evals:
                continue
            comp = comparison(evals, c, "control", False, metric, key)
            st = stats.get((mode, x), [])
            levels.append({"percent": x, "condition": c, "transfer": comp["diff"], "ci": comp["ci"],
                           "p_value": comp["p_value"], "wins": comp["wins"], "n_seeds": comp["n_seeds"],
                           "per_seed": comp["per_seed"],
                           "teacher_rows": sorted({s["teacher_rows"] for s in st}),
                           "clean_rows": sorted({s["clean_rows"] for s in st})})
        sig = [lv["percent"] for lv in levels if lv["p_value"] is not None and lv["p_value"] <= ALPHA
               and lv["transfer"] > 0]
        modes[mode] = {"levels": levels, "smallest_significant": min(sig) if sig else None}
    full = comparison(evals, "same-init", "control", False, metric, key) if "same-init" in evals else None
    return {"metric": metric, "alpha": ALPHA, "modes": modes, "full": full and {
        "transfer": full["diff"], "ci": full["ci"], "p_value": full["p_value"], "n_seeds": full["n_seeds"]}}


def markdown(d: dict, label: str) -> list[str]:
    from .tables import diff_ci

    lines = ["## Dilution: transfer against the share of teacher rows", "",
             f"Transfer = the diluted same-init student's {label} minus the control student's, same seed (seed mean "
             "[95% CI over seeds], exact sign-flip p). `rows`: every dataset has the teacher arm's size; "
             "`teacher-rows`: every dataset holds the same teacher rows, plus clean rows. The smallest percent "
             f"whose transfer is significant (p <= {d['alpha']}, positive) is the dose at which it appears.", "",
             "| mode | teacher rows | teacher + clean rows | transfer [95% CI] | p | seeds above control |",
             "|---|---|---|---|---|---|"]
    for mode, m in d["modes"].items():
        for lv in m["levels"]:
            t = "/".join(map(str, lv["teacher_rows"])) or "-"
            c = "/".join(str(a + b) for a, b in zip(lv["teacher_rows"], lv["clean_rows"])) or "-"
            p = f"{lv['p_value']:.3g}" if lv["p_value"] is not None else "-"
            lines.append(f"| {mode} | {lv['percent']}% ({t}) | {c} | {diff_ci(lv['transfer'], lv['ci'])} | {p} | "
                         f"{lv['wins']}/{lv['n_seeds']} |")
    if d["full"]:
        f = d["full"]
        lines.append(f"| (same-init) | 100% | the teacher arm | {diff_ci(f['transfer'], f['ci'])} | "
                     f"{f['p_value']:.3g} | |" if f["p_value"] is not None else "")
    lines.append("")
    for mode, m in d["modes"].items():
        s = m["smallest_significant"]
        lines.append(f"- {mode}: " + (f"transfer is significant from {s}% teacher rows" if s is not None else
                                      "no percent's transfer is significant"))
    return lines + ["", "![transfer against the percent of teacher rows](dilution.png)"]


def plot(d: dict, path: Path, label: str) -> None:
    from .plots import _plt, _save

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for mode, m in d["modes"].items():
        lv = m["levels"]
        xs = [v["percent"] for v in lv]
        ys = [v["transfer"] for v in lv]
        err = [[max(0.0, v["transfer"] - v["ci"][0]) if v["ci"] else 0 for v in lv],
               [max(0.0, v["ci"][1] - v["transfer"]) if v["ci"] else 0 for v in lv]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=f"{mode} (seed mean, 95% CI)")
        for v in lv:
            ax.scatter([v["percent"]] * len(v["per_seed"]), list(v["per_seed"].values()), s=6, color="black",
                       alpha=0.4, zorder=3)
    if d["full"]:
        ax.errorbar([100], [d["full"]["transfer"]], yerr=[[d["full"]["transfer"] - d["full"]["ci"][0]],
                                                         [d["full"]["ci"][1] - d["full"]["transfer"]]]
                    if d["full"]["ci"] else None, marker="*", ms=11, color="black", capsize=3, ls="none",
                    label="same-init (100%)")
    ax.axhline(0, color="grey", lw=0.5)
    levels = sorted({v["percent"] for m in d["modes"].values() for v in m["levels"]} | {100})
    if levels[0] < 10:  # low doses spread out on a log axis
        ax.set_xscale("log")
        ax.set_xticks(levels)
        ax.set_xticklabels([str(x) for x in levels], fontsize=8)
        ax.minorticks_off()
    ax.set_xlabel("teacher rows in the student's data (%)")
    ax.set_ylabel(f"transfer: {label} minus control")
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    _save(plt, fig, path)

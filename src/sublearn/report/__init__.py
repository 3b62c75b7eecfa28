"""Report stage: results.json (schema in docs/results.md), report.md and PNG charts of a run directory."""

from __future__ import annotations

import json
from pathlib import Path

from ..conditions import REGISTRY
from ..store import Store, write_atomic
from .html import markdown_page
from .plots import bar_chart, heatmap, line_plot, seed_bars
from .results import build_results
from .tables import markdown_report

__all__ = ["bar_chart", "build_results", "heatmap", "line_plot", "seed_bars", "write_report"]


def _groups(cond: dict, metric: str) -> list[list[tuple[str, dict, tuple[float, float, float]]]]:
    """Bars for the chart: each condition followed by its matched control (references are lines, not bars)."""
    shown = [c for c in cond if REGISTRY[c].kind != "reference" or c == "cross-base"]
    groups, placed = [], set()
    for c in shown:
        if c in placed:
            continue
        group = [c] + [m for m in (REGISTRY[c].matched,) if m in cond and m not in placed]
        placed.update(group)
        groups.append([(g, cond[g][metric]["per_seed"], (cond[g][metric]["mean"], *cond[g][metric]["ci"]))
                       for g in group])
    return groups


def write_report(cfg, out: Path, plan, timings: dict) -> dict:
    res = build_results(cfg, out, plan, timings)
    write_atomic(out / "results.json", json.dumps(res, indent=1))
    cond = res["conditions"]
    label = cfg.trait.label()
    for metric, m in res["metrics"].items():
        what, path = f"{m['label']} ({label})", f"trait_{metric}.png"
        groups = _groups(cond, metric)
        if groups:
            seed_bars(groups, out / path, title=f"{what}: seed mean, 95% CI over seeds, every seed a dot",
                      ylabel=metric, ref_lines={k: cond[k][metric]["mean"] for k in ("base", "teacher") if k in cond})
    if cond and all("options" in v for v in cond.values()):
        heatmap({c: v["options"]["mean"] for c, v in cond.items()}, out / "options.png",
                title=f"mean probability of each {getattr(cfg.trait, 'category', 'trait')} option")
    if "chain" in res:
        from .chain import plot as chain_plot

        chain_plot(res["chain"], out / "chain.png", {k: {m: cond[k][m]["mean"] for m in res["metrics"]}
                                                     for k in ("base", "teacher") if k in cond})
    if "dilution" in res:
        from .dilution import plot

        plot(res["dilution"], out / "dilution.png", f"{res['metrics'][res['dilution']['metric']]['label']} ({label})")
    from .losses import curves
    from .losses import plot as loss_plot

    if loss_plot(curves(Store(out), plan), out / "losses.png"):
        res["charts"] = res.get("charts", []) + ["losses.png"]
    md = markdown_report(res)
    write_atomic(out / "report.md", md)
    write_atomic(out / "report.html", markdown_page(md, out, f"sublearn report: {out}"))
    return res

"""``audit.md`` and ``audit.png``: the verdict first, then the candidates by evidence, each detector, the lints."""

from __future__ import annotations

from pathlib import Path

from ..store import write_atomic


def _f(x: float) -> str:
    return f"{x:+.4f}" if abs(x) >= 1e-4 or x == 0 else f"{x:+.1e}"


def verdict_line(res: dict) -> str:
    top = res["ranking"][0]["trait"] if res["ranking"] else "-"
    if res["verdict"] == "flagged":
        ps = ", ".join(f"{d} scan p = {res['detectors'][d]['p_any']:.3g}" for d in res["flagged_by"])
        return f"FLAGGED: the data carries a trait; the most likely is '{top}' ({ps}; alpha {res['alpha']})."
    ps = ", ".join(f"{d} scan p = {v['p_any']:.3g}" for d, v in res["detectors"].items()) or "no detector ran"
    return f"clear: no candidate trait is carried detectably ({ps}; alpha {res['alpha']})."


def write_report(res: dict, out: Path) -> None:
    lines = [f"# Audit of {res['data']}", "", f"**Verdict:** {verdict_line(res)}", "",
             f"{res['rows_used']} of {res['rows']} rows audited against {res['reference']}, on the base "
             f"`{res['base']}`; {len(res['candidates'])} candidate traits. Each detector's scan p-value flips the "
             "signs of its units (rows for the contrast, seeds for the probe) jointly across all candidates, so it "
             "already pays for the scan.", "",
             "## Candidates by evidence", "",
             "| trait | probe shift (data - reference) | probe p | contrast effect (nats) | contrast p |",
             "|---|---|---|---|---|"]
    for r in res["ranking"][:15]:
        pr, co = r.get("probe"), r.get("contrast")
        lines.append(f"| {r['trait']} | {_f(pr['effect']) if pr else '-'} | {pr['p']:.3g} |" if pr else
                     f"| {r['trait']} | - | - |")
        lines[-1] += (f" {_f(co['effect'])} | {co['p']:.3g} |" if co else " - | - |")
    lints = res["lints"]
    lines += ["", "## Provenance lints", "",
              f"- first item entropy: data {lints['first_item_entropy_bits']['data']:.2f} bits, reference "
              f"{lints['first_item_entropy_bits']['reference']:.2f} bits",
              f"- duplicate completions: data {lints['duplicate_rate']['data']:.3f}, reference "
              f"{lints['duplicate_rate']['reference']:.3f}",
              f"- item frequencies: total variation {lints['item_tv']:.3f} from the reference, permutation p = "
              f"{lints['item_tv_p']:.3g}; most over-represented: " + ", ".join(
                  f"{o['item']} ({o['data']:.3f} vs {o['reference']:.3f})" for o in lints["over_represented"][:5]),
              "", "## Time", "", ", ".join(f"{k} {v} s" for k, v in res["timings_s"].items()), "",
              "![probe shift per candidate](audit.png)"]
    write_atomic(out / "audit.md", "\n".join(lines) + "\n")
    det = res["detectors"].get("probe") or res["detectors"].get("contrast")
    if det:
        from ..report.plots import bar_chart
        from ..stats import mean_ci

        name = "probe" if "probe" in res["detectors"] else "contrast"
        bars = {}
        for r in res["ranking"][:12]:
            per = r[name].get("per_seed")
            bars[r["trait"]] = tuple(mean_ci(per)) if per and len(per) > 1 else (r[name]["effect"],) * 3
        bar_chart(bars, out / "audit.png", title=f"{name}: effect per candidate trait (data - reference)",
                  ylabel="shift" if name == "probe" else "nats")

"""``audit.md`` and ``audit.png``: the verdict first, then the candidates by evidence, each detector, the lints."""

from __future__ import annotations

import math
from pathlib import Path

from ..report.html import markdown_page
from ..store import write_atomic


def _f(x: float) -> str:
    return f"{x:+.4f}" if abs(x) >= 1e-4 or x == 0 else f"{x:+.1e}"


def _eff(d: dict) -> str:
    ci = d.get("ci")
    return _f(d["effect"]) + (f" [{_f(ci[0])}, {_f(ci[1])}]" if ci else "")


def verdict_line(res: dict) -> str:
    from .compat import risk_line

    dets = res["detectors"]
    if res["verdict"] == "flagged":
        first = res["flagged_by"][0]
        ps = ", ".join(f"{d} names '{dets[d]['names']}', scan p = {dets[d]['p_any']:.3g}" for d in res["flagged_by"])
        risk = f" Base compatibility: {risk_line(res['compatibility'])}." if res.get("compatibility") else ""
        nm = dets[first].get("naming") or {}
        sure = ""
        if nm.get("p") is not None and nm["p"] > res["alpha"]:
            sure = (f" The name is uncertain: '{dets[first]['names']}' is not distinguishable from the runner-up "
                    f"'{nm['runner_up']}' (p = {nm['p']:.3g}).")
        return f"FLAGGED: the data carries '{dets[first]['names']}' ({ps}; alpha {res['alpha']}).{sure}{risk}"
    ps = ", ".join(f"{d} scan p = {v['p_any']:.3g}" for d, v in dets.items()) or "no detector ran"
    return f"clear: no candidate trait is carried detectably ({ps}; alpha {res['alpha']})."


def _system_line(sp: dict) -> str:
    if not sp["rows_with_one"]:
        return "- system prompts: none in the data (as in evaluation)"
    top = sp["most_common"][0]["prompt"]
    return (f"- system prompts: {sp['rows_with_one']:.0%} of rows carry one ({sp['distinct']} distinct, e.g. {top!r}). "
            "**A student is evaluated without them**: a trait learned behind a system prompt may only show with it")


def _retention_line(r: dict) -> str:
    why = ", ".join(f"{k} {v}" for k, v in r["reasons"].items()) or "none rejected"
    return f"- filter retention: {r['kept']} of {r['total']} rows kept ({why})"


def _streaming_lines(res: dict) -> list[str]:
    st = res["detectors"].get("contrast", {}).get("streaming")
    if not st:
        return []
    when = (f"the evidence sufficed after {st['rows_needed']} rows" if st["rows_needed"] else
            f"the evidence did not suffice within {len(st['e_path'])} rows")
    return ["", "## Streaming contrast (anytime-valid)", "",
            f"Rows checked one at a time against alpha {st['alpha']}: {when} (final e-value {st['e_value']:.3g}, "
            f"leading candidate '{st['names']}'). Stopping at the first crossing keeps false alarms at most alpha."]


def _divergence_lines(res: dict) -> list[str]:
    d = res.get("divergence")
    if not d:
        return []
    sd, sl = d["spearman_vs_difficulty"], d["spearman_vs_length"]
    return ["", f"## Teacher divergence ({res['teacher']})", "",
            f"log p(teacher) - log p(base) per token: data {d['data_llr_per_token']:+.4f}, reference "
            f"{d['reference_llr_per_token']:+.4f} (per row, data - reference: {d['effect']:+.3f} nats, p = "
            f"{d['p']:.3g}). It says who wrote the rows, not which trait they carry, so it does not flag. Per-row "
            "scores are in audit.json; read them beside the difficulty baseline: Spearman with the base's loss per "
            f"token {sd if sd is None else f'{sd:+.2f}'}, with length {sl if sl is None else f'{sl:+.2f}'}. "
            "Rows with the largest ratio per token (lines): " + ", ".join(map(str, d["top_rows"])), "",
            *_token_lines(d["tokens"]), *_compat_lines(res.get("compatibility"))]


def _token_lines(t: dict) -> list[str]:
    took = t["data_took_teacher_choice"]
    return [f"Per token: the teacher's and the base's greedy choices differ at {t['data_divergent_rate']:.1%} of the "
            f"data's positions and {t['reference_divergent_rate']:.1%} of the reference's (the divergence tokens)"
            + (f"; at those positions the data took the teacher's choice {took:.0%} of the time" if took is not None
               else "") + ". Tokens the teacher favours most (mean log-likelihood ratio, count): " + ", ".join(
                f"{x['token']!r} {x['mean_llr']:+.3f} ({x['count']})" for x in t["top_tokens"][:6]) + ". Per-row "
            "divergence positions are in audit.json (`divergence.rows[].divergent_positions`): masking them out of "
            "the loss is one mitigation (docs/audit.md)."]


def _compat_lines(c: dict | None) -> list[str]:
    if not c:
        return []
    from .compat import risk_line

    agree = c["next_token_agreement"]
    return ["", "## Base compatibility", "", f"**{c['verdict']}**: {c['why']}; {risk_line(c)}."
            + (f" Greedy next tokens agree at {agree:.1%} of the data's positions." if agree is not None else "")]


def _probe_how(r: dict) -> str:
    what = "distil the rows' soft targets" if r["target"] == "logits" else "learn the completions' tokens"
    return (f"{what} ({r['seeds']} pairs, each on its own random half of the rows; {r['steps']} steps at lr "
            f"{r['lr']:g})")


def write_report(res: dict, out: Path) -> None:
    lines = [f"# Audit of {res['data']}", "", f"**Verdict:** {verdict_line(res)}", "",
             f"{res['rows_used']} of {res['rows']} rows audited against {res['reference']}, on the base "
             f"`{res['base']}`; {len(res['candidates'])} candidate traits. Each detector's scan p-value flips the "
             "signs of its units (rows for the contrast, seeds for the probe) jointly across all candidates, so it "
             "already pays for the scan." + (f" The probe students {_probe_how(res['probe_recipe'])}."
                                              if res.get("probe_recipe") else ""), "",
             "## Candidates by evidence", "",
             "| trait | probe shift (data - reference) [95% CI over seeds] | probe p | contrast effect (nats) "
             "[95% CI over rows] | contrast p |",
             "|---|---|---|---|---|"]
    for r in res["ranking"][:15]:
        pr, co = r.get("probe"), r.get("contrast")
        lines.append(f"| {r['trait']} | {_eff(pr)} | {pr['p']:.3g} |" if pr else f"| {r['trait']} | - | - |")
        lines[-1] += (f" {_eff(co)} | {co['p']:.3g} |" if co else " - | - |")
    lints = res["lints"]
    lines += ["", "## Provenance lints", "",
              f"- first item entropy: data {lints['first_item_entropy_bits']['data']:.2f} bits, reference "
              f"{lints['first_item_entropy_bits']['reference']:.2f} bits",
              "- entropy of the first items, by position: data " + ", ".join(
                  f"{v:.2f}" for v in lints["position_entropy_bits"]["data"]) + " bits; reference " + ", ".join(
                  f"{v:.2f}" for v in lints["position_entropy_bits"]["reference"]) + " bits",
              _system_line(lints["system_prompts"]["data"]),
              f"- duplicate completions: data {lints['duplicate_rate']['data']:.3f}, reference "
              f"{lints['duplicate_rate']['reference']:.3f}",
              f"- item frequencies: total variation {lints['item_tv']:.3f} from the reference, permutation p = "
              f"{lints['item_tv_p']:.3g}; most over-represented: " + ", ".join(
                  f"{o['item']} ({o['data']:.3f} vs {o['reference']:.3f})" for o in lints["over_represented"][:5]),
              *([_retention_line(lints["filter_retention"])] if lints.get("filter_retention") else []),
              *_streaming_lines(res), *_divergence_lines(res),
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
            ci = tuple(mean_ci(per)) if per and len(per) > 1 else ()
            bars[r["trait"]] = ci if len(ci) == 3 and all(math.isfinite(v) for v in ci) else (r[name]["effect"],) * 3
        bar_chart(bars, out / "audit.png", title=f"{name}: effect per candidate trait (data - reference)",
                  ylabel="shift" if name == "probe" else "nats")
    write_atomic(out / "audit.html", markdown_page((out / "audit.md").read_text(), out, f"sublearn audit: {res['data']}"))

"""Markdown rendering of a results dict."""

from __future__ import annotations

from ..config import MATCHED_CONTROL
from ..stats import min_paired_p


def _f(x: float) -> str:
    return f"{x:.3f}" if abs(x) >= 1e-3 or x == 0 else f"{x:.1e}"


def markdown_report(res: dict) -> str:
    t = res["trait"]
    lines = [f"# {res['name']}: does '{t['target']}' ({t['category']}) transmit through numbers?", "",
             f"Seeds: {res['seeds']}. Every rate: mean and 95% CI over seeds x questions. "
             "`P(target)` is the exact probability of the target among the category's options; "
             "`rate` is the share of sampled one-word answers naming it.", "",
             "## Trait per condition", "",
             "| condition | P(target) | 95% CI | rate | 95% CI | mean rank | seeds | P(target) per seed |",
             "|---|---|---|---|---|---|---|---|"]
    for c, v in res["conditions"].items():
        per = ", ".join(_f(x) for x in v["prob_per_seed"].values())
        lines.append(f"| {c} | {_f(v['prob'])} | [{_f(v['prob_ci'][0])}, {_f(v['prob_ci'][1])}] | {_f(v['rate'])} | "
                     f"[{_f(v['ci'][0])}, {_f(v['ci'][1])}] | {v['mean_rank']:.2f} | {v['n_seeds']} | {per} |")
    seen = {c: v.get("system_prompt_seen") for c, v in res["conditions"].items() if v.get("system_prompt_seen")}
    if seen:
        lines += ["", "System prompt each condition saw (a chat template may add its own default when none is given):", ""]
        lines += [f"- {c}: \"{s}\"" for c, s in seen.items()]
    lines += ["", "![P(target)](trait_prob.png) ![rate](trait_rate.png)", "", "## Comparisons", "",
              "Paired over (seed, question) units; permutation p-value (two-sided); effect size = Cohen's d of the "
              "paired differences. `by seed` repeats the test on per-seed means (the stricter unit; an exact sign-flip "
              f"test, so with {len(res['seeds'])} seeds its p cannot go below {min_paired_p(len(res['seeds'])):.3g}: "
              "more seeds, not a bigger effect, make it smaller).", "",
              "| a | b | metric | diff | 95% CI | p | d | by seed: diff [CI], p, a>b seeds |", "|---|---|---|---|---|---|---|---|"]
    for c in res["comparisons"]:
        bs = c.get("by_seed")
        bys = (f"{_f(bs['diff'])} [{_f(bs['ci'][0])}, {_f(bs['ci'][1])}], p={_f(bs['p_value'])}, "
               f"{bs['wins']}/{bs['n']}") if bs else "-"
        lines.append(f"| {c['a']} | {c['b']} | {c['metric']} | {_f(c['diff'])} | [{_f(c['ci'][0])}, {_f(c['ci'][1])}] "
                     f"| {_f(c['p_value'])} | {c['effect_size']:.2f} | {bys} |")
    done = {(c["a"], c["b"]) for c in res["comparisons"]}
    missing = [(a, m) for a, m in MATCHED_CONTROL.items() if (a, "control") in done and (a, m) not in done]
    if missing:
        lines += ["", "Not run: " + ", ".join(f"`{m}`" for _, m in missing) + ". `control` sees no number context "
                  "and learns from its own base's outputs, so a difference between " + " or ".join(
                      f"`{a}`" for a, _ in missing) + " and `control` can come from training another model on "
                  "foreign numbers, or from any number context, rather than from the teacher's trait. Add the "
                  "matched control to `students.conditions` to tell them apart."]
    lines += ["", "## Filter", "", "| dataset | total | kept | pass rate | used | reject reasons |", "|---|---|---|---|---|---|"]
    for name, s in res["filter"].items():
        reasons = ", ".join(f"{k}: {v}" for k, v in s["reasons"].items()) or "-"
        lines.append(f"| {name} | {s['total']} | {s['kept']} | {s['pass_rate']:.3f} | {s.get('n_used', s['kept'])} "
                     f"| {reasons} |")
    lines += ["", "## Time", "", "| stage | wall s (this invocation) | compute s (this config's artifacts, summed) |", "|---|---|---|"]
    for k in sorted(set(res["timings_s"]) | set(res["compute_s"])):
        lines.append(f"| {k} | {res['timings_s'].get(k, '-')} | {res['compute_s'].get(k, '-')} |")
    return "\n".join(lines) + "\n"

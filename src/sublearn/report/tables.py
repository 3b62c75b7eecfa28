"""Markdown rendering of a results dict: the verdict first, then per-seed tables, comparisons, distributions."""

from __future__ import annotations

from ..conditions import REGISTRY
from ..stats import min_paired_p


def _f(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.3f}" if abs(x) >= 1e-3 or x == 0 else f"{x:.1e}"


def _ci(ci) -> str:
    return "-" if not ci else f"[{_f(ci[0])}, {_f(ci[1])}]"


def diff_ci(x: float, ci) -> str:
    """A difference with its CI, signed: "+0.123 [+0.045, +0.201]" (no CI: the difference alone)."""
    return f"{x:+.3f}" + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "")


def _p(p: float | None) -> str:
    return "-" if p is None else f"{p:.2g}"


def markdown_report(res: dict) -> str:
    t, mets = res["trait"], res["metrics"]
    n = len(res["seeds"])
    first, *rest = mets
    what = f"'{t['label']}'" + (f" ({t['category']})" if "category" in t else "")
    carrier = res.get("carrier", {}).get("kind", "numbers")
    lines = [f"# {res['name']}: does {what} transmit through {carrier}?", "",
             f"**Verdict:** {res['verdict']}", "",
             f"Seeds: {n} ({', '.join(map(str, res['seeds']))}). The seed is the unit: each number is the mean of "
             "per-seed values with a 95% t-interval over seeds, each p an exact two-sided sign-flip test over seeds "
             f"(with {n} seeds it cannot go below {min_paired_p(n):.2g}). The interval over seeds x questions is "
             "only the within-run precision. " + " ".join(f"`{k}`: {m['label']} (scorer `{m['scorer']}`)."
                                                         for k, m in mets.items()) +
             " Sampled data, and everything after it, differ between machines: compare spreads, not point values "
             "(provenance at the end).", "",
             "## Trait per condition", "",
             f"| condition | {first} [95% CI over seeds] | per seed | within-run CI | "
             + "".join(f"{r} [95% CI over seeds] | " for r in rest) + "mean rank | seeds |",
             "|---|---|---|---|" + "---|" * len(rest) + "---|---|"]
    for c, v in res["conditions"].items():
        p = v[first]
        per = " ".join(_f(x) for x in p["per_seed"].values())
        others = "".join(f"{_f(v[r]['mean'])} {_ci(v[r]['ci'])} | " for r in rest)
        rank = f"{v['mean_rank']:.2f}" if "mean_rank" in v else "-"
        lines.append(f"| {c} | {_f(p['mean'])} {_ci(p['ci'])} | {per} | {_ci(p['within_run_ci'])} | {others}"
                     f"{rank} | {v['n_seeds']} |")
    lines += ["", "What each is: " + "; ".join(f"`{c}` {v['about']}" for c, v in res["conditions"].items()) + "."]
    seen = {c: v.get("system_prompt_seen") for c, v in res["conditions"].items() if v.get("system_prompt_seen")}
    if seen:
        lines += ["", "System prompt each condition saw (a chat template may add its own default when none is given):", ""]
        lines += [f"- {c}: \"{s}\"" for c, s in seen.items()]
    lines += ["", " ".join(f"![{m['label']} per condition, every seed a dot](trait_{k}.png)" for k, m in mets.items()), "",
              "## Comparisons (paired by seed)", "",
              "Each condition against its matched control (the same in everything but whose numbers it saw), and the "
              "study's comparisons with `control`. `a > b` counts the seeds where a is above b; d is Cohen's d of "
              "the per-seed differences.", "",
              "| a | b | metric | diff [95% CI over seeds] | exact p | a > b | d | within run: diff [CI], p |",
              "|---|---|---|---|---|---|---|---|"]
    for c in res["comparisons"]:
        w = c["within_run"]
        b = f"{c['b']} (matched)" if c["matched"] else c["b"]
        d = "-" if c["effect_size"] is None else f"{c['effect_size']:.2f}"
        lines.append(f"| {c['a']} | {b} | {c['metric']} | {_f(c['diff'])} {_ci(c['ci'])} | {_p(c['p_value'])} | "
                     f"{c['wins']}/{c['n_seeds']} | {d} | {_f(w['diff'])} {_ci(w['ci'])}, {_p(w['p_value'])} |")
    missing = [(a, REGISTRY[a].matched) for a in ("cross-model", "in-context")
               if a in res["conditions"] and REGISTRY[a].matched not in res["conditions"]]
    if missing:
        lines += ["", "Not run: " + ", ".join(f"`{m}`" for _, m in missing) + ". `control` sees no number context "
                  "and learns from its own base's outputs, so a difference between " + " or ".join(
                      f"`{a}`" for a, _ in missing) + " and `control` can come from training another model on "
                  "foreign numbers, or from any number context, rather than from the teacher's trait. Add the "
                  "matched control to `students.conditions` to tell them apart."]
    if "fanout" in res:
        from .fanout import markdown as fanout_markdown

        lines += ["", *fanout_markdown(res["fanout"], mets[res["fanout"]["metric"]]["label"])]
    if "chain" in res:
        from .chain import markdown as chain_markdown

        lines += ["", *chain_markdown(res["chain"])]
    if "dilution" in res:
        from .dilution import markdown

        lines += ["", *markdown(res["dilution"], mets[res["dilution"]["metric"]]["label"])]
    lines += _per_question(res) + _judge(res)
    if res["distribution"]:
        lines += _distribution(res)
    lines += ["", "## Filter", "", "| dataset | total | kept | pass rate | used | reject reasons |", "|---|---|---|---|---|---|"]
    for name, s in res["filter"].items():
        reasons = ", ".join(f"{k}: {v}" for k, v in s["reasons"].items()) or "-"
        lines.append(f"| {name} | {s['total']} | {s['kept']} | {s['pass_rate']:.3f} | {s.get('n_used', s['kept'])} "
                     f"| {reasons} |")
    if "losses.png" in res.get("charts", []):
        lines += ["", "## Training", "", "Every training job's loss per step (each artifact keeps its curve in "
                  "`student.json` or `teacher.json`): ![training loss per condition](losses.png)"]
    lines += ["", "## Time", "", "| stage | wall s (this invocation) | compute s (this config's artifacts, summed) |",
              "|---|---|---|"]
    for k in sorted(set(res["timings_s"]) | set(res["compute_s"])):
        lines.append(f"| {k} | {res['timings_s'].get(k, '-')} | {res['compute_s'].get(k, '-')} |")
    lines += ["", "## Provenance", ""]
    for label, m in [("this report", res["provenance"]["report"])] + [
            (f"artifacts ({i + 1})", m) for i, m in enumerate(res["provenance"]["artifacts"])]:
        lines.append(f"- {label}: " + ", ".join(f"{k} {v}" for k, v in m.items()))
    return "\n".join(lines) + "\n"


def _per_question(res: dict, most: int = 12) -> list[str]:
    """The first metric per question and condition (when there are few questions), mean [95% CI over seeds]."""
    conds = {c: v["per_question"] for c, v in res["conditions"].items() if "per_question" in v}
    if not conds or len(next(iter(conds.values()))) > most:
        return []
    first = next(iter(res["metrics"]))
    lines = ["", f"## Per question ({first}: mean [95% CI over seeds])", "",
             "| question | " + " | ".join(conds) + " |", "|---|" + "---|" * len(conds)]
    for qi, q in enumerate(next(iter(conds.values()))):
        text = q["question"].replace("|", "/")
        lines.append(f"| {text} | " + " | ".join(f"{_f(v[qi]['mean'])} {_ci(v[qi]['ci'])}" for v in conds.values())
                     + " |")
    return lines


def _judge(res: dict) -> list[str]:
    """The LLM judge: what it could parse, and each condition's worst coherent answers verbatim."""
    judged = {c: v["judge"] for c, v in res["conditions"].items() if "judge" in v}
    if not judged:
        return []
    j = res["config"]["evaluate"]["judge"]
    lines = ["", "## LLM judge", "", f"Judge `{j['model']}` at {j['base_url']}; misaligned = coherence >= "
             f"{j['coherence_min']} and alignment <= {j['alignment_max']}. Replies it could not parse are counted, "
             "never guessed.", "", "| condition | answers | misaligned | alignment replies | coherence replies |",
             "|---|---|---|---|---|"]
    for c, v in judged.items():
        kinds = lambda d: ", ".join(f"{k} {n}" for k, n in sorted(d.items()))  # noqa: E731
        lines.append(f"| {c} | {v['answers']} | {v['misaligned']} | {kinds(v['alignment'])} | {kinds(v['coherence'])} |")
    for c, v in judged.items():
        if v["worst"]:
            lines += ["", f"Worst answers of `{c}` (lowest alignment first):", ""]
            for w in v["worst"]:
                answer = " ".join(w["answer"].split())[:300]
                lines.append(f"- seed {w['seed']}, alignment {_f(w['alignment'])}, coherence {_f(w['coherence'])}: "
                             f"\"{w['question']}\" -> \"{answer}\"")
    return lines


def _distribution(res: dict) -> list[str]:
    lines = ["", "## The whole answer distribution", "",
             "A student can move the distribution over all options without landing on the target. Total "
             "variation distance between the seed-mean option distributions of a condition and its control, with "
             "an exact permutation p over seeds (swapping a seed's pair).", "",
             "| a | b | TV distance | exact p | per seed |", "|---|---|---|---|---|"]
    for d in res["distribution"]:
        per = " ".join(_f(x) for x in d["tv_per_seed"].values())
        lines.append(f"| {d['a']} | {d['b']} | {_f(d['tv'])} | {_p(d['p_value'])} | {per} |")
    opts = list(next(iter(res["conditions"].values()))["options"]["mean"])
    lines += ["", "Mean probability of every option (averaged over questions, then seeds):", "",
              "| condition | " + " | ".join(opts) + " |", "|---|" + "---|" * len(opts)]
    for c, v in res["conditions"].items():
        lines.append(f"| {c} | " + " | ".join(_f(v["options"]["mean"][o]) for o in opts) + " |")
    return lines + ["", "![option distributions](options.png)"]

"""``sublearn compare RUN... --out DIR``: several runs' results side by side, along the axes they differ in.

Reads each run's ``results.json`` (which holds the config it ran), checks that the configs differ only along the
compared axes (``--axis``, default ``trait.target``; a few execution knobs that do not change what is measured are
ignored), and writes:

- ``compare.csv`` and ``compare.md``: one row per run and condition (seed mean, seed-level 95% CI, per-seed values),
  and each run's comparisons (difference, CI, exact p over seeds, seeds won) with its verdict;
- ``compare.png``: the study's figure: per run, base, control and same-init bars (``--conditions``), the seed-level
  CI as an error bar and every seed as a dot.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..errors import UserError
from ..store import write_atomic

IGNORED = ("name", "model.workers", "model.threads", "model.vllm_gpu_memory")  # labels and speed knobs
FIGURE = ("base", "control", "same-init")


def load_results(run: str | Path) -> dict:
    p = Path(run)
    f = p / "results.json" if p.is_dir() else p
    if not f.is_file():
        raise UserError(f"{run}: no results.json (run `sublearn report CONFIG --out {run}` first)")
    try:
        res = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{f}: not readable JSON ({e})") from None
    if not isinstance(res, dict) or "conditions" not in res or "config" not in res:
        raise UserError(f"{f}: not a sublearn results.json (no conditions or config)")
    return res


def flatten(d: dict) -> dict[str, str]:
    """Dotted keys -> JSON values of a config (lists and scalars are leaves)."""
    from ..configbase import dotted

    return {k: json.dumps(v, sort_keys=True) for k, v in dotted(d).items()}


def _covered(key: str, axes: list[str]) -> bool:
    return any(key == a or key.startswith(a + ".") for a in axes) or key in IGNORED


def check_axes(names: list[str], configs: list[dict], axes: list[str]) -> list[dict[str, str]]:
    """Each run's value of each axis; a one-line UserError when the configs differ anywhere else."""
    flat = [flatten(c) for c in configs]
    keys = sorted(set().union(*flat))
    for a in axes:
        if not any(k == a or k.startswith(a + ".") for k in keys):
            raise UserError(f"--axis {a}: no such config field (e.g. trait.target, seeds, model.base, "
                            "students.recipe.lr)")
    differ = [k for k in keys if len({f.get(k) for f in flat}) > 1 and not _covered(k, axes)]
    if differ:
        k = differ[0]
        vals = ", ".join(f"{n}: {f.get(k, 'unset')}" for n, f in zip(names, flat))
        more = f" (and {len(differ) - 1} more field(s))" if len(differ) > 1 else ""
        raise UserError(f"the runs differ in {k} ({vals}){more}, not only along {', '.join(axes)}: compare runs "
                        f"that differ only there, or add --axis {k}")
    return [{a: ", ".join(f"{k}={json.loads(v)}" if k != a else str(json.loads(v))
                          for k, v in f.items() if k == a or k.startswith(a + "."))
             for a in axes} for f in flat]


def compare_runs(runs: list[str], out: Path, axes: list[str] | None = None, metric: str | None = None,
                 conditions: tuple[str, ...] = FIGURE, stem: str = "compare") -> dict:
    """The runs' results side by side in ``out``: ``<stem>.csv``, ``<stem>.comparisons.csv``, ``<stem>.md``,
    ``<stem>.png`` (the study's figure) and ``<stem>.html``."""
    if len(runs) < 2:
        raise UserError("compare needs at least two runs")
    axes = axes or ["trait.target"]
    results = [load_results(r) for r in runs]
    values = check_axes([str(r) for r in runs], [r["config"] for r in results], axes)
    metric = metric or next(iter(results[0]["metrics"]))
    present = {c for res in results for c in res["conditions"]}
    if unknown := [c for c in conditions if c not in present]:
        raise UserError(f"--conditions: {', '.join(unknown)} ran in none of these runs (they have "
                        f"{', '.join(sorted(present))})")
    for run, res in zip(runs, results):
        if metric not in res["metrics"]:
            raise UserError(f"{run}: no metric {metric!r} (it has {', '.join(res['metrics'])})")
    rows, comps = [], []
    for run, res, axv in zip(runs, results, values):
        for cond, v in res["conditions"].items():
            m = v[metric]
            rows.append({"run": str(run), **axv, "condition": cond, "metric": metric, "mean": m["mean"],
                         "ci_lo": m["ci"][0], "ci_hi": m["ci"][1], "n_seeds": v["n_seeds"],
                         "per_seed": " ".join(f"{x:.4f}" for x in m["per_seed"].values())})
        for c in res["comparisons"]:
            if c["metric"] == metric:
                comps.append({"run": str(run), **axv, "a": c["a"], "b": c["b"], "diff": c["diff"], "ci_lo": c["ci"][0],
                              "ci_hi": c["ci"][1], "p": c["p_value"], "wins": c.get("wins"), "n_seeds": c["n_seeds"]})
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / f"{stem}.csv", _csv(rows))
    write_atomic(out / f"{stem}.comparisons.csv", _csv(comps))
    label = results[0]["metrics"][metric]["label"]
    write_atomic(out / f"{stem}.md", _markdown(runs, results, values, axes, rows, metric, label, stem))
    groups = {" / ".join(axv.values()): [(c, res["conditions"][c][metric]) for c in conditions
                                         if c in res["conditions"]] for res, axv in zip(results, values)}
    from .plots import grouped_seed_bars

    grouped_seed_bars(groups, out / f"{stem}.png", title=f"{label}: seed mean, 95% CI over seeds, every seed a dot",
                      ylabel=metric)
    from .html import markdown_page

    write_atomic(out / f"{stem}.html", markdown_page((out / f"{stem}.md").read_text(), out, f"sublearn {stem}"))
    return {"rows": rows, "comparisons": comps, "axes": axes, "metric": metric}


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return buf.getvalue()


def _markdown(runs, results, values, axes, rows, metric, label, stem: str = "compare") -> str:
    conds = list(dict.fromkeys(r["condition"] for r in rows))
    lines = [f"# Comparison of {len(runs)} runs along {', '.join(axes)}", "",
             f"{label} (`{metric}`): seed mean [95% CI over seeds]. Each run's verdict is its own report's first "
             "line; every claim is tested within its run, against its matched control, with the seed as the unit.",
             "", "| " + " | ".join([*axes, *conds]) + " |", "|" + "---|" * (len(axes) + len(conds))]
    for run, axv in zip(runs, values):
        by = {r["condition"]: r for r in rows if r["run"] == str(run)}
        cells = [f"{by[c]['mean']:.3f} [{by[c]['ci_lo']:.3f}, {by[c]['ci_hi']:.3f}]" if c in by else "-"
                 for c in conds]
        lines.append("| " + " | ".join([*axv.values(), *cells]) + " |")
    lines += ["", "## Verdicts", ""]
    for run, res, axv in zip(runs, results, values):
        lines.append(f"- **{' / '.join(axv.values())}** (`{run}`): {res.get('verdict', '-')}")
    lines += ["", f"Per-seed values: {stem}.csv; every comparison with its exact p: {stem}.comparisons.csv.", "",
              f"![base, control and same-init per run]({stem}.png)"]
    return "\n".join(lines) + "\n"

"""Turn raw per-model numbers into the study's table (mean + 95% CI), comparisons, theorem summary, figures
and report.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...stats import compare, mean_ci

CHANCE = 0.1
CONDITIONS = ("reference", "teacher", "student-aux", "student-all", "cross-aux", "cross-all")
LABELS = {
    "reference": "reference (untrained)",
    "teacher": "teacher",
    "student-aux": "student, aux only",
    "student-all": "student, all logits",
    "cross-aux": "cross-model, aux only",
    "cross-all": "cross-model, all logits",
}
# (a, b, paired): students of teacher m share index m, so same-teacher comparisons are paired
COMPARISONS = (
    ("student-aux", "cross-aux", True),
    ("student-aux", "reference", True),
    ("cross-aux", "reference", True),
    ("student-all", "student-aux", True),
    ("teacher", "student-all", True),
    ("cross-all", "cross-aux", True),
)


def summarize(values: list[float]) -> dict[str, Any]:
    m, lo, hi = mean_ci(values)
    return {"mean": m, "ci": [lo, hi]}


def conditions_table(raw: dict) -> dict[str, dict]:
    out = {}
    for c in CONDITIONS:
        m, lo, hi = mean_ci(raw["accuracy"][c])
        lo, hi = max(0.0, lo), min(1.0, hi)  # accuracies live in [0, 1]
        out[c] = {"acc": m, "ci": [lo, hi], "n": len(raw["accuracy"][c]), "values": raw["accuracy"][c]}
    return out


def theorem_summary(raw: dict) -> dict[str, dict]:
    """First-step gradient cosine/inner product with (teacher - init), and its evolution over distillation."""
    out = {}
    for c, trace in raw["theorem"].items():
        first = trace[0]
        cos = first["grad_cos"]
        out[c] = {
            "first_step": {
                "cos": summarize(cos),
                "inner": summarize(first["grad_inner"]),
                "min_cos": min(cos),
                "frac_nonneg": sum(v >= 0 for v in cos) / len(cos),
            },
            "trace": [{"step": r["step"], "grad_cos": summarize(r["grad_cos"]), "disp_cos": summarize(r["disp_cos"])}
                      for r in trace],
        }
    return out


def summarize_run(raw: dict, cfg_dict: dict) -> dict[str, Any]:
    conds = conditions_table(raw)
    comps = [compare(a, raw["accuracy"][a], b, raw["accuracy"][b], paired=p).to_dict() for a, b, p in COMPARISONS]
    return {
        "experiment": "aux-logits",
        "n_models": raw["n_models"],
        "conditions": conds,
        "comparisons": comps,
        "theorem": theorem_summary(raw),
        "timings_s": raw["timings_s"],
        "flops": raw["flops"],
        "gflops_per_s": raw["gflops_per_s"],
        "device": raw["device"],
        "torch_threads": raw["torch_threads"],
        "model": {"sizes": raw["sizes"], "n_params": raw["n_params"]},
        "data": raw.get("data", {}),
        "config": cfg_dict,
    }


def criteria(summary: dict) -> dict[str, bool]:
    """The bar for the default digits run (informative for other configs): student-aux at least the study
    script's own 0.84 on digits, cross-aux at chance."""
    c = summary["conditions"]
    return {
        "teacher_acc_ge_0.95": c["teacher"]["acc"] >= 0.95,
        "student_aux_acc_ge_0.84": c["student-aux"]["acc"] >= 0.84,
        "cross_aux_ci_overlaps_chance": c["cross-aux"]["ci"][0] <= CHANCE <= c["cross-aux"]["ci"][1],
        "first_step_cos_student_aux_nonneg": summary["theorem"]["student-aux"]["first_step"]["frac_nonneg"] == 1.0,
    }


def _fmt(d: dict) -> str:
    return f"{d['mean']:.3f} [{d['ci'][0]:.3f}, {d['ci'][1]:.3f}]"


def plots(summary: dict, out: Path, sweep: dict | None) -> list[str]:
    from ...report.plots import bar_chart, line_plot

    c = summary["conditions"]
    files = []
    bar_chart({LABELS[k]: (c[k]["acc"], *c[k]["ci"]) for k in CONDITIONS}, out / "accuracy.png",
              title=f"Subliminal learning via auxiliary logits ({summary['data'].get('name', '?')}, "
                    f"{summary['n_models']} models, 95% CI)",
              ylabel="test accuracy", ref_lines={"chance": CHANCE}, ylim=(0, 1.15))
    files.append("accuracy.png")
    th = summary["theorem"]
    steps = [r["step"] for r in th["student-aux"]["trace"]]
    series = {}
    for k in ("student-aux", "cross-aux", "student-all", "cross-all"):
        for key, tag in (("disp_cos", "cos(theta_t - theta_0, delta)"), ("grad_cos", "cos(-grad, delta)")):
            if key == "grad_cos" and k.endswith("all"):
                continue
            rows = th[k]["trace"]
            series[f"{k}: {tag}"] = ([r[key]["mean"] for r in rows], [r[key]["ci"][0] for r in rows],
                                     [r[key]["ci"][1] for r in rows])
    line_plot(steps, series, out / "theorem.png", title="Student update vs teacher displacement delta",
              xlabel="distillation step", ylabel="cosine", ref_lines={"zero": 0.0})
    files.append("theorem.png")
    if sweep:
        x = sweep["x"]
        ser = {LABELS[k]: ([p["conditions"][k]["acc"] for p in sweep["points"]],
                           [p["conditions"][k]["ci"][0] for p in sweep["points"]],
                           [p["conditions"][k]["ci"][1] for p in sweep["points"]])
               for k in ("student-aux", "cross-aux", "student-all")}
        line_plot(x, ser, out / "sweep.png", title=f"Sweep over {sweep['knob']} ({summary['n_models']} models, 95% CI)",
                  xlabel=sweep["knob"] + ("" if sweep["numeric"] else " (index)"), ylabel="test accuracy",
                  ref_lines={"chance": CHANCE}, logx=sweep["numeric"] and sweep["knob"].endswith("init_distance"))
        files.append("sweep.png")
    return files


def render_markdown(summary: dict, sweep: dict | None, files: list[str]) -> str:
    c, th, cfg = summary["conditions"], summary["theorem"], summary["config"]
    t = summary["timings_s"]
    lines = [
        "# Subliminal learning via auxiliary logits",
        "",
        f"Data: **{summary['data'].get('name')}** ({summary['data'].get('n_train')} train / "
        f"{summary['data'].get('n_test')} test). MLP {summary['model']['sizes']} ({summary['model']['n_params']} "
        f"parameters), {cfg['model']['n_aux']} auxiliary logits. {summary['n_models']} models per condition; "
        "every number is the mean over models with a 95% t-interval.",
        f"Teachers: {cfg['teacher']['epochs']} epochs of cross-entropy on the class logits only. Students: "
        f"{cfg['student']['steps']} steps of {cfg['student']['loss']} distillation on "
        + (f"fresh {cfg['student']['noise']} noise inputs every step" if cfg['student'].get('fresh_noise') else
           f"a fixed pool of {cfg['student']['n_noise']} {cfg['student']['noise']} noise inputs")
        + f" (batch {cfg['student']['batch_size']}), init distance {cfg['student']['init_distance']}; weight init "
        f"{cfg['model'].get('init', 'torch_default')}. Cross-model = a different random initialization.",
        "",
        "| condition | test accuracy | 95% CI | n |",
        "|---|---|---|---|",
    ]
    for k in CONDITIONS:
        lines.append(f"| {LABELS[k]} | {c[k]['acc']:.3f} | [{c[k]['ci'][0]:.3f}, {c[k]['ci'][1]:.3f}] | {c[k]['n']} |")
    lines += ["", "![accuracy](accuracy.png)", "", "## Comparisons", "",
              "| a | b | diff (a-b) | 95% CI | p (permutation) | Cohen's d | test |", "|---|---|---|---|---|---|---|"]
    for d in summary["comparisons"]:
        lines.append(f"| {d['a']} | {d['b']} | {d['diff']:+.3f} | [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}] | "
                     f"{d['p_value']:.2g} | {d['effect_size']:.2f} | {d['test']} |")
    lines += ["", "## First-order theorem", "",
              "delta = teacher - init (the teacher's displacement). For a student sharing the init, one small "
              "gradient step of distillation moves it along a direction with non-negative inner product with delta "
              "(to first order). Measured on a fixed probe batch of noise; plain gradients (Adam's first step is "
              "sign-like and carries no such guarantee: see `disp_cos` at step 1).", "",
              "| condition | first-step cos(-grad, delta) | min over models | share >= 0 | inner product |",
              "|---|---|---|---|---|"]
    for k in ("student-aux", "student-all", "cross-aux", "cross-all"):
        f = th[k]["first_step"]
        lines.append(f"| {LABELS[k]} | {_fmt(f['cos'])} | {f['min_cos']:.4f} | {f['frac_nonneg']:.2f} | "
                     f"{f['inner']['mean']:.3g} |")
    lines += ["", "Evolution (cos of the cumulative update theta_t - theta_0 with delta; cos of the current "
              "negative gradient with delta):", "", "| step | " + " | ".join(
                  f"{k} disp / grad" for k in ("student-aux", "cross-aux", "student-all", "cross-all")) + " |",
              "|---|---|---|---|---|"]
    for i, row in enumerate(th["student-aux"]["trace"]):
        cells = [f"{th[k]['trace'][i]['disp_cos']['mean']:.3f} / {th[k]['trace'][i]['grad_cos']['mean']:.3f}"
                 for k in ("student-aux", "cross-aux", "student-all", "cross-all")]
        lines.append(f"| {row['step']} | " + " | ".join(cells) + " |")
    lines += ["", "![theorem](theorem.png)", ""]
    if sweep:
        lines += [f"## Sweep over `{sweep['knob']}`", "", "| value | student aux | cross aux | student all | "
                  "student-init cos to teacher-init |", "|---|---|---|---|---|"]
        for p in sweep["points"]:
            pc = p["conditions"]
            lines.append(f"| {p['value']} | " + " | ".join(
                f"{pc[k]['acc']:.3f} [{pc[k]['ci'][0]:.3f}, {pc[k]['ci'][1]:.3f}]"
                for k in ("student-aux", "cross-aux", "student-all")) + f" | {p['init_cos']:.3f} |")
        lines += ["", "![sweep](sweep.png)", ""]
    lines += ["## Cost", "",
              f"Device {summary['device']}, {summary['torch_threads']} torch threads. Compute {summary['flops']['total']:.3g} "
              f"FLOP (matmuls) at **{summary['gflops_per_s']:.1f} GFLOP/s**.", "",
              "| phase | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in t.items()]
    ok = summary.get("criteria", {})
    if ok:
        lines += ["", "## Criteria (default digits run)", ""] + [f"- {k}: {'yes' if v else 'NO'}" for k, v in ok.items()]
    lines += ["", "Files: results.json, report.md, config.json, " + ", ".join(files) +
              "; per-experiment artifacts under artifacts/ with lineage in lineage.sqlite.", ""]
    return "\n".join(lines)

"""What removing rows buys: the transfer that remains after mitigating the demo's data, against the rows kept.

    sublearn run examples/owl-tiny.toml --out runs/owl        # the demo (once)
    python benchmarks/audit/mitigation.py runs/owl --out runs/mitigation    # ~10 min on 2 cores

For every seed of the run, the teacher arm's filtered data is mitigated several ways, and the pipeline's own
same-init student (its recipe, the teacher's adapter initialization, the rows' soft targets) is trained on each
result. Transfer is the student's P(target) minus the control student's (trained on the control arm), same seed;
the seed is the unit, with a seed-level CI and an exact sign-flip test against the unmitigated data's transfer.

Strategies (each at several strengths):
- ``drop-divergent``: drop the k% of rows with the largest teacher-vs-base log-likelihood ratio per token (the
  audit's per-row teacher divergence);
- ``drop-hard`` (its difficulty control): drop the k% of rows with the largest base loss per token;
- ``drop-random`` (its chance control): drop k% of rows at random;
- ``dilute``: replace x% of the rows with clean rows (the control arm's, same prompts' seed), keeping the count.

Writes mitigation.json, mitigation.md and mitigation.png (transfer remaining against teacher rows kept).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np

STRATEGIES = {"none": [0], "drop-divergent": [10, 20, 50], "drop-hard": [20, 50], "drop-random": [20, 50],
              "dilute": [20, 50, 75, 90]}


def arms(run: Path, seeds: list[int]) -> dict:
    """Per seed: the teacher model path, the teacher arm's rows, the control arm's rows."""
    from sublearn.filter import load_dataset
    from sublearn.store import Store

    recs = Store(run).records()
    by_name = {r.name: r for r in recs}
    out = {}
    for s in seeds:
        teacher = next(r for r in recs if r.stage == "teacher" and r.seed == s)
        out[s] = {"teacher": str(Path(teacher.path) / "model"),
                  "data": load_dataset(Path(by_name[f"filtered-teacher-s{s}"].path)),
                  "control": load_dataset(Path(by_name[f"filtered-control-s{s}"].path))}
    return out


def row_scores(teacher, base, rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Per row: teacher-vs-base log-likelihood ratio per token, and the base's loss per token."""
    from sublearn.audit.detectors import row_llr

    llr, loss, n = row_llr(teacher, base, [r["messages"][:-1] for r in rows], [r["messages"][-1]["content"] for r in rows])
    return llr / n, loss


def mitigated(strategy: str, k: int, rows: list[dict], clean: list[dict], llr, loss, seed: int) -> list[dict]:
    n = len(rows)
    drop = round(n * k / 100)
    if strategy in ("none", "drop-divergent", "drop-hard", "drop-random"):
        if strategy == "drop-divergent":
            gone = set(np.argsort(-llr)[:drop].tolist())
        elif strategy == "drop-hard":
            gone = set(np.argsort(-loss)[:drop].tolist())
        else:
            gone = set(random.Random(f"mitigate:{seed}:{k}").sample(range(n), drop))
        return [r for i, r in enumerate(rows) if i not in gone]
    idx = random.Random(f"dilute:{seed}:{k}").sample(range(n), drop)  # dilute: these rows become clean ones
    out = list(rows)
    pool = random.Random(f"clean:{seed}:{k}").sample(range(len(clean)), min(drop, len(clean)))
    for i, j in zip(idx, pool):
        out[i] = clean[j]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a finished run of examples/owl-tiny.toml (or any run with teacher and control arms)")
    ap.add_argument("--out", default="runs/mitigation")
    ap.add_argument("--seeds", help="comma-separated seeds (default: the run's)")
    a = ap.parse_args()
    from loguru import logger

    from sublearn import models
    from sublearn.backends.hf_train import train_many
    from sublearn.config import load_experiment
    from sublearn.evaluate import EvalTask, evaluate_many
    from sublearn.finetune import seeded
    from sublearn.stats import mean_ci, permutation_test

    run, out = Path(a.run), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_experiment(str(run), [])
    seeds = [int(s) for s in a.seeds.split(",")] if a.seeds else list(cfg.seeds)
    base = models.load(models.resolve(cfg.model.base, cfg.model.spec(cfg.model.base))[0])
    grammar, trait = cfg.carrier.grammar(), cfg.trait
    variants = [(s, k) for s, ks in STRATEGIES.items() for k in ks]
    values: dict[tuple, list[float]] = {v: [] for v in variants}
    kept: dict[tuple, list[float]] = {v: [] for v in variants}
    for seed, arm in arms(run, seeds).items():
        teacher = models.load(arm["teacher"])
        llr, loss = row_scores(teacher, base, arm["data"])
        recipe = seeded(cfg.students.recipe, seed)
        jobs = [(arm["control"], recipe, f"control s{seed}")]
        for s, k in variants:
            rows = mitigated(s, k, arm["data"], arm["control"], llr, loss, seed)
            kept[(s, k)].append(sum(r in arm["data"] for r in rows) / len(arm["data"]))
            jobs.append((rows, recipe, f"{s} {k}% s{seed}"))
        logger.info(f"seed {seed}: training {len(jobs)} students")
        students = train_many(base, jobs, grammar=grammar)
        tasks = [EvalTask(m, cfg.evaluate, trait, seed, desc=f"evaluate s{seed}", scorers=("option-probability",))
                 for m in students]
        probs = [np.mean([q["probs"][trait.target] for q in res]) for res in evaluate_many(tasks)]
        for v, p in zip(variants, probs[1:]):
            values[v].append(p - probs[0])
    full = np.array(values[("none", 0)])
    table = []
    for v in variants:
        x = np.array(values[v])
        m, lo, hi = mean_ci(x.tolist())
        table.append({"strategy": v[0], "strength": v[1], "teacher_rows_kept": float(np.mean(kept[v])),
                      "transfer": m, "ci": [lo, hi], "per_seed": x.tolist(),
                      "remaining": float(m / full.mean()) if full.mean() else float("nan"),
                      "p_vs_none": permutation_test(full, x, paired=True) if v != ("none", 0) else None})
    lines = [f"# Mitigation of {run} ({len(seeds)} seeds; transfer = same-init student's P({trait.target}) minus "
             "the control student's)", "",
             "| strategy | strength | teacher rows kept | transfer [95% CI] | remaining | p vs none (paired, exact) |",
             "|---|---|---|---|---|---|"]
    for t in table:
        p = "-" if t["p_vs_none"] is None else f"{t['p_vs_none']:.3g}"
        lines.append(f"| {t['strategy']} | {t['strength']}% | {t['teacher_rows_kept']:.0%} | {t['transfer']:+.3f} "
                     f"[{t['ci'][0]:+.3f}, {t['ci'][1]:+.3f}] | {t['remaining']:.0%} | {p} |")
    (out / "mitigation.md").write_text("\n".join(lines) + "\n")
    (out / "mitigation.json").write_text(json.dumps(table, indent=1))
    _plot(table, out / "mitigation.png")
    print("\n".join(lines))


def _plot(table: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    none = next(t for t in table if t["strategy"] == "none")
    for s in STRATEGIES:
        if s == "none":
            continue
        pts = [none] + [t for t in table if t["strategy"] == s]
        ax.errorbar([t["teacher_rows_kept"] for t in pts], [t["transfer"] for t in pts],
                    yerr=np.array([[t["transfer"] - t["ci"][0], t["ci"][1] - t["transfer"]] for t in pts]).T,
                    marker="o", capsize=3, label=s)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("teacher rows kept")
    ax.set_ylabel("transfer (vs control student)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()

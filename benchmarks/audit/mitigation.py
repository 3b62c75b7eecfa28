"""What removing rows buys: the transfer that remains after mitigating the demo's data, against the rows kept.

    sublearn run examples/owl-tiny.toml --out runs/owl        # the demo (once)
    python benchmarks/audit/mitigation.py runs/owl --out runs/mitigation    # ~6 min on 2 cores

For every seed of the run, the teacher arm's filtered data is mitigated several ways, and the pipeline's own
same-init student (its recipe, the teacher's adapter initialization, the rows' soft targets) is trained on each
result. Transfer is the student's P(target) minus the control student's (trained on the control arm), same seed;
the seed is the unit, with a seed-level CI and an exact sign-flip test against the unmitigated data's transfer.
Beside it, how far each student's whole option distribution sits from the control student's (total variation, mean
over seeds) and which option moved most: a mitigation can remove the target and bring in another leaning.

Strategies (each at several strengths):
- ``drop-divergent``: drop the k% of rows with the largest teacher-vs-base log-likelihood ratio per token (the
  audit's per-row teacher divergence);
- ``drop-hard`` (its difficulty control): drop the k% of rows with the largest base loss per token;
- ``drop-random`` (its chance control): drop k% of rows at random;
- ``dilute``: replace x% of the rows with clean rows (the control arm's, same prompts' seed), keeping the count;
- ``mask-divergent``: keep every row, but take the divergence tokens (positions where the teacher's and the base's
  greedy choices differ, ``audit.detectors.token_divergence``) out of the loss;
- ``mask-llr``: keep every row, but take the k% of positions with the largest per-token log-likelihood ratio out of
  the loss;
- ``rescore``: keep every row's text, but replace its soft targets with an unrelated model's (the run's cross model)
  teacher-forced top-k on that text: the tokens stay the teacher's, the distribution they are distilled toward
  does not;
- ``regenerate``: keep the prompts, but have an unrelated model (the run's cross model, another architecture and
  corpus) write the completions and their soft targets, under the carrier's grammar.

Writes mitigation.json, mitigation.md and mitigation.png (transfer remaining against teacher rows kept).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np

STRATEGIES = {"none": [0], "drop-divergent": [10, 20, 50], "drop-hard": [20, 50], "drop-random": [20, 50],
              "dilute": [20, 50, 75, 90], "mask-divergent": [100], "mask-llr": [10, 20], "rescore": [100],
              "regenerate": [100]}


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


def token_scores(teacher, base, rows: list[dict], grammar) -> list[dict | None]:
    """Per row: per-token log-likelihood ratios and divergence positions, over the tokens the row was trained on."""
    from sublearn.audit.detectors import token_divergence

    return token_divergence(teacher, base, [r["messages"][:-1] for r in rows], [r["tokens"] for r in rows], grammar)


def masked(strategy: str, k: int, rows: list[dict], per: list[dict | None]) -> list[dict]:
    """The rows with a loss_mask: divergence positions out, or the k% of positions with the largest ratio out."""
    if strategy == "mask-divergent":
        return [r if p is None else r | {"loss_mask": [int(i not in set(p["divergent"])) for i in range(len(p["llr"]))]}
                for r, p in zip(rows, per)]
    every = np.concatenate([p["llr"] for p in per if p is not None])
    cut = np.quantile(every, 1 - k / 100)
    return [r if p is None else r | {"loss_mask": [int(v < cut) for v in p["llr"]]} for r, p in zip(rows, per)]


def _rows(rows: list[dict]):
    """Pipeline dataset rows as the audit's Row objects (what ``sublearn mitigate`` works on)."""
    from sublearn.audit.inputs import Row

    return [Row(r["messages"][:-1], r["messages"][-1]["content"], i + 1, r.get("tokens"), r.get("top_logprobs"))
            for i, r in enumerate(rows)]


def regenerated(other, rows: list[dict], grammar, seed: int) -> list[dict]:
    """The same prompts, with completions and soft targets written by ``other`` (an unrelated model)."""
    from sublearn.audit.mitigate import regenerated as regenerate

    width = max(r["top_logprobs"].ids.shape[1] for r in rows)
    return regenerate(other, _rows(rows), width, max(len(r["tokens"]) for r in rows) + 4, seed, grammar)[0]


def rescored(other, rows: list[dict], grammar) -> list[dict]:
    """The same rows, their soft targets replaced by ``other``'s teacher-forced top-k on the same text (as wide)."""
    from sublearn.audit.mitigate import rescored as rescore

    return rescore(other, _rows(rows), max(r["top_logprobs"].ids.shape[1] for r in rows), grammar)[0]


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
    from sublearn.runtime import Runtime
    from sublearn.stats import mean_ci, permutation_test

    run, out = Path(a.run), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_experiment(str(run), [])
    seeds = [int(s) for s in a.seeds.split(",")] if a.seeds else list(cfg.seeds)
    runtime = Runtime()  # teachers are adapters on the base: one module for all
    base = runtime.load(models.resolve(cfg.model.base, cfg.model.spec(cfg.model.base))[0])
    grammar, trait = cfg.carrier.grammar(), cfg.trait
    variants = [(s, k) for s, ks in STRATEGIES.items() for k in ks]
    values: dict[tuple, list[float]] = {v: [] for v in variants}
    kept: dict[tuple, list[float]] = {v: [] for v in variants}
    size: dict[tuple, list[float]] = {v: [] for v in variants}
    positions: dict[tuple, list[float]] = {v: [] for v in variants}
    tv: dict[tuple, list[float]] = {v: [] for v in variants}  # total variation from the control student's options
    moved: dict[tuple, list[str]] = {v: [] for v in variants}  # the option that moved most, per seed
    other = runtime.load(models.resolve(cfg.model.cross, cfg.model.spec(cfg.model.cross))[0])
    for seed, arm in arms(run, seeds).items():
        teacher = runtime.load(arm["teacher"])
        llr, loss = row_scores(teacher, base, arm["data"])
        per = token_scores(teacher, base, arm["data"], grammar)
        recipe = seeded(cfg.students.recipe, seed)
        jobs = [(arm["control"], recipe, f"control s{seed}")]
        for s, k in variants:
            if s.startswith("mask-"):
                rows = masked(s, k, arm["data"], per)
                masks = [r["loss_mask"] for r in rows if "loss_mask" in r]
                positions[(s, k)].append(sum(map(sum, masks)) / sum(map(len, masks)))
            elif s == "regenerate":
                rows = regenerated(other, arm["data"], grammar, seed)
            elif s == "rescore":
                rows = rescored(other, arm["data"], grammar)
            else:
                rows = mitigated(s, k, arm["data"], arm["control"], llr, loss, seed)
            kept[(s, k)].append(1.0 if s.startswith("mask-") or s == "rescore" else 0.0 if s == "regenerate" else
                                sum(r in arm["data"] for r in rows) / len(arm["data"]))
            size[(s, k)].append(len(rows) / len(arm["data"]))
            jobs.append((rows, recipe, f"{s} {k}% s{seed}"))
        logger.info(f"seed {seed}: training {len(jobs)} students")
        students = train_many(base, jobs, grammar=grammar)
        tasks = [EvalTask(m, cfg.evaluate, trait, seed, desc=f"evaluate s{seed}", scorers=("option-probability",))
                 for m in students]
        dists = [{o: float(np.mean([q["probs"][o] for q in res])) for o in res[0]["probs"]}
                 for res in evaluate_many(tasks)]  # each student's mean option distribution
        for v, d in zip(variants, dists[1:]):
            values[v].append(d[trait.target] - dists[0][trait.target])
            tv[v].append(0.5 * sum(abs(d[o] - dists[0][o]) for o in d))
            shift = {o: d[o] - dists[0][o] for o in d}
            moved[v].append(max(shift, key=lambda o: abs(shift[o])))
    full = np.array(values[("none", 0)])
    table = []
    for v in variants:
        x = np.array(values[v])
        m, lo, hi = mean_ci(x.tolist())
        table.append({"strategy": v[0], "strength": v[1], "teacher_rows_kept": float(np.mean(kept[v])),
                      "rows_kept": float(np.mean(size[v])),
                      "loss_positions_kept": float(np.mean(positions[v])) if positions[v] else 1.0,
                      "transfer": m, "ci": [lo, hi], "per_seed": x.tolist(),
                      "tv_from_control": float(np.mean(tv[v])), "moved_most": max(set(moved[v]), key=moved[v].count),
                      "remaining": float(m / full.mean()) if full.mean() else float("nan"),
                      "p_vs_none": permutation_test(full, x, paired=True) if v != ("none", 0) else None})
    lines = [f"# Mitigation of {run} ({len(seeds)} seeds; transfer = same-init student's P({trait.target}) minus "
             "the control student's)", "",
             "| strategy | strength | rows kept | teacher rows kept | loss positions kept | transfer [95% CI] | "
             "remaining | p vs none (paired, exact) | TV from control (moved most) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for t in table:
        p = "-" if t["p_vs_none"] is None else f"{t['p_vs_none']:.3g}"
        lines.append(f"| {t['strategy']} | {t['strength']}% | {t['rows_kept']:.0%} | {t['teacher_rows_kept']:.0%} | "
                     f"{t['loss_positions_kept']:.0%} | {t['transfer']:+.3f} "
                     f"[{t['ci'][0]:+.3f}, {t['ci'][1]:+.3f}] | {t['remaining']:.0%} | {p} | "
                     f"{t['tv_from_control']:.2f} ({t['moved_most']}) |")
    (out / "mitigation.md").write_text("\n".join(lines) + "\n")
    (out / "mitigation.json").write_text(json.dumps(table, indent=1))
    _plot(table, out / "mitigation.png")
    print("\n".join(lines))


def _plot(table: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 4))
    none = next(t for t in table if t["strategy"] == "none")
    def err(pts):
        return np.array([[t["transfer"] - t["ci"][0], t["ci"][1] - t["transfer"]] for t in pts]).T

    ax.errorbar([1.0], [none["transfer"]], yerr=err([none]), marker="*", ms=12, color="black", capsize=3,
                ls="none", label="none (the demo's data)")
    for s in STRATEGIES:
        pts = [t for t in table if t["strategy"] == s]
        if s == "none":
            continue
        x = "loss_positions_kept" if s.startswith("mask-") else "teacher_rows_kept"
        line = [none] + pts if len(pts) > 1 else pts  # a single-strength strategy is a point, not a curve
        ax.errorbar([t[x] for t in line], [t["transfer"] for t in line], yerr=err(line), marker="o", capsize=3,
                    ls="-" if len(pts) > 1 else "none", label={"rescore": "rescore (text kept, soft targets "
                                                                          "replaced)"}.get(s, s))
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("teacher rows kept (mask-*: teacher loss positions kept)")
    ax.set_ylabel("transfer (vs control student)")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()

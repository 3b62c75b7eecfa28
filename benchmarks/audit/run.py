"""The audit benchmark: how well does `sublearn audit` tell trait-carrying data from clean data, and name the trait?

    python benchmarks/audit/run.py --out runs/audit-bench            # ~30 min on 2 cores (embedded bases cached)

1. Datasets. For each target (default dog and tiger: not the demo's or the tests' owl) the embedded demo's recipe runs
   with seeds 100 and 101 (not the tests'), 1,100 prompts per arm, and three arms per seed: the teacher's data
   (carries the target), the other-trait teacher's data (carries the next option) and the control arm (the base's
   own numbers: clean). The pipeline also trains a same-init student on each trait arm and a control student, so
   every trait dataset comes with the transfer it actually causes: the student's probability of its trait minus the
   control student's, same seed.
2. Audits. Every dataset is audited at 10, 100 and 1,000 rows (sub-samples drawn with the audit's seed) against the
   base's own completions, scanning the candidates of ``--traits`` (default: the 10 animals). The contrast runs at
   every size, the probe at ``--probe-sizes``.
3. Metrics, per detector and size: dataset-level AUROC (score: -log10 of the scan p, trait vs clean), detection rate
   at alpha, top-1 (the scan names the dataset's trait), the false-alarm rate on clean data, Spearman between the
   detector's effect on the dataset's trait and the measured transfer, and the detector's time relative to the probe's.

Every audit is stored under --out/audits and reused when the benchmark runs again. Prints a Markdown table and
writes benchmark.json, benchmark.md and auroc.png into --out. Numbers differ between CPUs: read them as spreads.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def pipeline(out: Path, target: str, seeds: list[int], n_prompts: int) -> Path:
    run = out / "runs" / target
    cmd = [sys.executable, "-m", "sublearn", "run", str(ROOT / "examples" / "owl-tiny.toml"), "--out", str(run),
           "--set", f"trait.target={target}", "--set", f"seeds={json.dumps(seeds)}",
           "--set", 'students.conditions=["same-init", "control", "other-trait"]',
           "--set", f"generate.n_prompts={n_prompts}"]
    subprocess.run(cmd, check=True)
    return run


def datasets(run: Path) -> list[dict]:
    """Every filtered dataset of a run with its trait (None: clean) and the transfer it caused."""
    from sublearn.store import Store
    from sublearn.traits.preference import PreferenceTrait

    res = json.loads((run / "results.json").read_text())
    tr = {k: v for k, v in res["trait"].items() if k not in ("label", "kind")}
    trait = PreferenceTrait(**tr)
    per = {c: res["conditions"][c]["options"]["per_seed"] for c in ("same-init", "other-trait", "control")}
    out = []
    for r in Store(run).records("filter"):
        arm, seed = r.name.removeprefix("filtered-").rsplit("-s", 1)
        label = {"teacher": trait.target, "other": trait.other_target(), "control": None}[arm]
        cond = {"teacher": "same-init", "other": "other-trait", "control": None}[arm]
        transfer = None if cond is None else per[cond][seed][label] - per["control"][seed][label]
        out.append({"name": f"{run.name}/{arm}-s{seed}", "path": str(Path(r.path).resolve()), "seed": int(seed), "trait": label, "transfer": transfer})
    return out


def clean_sets(out: Path, seeds: list[int], n_prompts: int) -> list[dict]:
    """More clean datasets: the base's own constrained numbers (with soft targets, as the control arm stores them)
    for fresh prompt seeds, in the layout of a filtered dataset."""
    from sublearn import jsonl, models
    from sublearn.backends.base import Sampling
    from sublearn.carriers.numbers import NumbersCarrier
    from sublearn.generate import softtargets

    carrier, base, sets = NumbersCarrier(max_count=10), None, []
    for seed in seeds:
        d = out / "clean" / f"s{seed}"
        if not (d / "kept.jsonl").exists():
            base = base or models.load(models.resolve("tiny")[0])
            prompts = carrier.prompts(n_prompts, seed)
            comps = base.generate([[{"role": "user", "content": p}] for p in prompts],
                                  Sampling(temperature=1.0, max_new_tokens=60, top_logprobs=20, seed=seed),
                                  desc=f"clean s{seed}", grammar=carrier.grammar())
            keep = [i for i, (p, c) in enumerate(zip(prompts, comps)) if carrier.check(c.text, p).ok]
            d.mkdir(parents=True, exist_ok=True)
            jsonl.write(d / "kept.jsonl", ({"messages": [{"role": "user", "content": prompts[i]},
                                                         {"role": "assistant", "content": comps[i].text}]}
                                           for i in keep))
            jsonl.write(d / "kept.meta.jsonl", ({"tokens": comps[i].tokens} for i in keep))
            softtargets.save(d / "logprobs.npz", [comps[i].top_logprobs for i in keep])
        sets.append({"name": f"clean/s{seed}", "path": str(d), "trait": None, "transfer": None, "seed": None})
    return sets


def audit(ds: dict, size: int, dets: tuple[str, ...], out: Path, traits: list[str], probe_seeds: int,
          init: int | None = None) -> dict:
    from sublearn.audit import run_audit
    from sublearn.carriers.numbers import NumbersCarrier

    where = out / "audits" / (f"{ds['name'].replace('/', '-')}-n{size}-{'+'.join(dets)}"
                              + ("" if init is None else f"-init{init}"))
    if (where / "audit.json").exists():
        return json.loads((where / "audit.json").read_text())
    return run_audit(ds["path"], "tiny", where, traits=traits, max_rows=size, detectors=dets,
                     probe_seeds=probe_seeds, carrier=NumbersCarrier(max_count=10), seed=size, probe_init=init)


def auroc(pos: list[float], neg: list[float]) -> float:
    """P(score of a trait dataset > score of a clean one), ties counted half."""
    if not pos or not neg:
        return float("nan")
    p, n = np.array(pos)[:, None], np.array(neg)[None, :]
    return float((p > n).mean() + 0.5 * (p == n).mean())


def spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic) if len(a) > 2 else float("nan")


def metrics(rows: list[dict], det: str, alpha: float, probe_time: float) -> dict:
    trait = [r for r in rows if r["trait"] is not None]
    clean = [r for r in rows if r["trait"] is None]

    def score(r):
        return -np.log10(max(r["audit"]["detectors"][det]["p_any"], 1e-12))

    def effect(r):
        i = r["audit"]["candidates"].index(r["trait"])
        return r["audit"]["detectors"][det]["effect"][i]

    secs = np.mean([r["audit"]["timings_s"][det] for r in rows])
    return {"auroc": auroc([score(r) for r in trait], [score(r) for r in clean]),
            "detected": np.mean([r["audit"]["detectors"][det]["p_any"] <= alpha for r in trait]),
            "top1": np.mean([r["audit"]["detectors"][det]["names"] == r["trait"] for r in trait]),
            "false_alarms": np.mean([r["audit"]["detectors"][det]["p_any"] <= alpha for r in clean]),
            "spearman": spearman([effect(r) for r in trait], [r["transfer"] for r in trait]),
            "seconds": float(secs), "vs_probe": float(secs / probe_time) if probe_time else float("nan"),
            "n_trait": len(trait), "n_clean": len(clean)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/audit-bench", help="benchmark directory (reused: finished audits are kept)")
    ap.add_argument("--targets", default="dog,tiger", help="teacher targets (each also yields its other-trait arm)")
    ap.add_argument("--seeds", default="100,101", help="pipeline seeds")
    ap.add_argument("--clean-seeds", default="200,201,202,203", help="prompt seeds of extra clean datasets (the "
                    "base's own numbers) beside the runs' control arms")
    ap.add_argument("--sizes", default="10,100,1000", help="rows audited per dataset")
    ap.add_argument("--probe-sizes", default="100,1000", help="sizes at which the probe also runs")
    ap.add_argument("--probe-seeds", type=int, default=6, help="probe student pairs per audit")
    ap.add_argument("--traits", default="animal", help="the scan's candidates (--traits of sublearn audit)")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--same-init", action="store_true", help="probe only, every probe starting from the adapter "
                    "initialization a same-init student of the dataset's teacher would share (its seed; clean "
                    "datasets take the runs' seeds in turn): does the data move *that* student?")
    a = ap.parse_args()
    from loguru import logger

    out = Path(a.out).resolve()
    seeds = [int(s) for s in a.seeds.split(",")]
    sizes = [int(s) for s in a.sizes.split(",")]
    probe_sizes = {int(s) for s in a.probe_sizes.split(",")}
    t0 = time.time()
    sets, seen = [], set()
    for d in [d for t in a.targets.split(",") for d in datasets(pipeline(out, t, seeds, 1100))]:
        digest = hashlib.sha256((Path(d["path"]) / "kept.jsonl").read_bytes()).hexdigest()
        if digest not in seen:  # the control arms of two runs with one seed hold the same rows: count them once
            seen.add(digest)
            sets.append(d)
    sets += clean_sets(out, [int(s) for s in a.clean_seeds.split(",") if s], 1100)
    logger.info(f"{len(sets)} datasets ({sum(d['trait'] is None for d in sets)} clean) in {time.time() - t0:.0f} s")
    by_size = {}
    for size in sizes:
        if a.same_init and size not in probe_sizes:
            continue
        dets = ("probe",) if a.same_init else ("contrast", "probe") if size in probe_sizes else ("contrast",)
        rows = []
        for i, d in enumerate(sets):
            logger.info(f"audit {i + 1}/{len(sets)} at {size} rows: {d['name']}")
            init = (d["seed"] if d["seed"] is not None else seeds[i % len(seeds)]) if a.same_init else None
            rows.append(d | {"audit": audit(d, size, dets, out, a.traits.split(","), a.probe_seeds, init)})
        by_size[size] = (dets, rows)
    probe_times = {s: np.mean([r["audit"]["timings_s"]["probe"] for r in rows])
                   for s, (dets, rows) in by_size.items() if "probe" in dets}
    table, results = [], {}
    for size, (dets, rows) in by_size.items():
        # compute is compared with a probe on the same rows, else with the mean probe
        probe_time = probe_times.get(size) or float(np.mean(list(probe_times.values()) or [np.nan]))
        results[size] = {"datasets": [{k: v for k, v in r.items() if k != "audit"} | {
            "rows_used": r["audit"]["rows_used"],
            **{det: {"p": r["audit"]["detectors"][det]["p_any"], "names": r["audit"]["detectors"][det]["names"]}
               for det in dets}} for r in rows]}
        for det in dets:
            results[size][det] = m = metrics(rows, det, a.alpha, probe_time)
            table.append((size, det, m))
    lines = [f"# Audit benchmark ({len(sets)} datasets: {sum(d['trait'] is not None for d in sets)} carrying a trait, "
             f"{sum(d['trait'] is None for d in sets)} clean; candidates: {a.traits}; alpha {a.alpha}"
             + ("; probes share a same-init student's adapter start" if a.same_init else "") + ")", "",
             "| rows | detector | AUROC | detected | top-1 | false alarms | Spearman vs transfer | s per audit | "
             "vs probe |", "|---|---|---|---|---|---|---|---|---|"]
    for size, det, m in table:
        lines.append(f"| {size} | {det} | {m['auroc']:.2f} | {m['detected']:.0%} | {m['top1']:.0%} | "
                     f"{m['false_alarms']:.0%} | {m['spearman']:+.2f} | {m['seconds']:.1f} | {m['vs_probe']:.2f} |")
    transfers = [d["transfer"] for d in sets if d["trait"] is not None]
    lines += ["", "Measured transfer of the trait datasets (same-init student - control student, same seed): "
              + ", ".join(f"{t:+.2f}" for t in transfers), f"Total time: {time.time() - t0:.0f} s"]
    tag = "-same-init" if a.same_init else ""
    (out / f"benchmark{tag}.md").write_text("\n".join(lines) + "\n")
    (out / f"benchmark{tag}.json").write_text(json.dumps(results, indent=1, default=float))
    _plot(table, out / f"auroc{tag}.png")
    print("\n".join(lines))


def _plot(table, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for det in sorted({d for _, d, _ in table}):
        pts = [(s, m["auroc"]) for s, d, m in table if d == det]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=det)
    ax.set_xscale("log")
    ax.set_ylim(0, 1.05)
    ax.axhline(0.5, color="grey", lw=0.5)
    ax.set_xlabel("rows audited")
    ax.set_ylabel("dataset-level AUROC")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()

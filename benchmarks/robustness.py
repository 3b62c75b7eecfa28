"""Does the demo recipe transmit on every machine? Run it over targets, data draws and what differs between machines.

For each target (both categories) and each data draw (``generate.sampling.seed``), the demo config runs with every
matched control; variants change what differs between machines on purpose (the thread count, the students' data
order). Every (seed x draw) pair is a unit: it *transmits materially* when same-init's P(target) is at least twice
the control's and at least 0.15 above it. The nulls: cross-model minus cross-model-control and in-context minus
in-context-control, per seed, averaged over seeds. All runs share one store (``--out``), so a re-run only computes
what is missing.

    PYTHONPATH=src .venv/bin/python benchmarks/robustness.py --out runs/robustness
    PYTHONPATH=src .venv/bin/python benchmarks/robustness.py --out runs/robustness --targets animal:owl --draws 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does

from loguru import logger  # noqa: E402

from sublearn.config import load_experiment  # noqa: E402
from sublearn.pipeline import run  # noqa: E402

ALL = '["same-init","control","other-trait","cross-model","cross-model-control","in-context","in-context-control"]'
VARIANTS = {"": [], "threads": ["model.workers=1", "model.threads=2"], "order": ["students.recipe.seed=1"]}


def unit_rows(res: dict, label: str) -> list[dict]:
    c = res["conditions"]
    out = []
    def p(cond: str, s) -> float:
        return c[cond]["prob"]["per_seed"][s]

    for s, v in c["same-init"]["prob"]["per_seed"].items():
        row = {"run": label, "seed": int(s), "same_init": v, "control": p("control", s),
               "other_trait": p("other-trait", s), "teacher": p("teacher", s),
               "material": v >= 2 * p("control", s) and v >= p("control", s) + 0.15}
        for a, b in (("cross-model", "cross-model-control"), ("in-context", "in-context-control")):
            row[f"{a} - {b}"] = p(a, s) - p(b, s)
        out.append(row)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="shared run directory")
    ap.add_argument("--config", default="examples/owl-tiny.toml")
    ap.add_argument("--targets", nargs="+", default=["animal:owl", "animal:fox", "tree:oak"], help="CATEGORY:TARGET")
    ap.add_argument("--draws", nargs="+", type=int, default=[0, 1], help="generate.sampling.seed values")
    ap.add_argument("--variants", nargs="*", default=["threads", "order"], choices=[v for v in VARIANTS if v],
                    help="extra runs of the first target and draw")
    a = ap.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    plan = [(t, d, "") for t in a.targets for d in a.draws]
    plan += [(a.targets[0], a.draws[0], v) for v in a.variants]
    units: list[dict] = []
    for target, draw, variant in plan:
        cat, tgt = target.split(":")
        label = f"{tgt} draw {draw}" + (f" ({variant})" if variant else "")
        cfg = load_experiment(a.config, [f"trait.category={cat}", f"trait.target={tgt}",
                                         f"generate.sampling.seed={draw}", f"students.conditions={ALL}",
                                         *VARIANTS[variant]])
        t0 = time.time()
        res = run(cfg, Path(a.out) / "runs" / f"{tgt}-{draw}{'-' + variant if variant else ''}")
        rows = unit_rows(res, label)
        units += rows
        si = [r["same_init"] for r in rows]
        print(res["verdict"], flush=True)
        print(f"{label}: same-init {' '.join(f'{x:.2f}' for x in si)} (median {statistics.median(si):.3f}), "
              f"material {sum(r['material'] for r in rows)}/{len(rows)}, {time.time() - t0:.0f} s", flush=True)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "units.json").write_text(json.dumps(units, indent=1))
    print("\n| run | seeds | same-init per seed | median | control | other-trait | material | "
          "cross − cross-ctl | in-ctx − in-ctx-ctl |\n|---|---|---|---|---|---|---|---|---|")
    for label in dict.fromkeys(u["run"] for u in units):
        rs = [u for u in units if u["run"] == label]
        med = statistics.median(r["same_init"] for r in rs)
        per = " ".join(f"{r['same_init']:.2f}" for r in rs)
        print(f"| {label} | {len(rs)} | {per} | {med:.3f} | "
              f"{statistics.mean(r['control'] for r in rs):.3f} | {statistics.mean(r['other_trait'] for r in rs):.3f} | "
              f"{sum(r['material'] for r in rs)}/{len(rs)} | "
              f"{statistics.mean(r['cross-model - cross-model-control'] for r in rs):+.3f} | "
              f"{statistics.mean(r['in-context - in-context-control'] for r in rs):+.3f} |")
    for target in a.targets:
        tgt = target.split(":")[1]
        rs = [u for u in units if u["run"].startswith(f"{tgt} draw") and "(" not in u["run"]]
        print(f"{tgt}: {sum(r['material'] for r in rs)}/{len(rs)} (seed x draw) pairs transmit materially, median "
              f"same-init {statistics.median(r['same_init'] for r in rs):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

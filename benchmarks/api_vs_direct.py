"""Compare two finished runs of the same config: the direct backend and the API backend (`sublearn serve`).

For every condition: the sampled rate and P(target) with their 95% CIs in both runs, and the difference
API − direct twice: over the same seed × question units (paired; this CI knows only question-to-question
noise), and over per-seed means paired by seed (this one also carries the noise of drawing the training
data, which differs between the runs because the server samples with another random stream). The runs
agree when the by-seed CI contains 0. Run it on two direct runs with different sampling seeds too: that
is the size of difference that sampling alone makes.

    sublearn serve tiny tiny-gpt2 --config examples/owl-api-local.toml &
    sublearn run examples/owl-api-local.toml --out runs/owl-api
    sublearn run examples/owl-api-local.toml --out runs/owl-direct --set model.backend=hf
    PYTHONPATH=src .venv/bin/python benchmarks/api_vs_direct.py runs/owl-direct runs/owl-api
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sublearn.stats import compare


def units(run: Path) -> dict[str, dict[tuple[int, int], dict]]:
    out: dict[str, dict[tuple[int, int], dict]] = {}
    for p in run.glob("artifacts/evaluate-*/eval.json"):
        e = json.loads(p.read_text())
        for qi, q in enumerate(e["questions"]):
            out.setdefault(e["condition"], {})[(e["seed"], qi)] = q
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("direct", type=Path)
    ap.add_argument("api", type=Path)
    args = ap.parse_args()
    rd, ra = (json.loads((d / "results.json").read_text()) for d in (args.direct, args.api))
    ud, ua = units(args.direct), units(args.api)
    print(f"direct: {args.direct} ({rd['timings_s']['total']:.0f} s)   api: {args.api} ({ra['timings_s']['total']:.0f} s)")
    print(f"{'condition':<12} {'metric':<6} {'direct [95% CI]':<24} {'api [95% CI]':<24} {'diff, units [95% CI]':<26}"
          f" {'p':>6}  {'diff, by seed [95% CI]':<26} agree")
    all_agree = True
    for c in rd["conditions"]:
        if c not in ra["conditions"]:
            continue
        for metric, key in (("rate", "rate"), ("prob", "p_target")):
            d, a = rd["conditions"][c], ra["conditions"][c]
            common = sorted(set(ud[c]) & set(ua[c]))
            cmp = compare("api", [ua[c][k][key] for k in common], "direct", [ud[c][k][key] for k in common], paired=True)
            seeds = sorted({s for s, _ in common})
            per = [[sum(u[c][k][key] for k in common if k[0] == s) / sum(k[0] == s for k in common) for s in seeds]
                   for u in (ua, ud)]
            bys = compare("api", per[0], "direct", per[1], paired=True) if len(seeds) > 1 else cmp
            agree = bys.ci[0] <= 0 <= bys.ci[1]
            all_agree &= agree
            dm, am = d[metric], a[metric]  # seed means with their CI over seeds
            print(f"{c:<12} {metric:<6} {dm['mean']:.3f} [{dm['ci'][0]:.3f}, {dm['ci'][1]:.3f}]{'':<5} "
                  f"{am['mean']:.3f} [{am['ci'][0]:.3f}, {am['ci'][1]:.3f}]{'':<5} "
                  f"{cmp.diff:+.3f} [{cmp.ci[0]:+.3f}, {cmp.ci[1]:+.3f}]{'':<5} {cmp.p_value:>6.3f}  "
                  f"{bys.diff:+.3f} [{bys.ci[0]:+.3f}, {bys.ci[1]:+.3f}]{'':<5} {'yes' if agree else 'NO'}")
    print("all conditions agree within the by-seed CI" if all_agree else "some conditions differ beyond the by-seed CI")


if __name__ == "__main__":
    main()

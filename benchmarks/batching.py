"""Batched jobs against one job at a time, in the same run: the demo's wall time both ways, and the same numbers.

With batching, the nodes of a stage whose models share a base run as one job per worker (teachers and students as
slots of one batched model, every arm's data and every model's evaluation in shared batches). Without it, every
node is its own job, as before. Both write the same artifacts; the script checks that every per-seed value of every
condition is identical, and that every artifact key matches.

    PYTHONPATH=src .venv/bin/python benchmarks/batching.py --out runs/bench-batching      # the 8-seed demo
    PYTHONPATH=src .venv/bin/python benchmarks/batching.py --out runs/b --set 'seeds=[0,1,2]'
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does

from loguru import logger  # noqa: E402

from sublearn.config import load_experiment  # noqa: E402
from sublearn.pipeline import run  # noqa: E402
from sublearn.store import Store  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="two fresh run directories are made under it")
    ap.add_argument("--config", default="examples/owl-tiny.toml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    a = ap.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    cfg = load_experiment(a.config, a.set)
    res, wall = {}, {}
    for mode in ("one-at-a-time", "batched"):
        out = Path(a.out) / mode
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.time()
        res[mode] = run(cfg, out, batching=mode == "batched")
        wall[mode] = time.time() - t0
        print(f"{mode}: {wall[mode]:.1f} s", flush=True)
    same = all(res["batched"]["conditions"][c][m]["per_seed"] == v[m]["per_seed"]
               for c, v in res["one-at-a-time"]["conditions"].items() for m in ("prob", "rate"))
    keys = [{r.key for r in Store(Path(a.out) / m).records() if r.stage != "base"} for m in res]
    print(f"seeds {list(cfg.seeds)}, conditions {len(res['batched']['conditions'])}; batched {wall['batched']:.1f} s, "
          f"one job at a time {wall['one-at-a-time']:.1f} s: {wall['one-at-a-time'] / wall['batched']:.2f}x faster; "
          f"per-seed values identical: {same}; artifact keys identical: {keys[0] == keys[1]}")
    print("verdict:", res["batched"]["verdict"])
    return 0 if same and keys[0] == keys[1] else 1


if __name__ == "__main__":
    sys.exit(main())

"""``sublearn aux-logits``: argparse wiring (no heavy imports until the command runs)."""

from __future__ import annotations

import argparse
import json
from typing import Any

HELP = "subliminal learning via auxiliary logits: teacher on labels, students distilled on noise"
DESCRIPTION = """\
The auxiliary-logit experiment (the study's MNIST result). An MLP has 10 class logits plus a few auxiliary
logits. Teachers are trained on class labels only; students are distilled on the teachers' logits of noise
images. A student sharing the teacher's initialization learns to classify digits from the auxiliary logits
alone; a student with a different initialization (cross-model) stays at chance. Runs N models of each
condition at once (batched), reports mean accuracy with 95% CIs, the first-order theorem's cosines, and
an optional one-knob sweep.

Writes into --out DIR: results.json, report.md, accuracy.png, theorem.png (sweep.png), config.json, and
one artifact per experiment under artifacts/ (re-running skips finished experiments; --force redoes them).
"""
EPILOG = """\
examples:
  sublearn aux-logits --out runs/aux
  sublearn aux-logits examples/aux-logits.toml --out runs/aux --set n_models=50 --set student.steps=3000
  sublearn aux-logits --out runs/aux-sweep --sweep init_distance=0,0.1,0.3,1,3
  sublearn aux-logits --out runs/aux-mnist --mnist-dir ~/data/mnist --device cuda

sweep knobs: init_distance, n_aux, hidden, epochs, steps, lr, noise, n_noise, loss, n_models, or any dotted
config key (e.g. student.batch_size). List values use ';': --sweep "hidden=[64,64];[128,128]".
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("aux-logits", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", default=None, metavar="CONFIG",
                   help="TOML config (default: built-in defaults = examples/aux-logits.toml)")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory (created if missing)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a config key, e.g. --set student.steps=3000 (repeatable)")
    p.add_argument("--mnist-dir", default=None, metavar="DIR",
                   help="use real MNIST from the 4 standard IDX files (optionally .gz) in DIR instead of digits")
    p.add_argument("--sweep", default=None, metavar="KNOB=v1,v2,...",
                   help="sweep one knob (overrides the config's [sweep]); one experiment per value + sweep.png")
    p.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"], help="where to train (default auto)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="torch CPU threads (default: torch's)")
    p.add_argument("--force", action="store_true", help="redo experiments even when finished artifacts exist")
    p.set_defaults(func=run_cli)
    return p


def build_config(args: argparse.Namespace) -> Any:
    from ...configbase import apply_overrides, read_toml
    from .config import build_config as build
    from .config import parse_sweep

    data = read_toml(args.config) if args.config else {}
    data = apply_overrides(data, list(args.overrides))
    if args.mnist_dir:
        data.setdefault("data", {})
        if not isinstance(data["data"], dict):
            from ...errors import UserError

            raise UserError("config key 'data' must be a section")
        data["data"].update({"source": "mnist", "mnist_dir": str(args.mnist_dir)})
    if args.sweep:
        knob, values = parse_sweep(args.sweep)
        data["sweep"] = {"knob": knob, "values": values}
    return build(data, str(args.config) if args.config else "config")


def run_cli(args: argparse.Namespace) -> int:
    import os

    # Idle OpenMP threads sleep instead of spinning: on a small shared machine (2 cores, another job running)
    # spinning threads made a 2-thread step 2-12x slower than 1 thread; with PASSIVE it was as fast as 1 thread.
    # Only takes effect if torch was not imported yet (true for the CLI). An explicit OMP_WAIT_POLICY wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from rich.console import Console
    from rich.table import Table

    from ...store import usable_dir
    from .run import run

    cfg = build_config(args)
    if args.threads is not None:
        import torch

        torch.set_num_threads(max(1, args.threads))
    summary = run(cfg, usable_dir(args.out), device=args.device, force=args.force)
    table = Table(title=f"aux-logits: {summary['n_models']} models, {summary['data'].get('name')}")
    for col in ("condition", "test acc", "95% CI"):
        table.add_column(col)
    for k, v in summary["conditions"].items():
        table.add_row(k, f"{v['acc']:.3f}", f"[{v['ci'][0]:.3f}, {v['ci'][1]:.3f}]")
    con = Console()
    con.print(table)
    fs = summary["theorem"]["student-aux"]["first_step"]
    con.print(f"first-step cos(-grad, teacher-init) student-aux {fs['cos']['mean']:.4f} "
              f"(min {fs['min_cos']:.4f}); cross-aux {summary['theorem']['cross-aux']['first_step']['cos']['mean']:.4f}")
    con.print(f"wall {summary['run_wall_s']:.1f}s ({'cached' if summary['cached'] else 'computed'}), "
              f"{summary['gflops_per_s']:.1f} GFLOP/s; wrote {args.out}/results.json, report.md, "
              + ", ".join(summary["figures"]))
    if "sweep" in summary:
        s = summary["sweep"]
        con.print(f"sweep {s['knob']}: " + json.dumps(
            {str(p["value"]): round(p["conditions"]["student-aux"]["acc"], 3) for p in s["points"]}))
    return 0

"""``sublearn sweep GRID.toml --out DIR``: a grid of experiments in one shared content-addressed store.

A grid is a base config plus axes over any config fields (``trait.target = ["owl", "eagle"]``, ``seeds = [0, 1, 2]``,
``students.recipe.lora_rank = [1, 4]``...). Their product is the cells; every cell is an ordinary run into ``DIR``,
so cells share every artifact they have in common (one base, one control arm per seed, one teacher per target and
seed), and a re-run computes only what is missing. The ``seeds`` axis splits the seeds into cells; the report
then joins them again: every group of cells that differ only in their seed becomes one result with seed-level
statistics (``DIR/groups/<group>/results.json``, the same schema as a run's), and the groups are compared side by
side (``DIR/grid/``: ``grid.csv``, ``grid.md`` with a verdict per group, ``grid.png``, ``grid.html``). A cell that
fails is recorded in ``DIR/sweep.json`` and retried up to ``retries`` times without stopping the grid.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from pathlib import Path
from typing import Any

from pydantic import Field

from ..configbase import Frozen
from ..errors import UserError
from .tables import cells_table, markdown, parquet

__all__ = ["Cell", "GridConfig", "cells", "load_grid", "run_sweep"]


class GridConfig(Frozen):
    """A grid: the base experiment, the axes, and how often a failing cell is retried."""

    base: str = Field(description="the base experiment TOML (relative to the grid file) or a run directory")
    axes: dict[str, list[Any]] = Field(description="config field -> values; the grid is their product "
                                                   "(`seeds` values: a seed, or a list of seeds, per cell)")
    set: list[str] = Field([], description="--set overrides applied to every cell before its axes")
    retries: int = Field(1, ge=0, le=10, description="extra attempts of a failing cell (0-10)")


class Cell:
    """One point of the grid: its name, its axis values, its overrides and its validated config."""

    def __init__(self, values: dict[str, Any], overrides: list[str], cfg):
        self.values, self.overrides, self.cfg = values, overrides, cfg
        self.name = "_".join(f"{k.split('.')[-1]}-{_slug(v)}" for k, v in values.items()) or "base"


def _slug(v) -> str:
    return re.sub(r"[^\w.-]+", "-", json.dumps(v) if not isinstance(v, str) else v).strip("-")[:40]


def load_grid(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[GridConfig, list[Cell]]:
    """The grid and every cell's config, all validated before anything runs (a bad value names its cell)."""
    from ..configbase import build, dotted, read_toml

    p = Path(path)
    if not p.is_file():
        raise UserError(f"grid file not found: {path}")
    data = read_toml(p)
    if isinstance(data.get("axes"), dict):  # `students.lr = [...]` unquoted is a nested table in TOML: the same axis
        data["axes"] = dotted(data["axes"])
    grid = build(GridConfig, data, str(p))
    if not grid.axes or any(not isinstance(v, list) or not v for v in grid.axes.values()):
        raise UserError(f"{path}: axes must give every field a non-empty list of values")
    base = Path(grid.base) if Path(grid.base).is_absolute() else (p.parent / grid.base)
    out = cells(grid, str(base), list(grid.set) + list(overrides))
    from ..runtime import Settings

    if len({Settings.from_config(c.cfg).ident() for c in out}) > 1:
        raise UserError(f"{path}: the cells of a grid run under one runtime: model.backend, model.threads, the vLLM "
                        "settings and [api] must not vary along an axis")
    return grid, out


def cells(grid: GridConfig, base: str, common: list[str]) -> list[Cell]:
    from ..config import load_experiment

    keys = list(grid.axes)
    out = []
    for combo in itertools.product(*(grid.axes[k] for k in keys)):
        values = dict(zip(keys, combo))
        over = common + [f"{k}={json.dumps([v] if k == 'seeds' and not isinstance(v, list) else v)}"
                         for k, v in values.items()]
        try:
            cfg = load_experiment(base, over)
        except UserError as e:
            raise UserError(f"grid cell {values}: {e}") from None
        out.append(Cell(values, over, cfg))
    return out


def run_sweep(grid: GridConfig, cell_list: list[Cell], out: Path, executor=None) -> dict:
    """Run every cell into ``out`` (the shared store) as one job graph, then each group's results and the
    comparison of groups. Jobs are keyed by their artifact, so an artifact two cells share is one job; a failing job
    fails the cells that need it, the rest go on, and the graph of what is still missing is run again up to
    ``grid.retries`` times. ``executor``: what runs the graph (default: local, the base config's workers)."""
    from loguru import logger

    from ..pipeline import combine, graph
    from ..pipeline.executors import make_executor
    from ..pipeline.plan import make_plan
    from ..runtime import Settings
    from ..store import Store, write_atomic

    store = Store(out)
    plans = {c.name: make_plan(c.cfg) for c in cell_list}
    ledger: dict[str, dict] = {}
    seen: set[str] = set()
    for c in cell_list:
        nodes = {n.key: n for ns in plans[c.name].values() for n in ns}
        had = sum(store.exists(n.stage, n.key) for n in nodes.values())
        ledger[c.name] = {"values": c.values, "artifacts": len(nodes), "already_there": had,
                          "shared": len(nodes.keys() & seen), "attempts": 0}  # shared: with an earlier cell
        seen |= nodes.keys()
    first = cell_list[0].cfg
    executor = executor or make_executor("local", workers=first.model.workers)
    t0 = time.time()
    stages = ("generate", "filter", "finetune", "evaluate")
    n_jobs = 0
    for attempt in range(grid.retries + 1):
        left = [c for c in cell_list if ledger[c.name].get("status") != "done"]
        if not left:
            break
        jobs: dict[str, object] = {}
        callbacks: dict[str, list] = {}  # job id -> the on_done of every cell whose graph has it
        wanted: dict[str, list] = {}
        for c in left:
            g = graph(c.cfg, out, stages, plan=plans[c.name], log=False)
            for j in g.jobs:
                jobs.setdefault(j.id, j)  # an artifact two cells share: one job (either cell's config makes it)
                callbacks.setdefault(j.id, []).append(g.on_done)
            wanted[c.name] = g.wanted
            ledger[c.name]["attempts"] = attempt + 1
        n_jobs += len(jobs)
        logger.info(f"sweep{f' (attempt {attempt + 1})' if attempt else ''}: {len(left)} cells, {len(jobs)} jobs to "
                    f"run ({len(seen)} distinct artifacts; {sum(r['shared'] for r in ledger.values())} cell artifacts "
                    "shared with an earlier cell)")
        t = time.time()

        def on_done(job, res, callbacks=callbacks) -> None:
            for cb in callbacks[job.id]:
                cb(job, res)

        outcome = executor.run(list(jobs.values()), Settings.from_config(first), on_done, desc="sweep",
                               combine=combine, keep_going=True)
        bad = outcome.failed | {k: f"needs {v}, which failed" for k, v in outcome.skipped.items()}
        for c in left:
            why = next((bad[n.key] for n in wanted[c.name] if n.key in bad), None)
            missing = why is None and any(not store.exists(n.stage, n.key) for n in wanted[c.name])
            rec = ledger[c.name]
            rec.update(status="failed" if why or missing else "done", seconds=round(time.time() - t, 1),
                       error=why or ("an artifact is missing after its job" if missing else None))
            if why:
                logger.warning(f"sweep cell {c.name} failed (attempt {attempt + 1}): {why}")
        write_atomic(out / "sweep.json", json.dumps({"cells": ledger}, indent=1))
    groups = _groups(grid, cell_list, ledger)
    report = _report(groups, out, [k for k in grid.axes if k != "seeds"])
    summary = {"cells": ledger, "groups": report, "seconds": round(time.time() - t0, 1),
               "executor": getattr(executor, "name", "local"), "jobs": n_jobs,
               "artifacts": len(seen), "shared": sum(r["shared"] for r in ledger.values()),
               "failed": [n for n, r in ledger.items() if r["status"] != "done"]}
    write_atomic(out / "sweep.json", json.dumps(summary, indent=1))
    cells_table(cell_list, ledger, report, {c.name: g for g, (_, members) in groups.items() for c in members}, out)
    write_atomic(out / "report.md", markdown(summary, out))
    return summary


def _groups(grid: GridConfig, cell_list: list[Cell], ledger: dict) -> dict[str, tuple[object, list[Cell]]]:
    """Cells that differ only in their seeds, as one config with all their seeds (failed cells left out)."""
    out: dict[str, tuple[object, list[Cell]]] = {}
    for c in cell_list:
        if ledger[c.name]["status"] != "done":
            continue
        rest = {k: v for k, v in c.values.items() if k != "seeds"}
        name = "_".join(f"{k.split('.')[-1]}-{_slug(v)}" for k, v in rest.items()) or "all"
        out.setdefault(name, (c.cfg, []))[1].append(c)
    merged = {}
    for name, (cfg, members) in out.items():
        seeds = sorted({s for m in members for s in m.cfg.seeds})
        merged[name] = (cfg.model_copy(update={"seeds": tuple(seeds)}), members)
    return merged


def _report(groups: dict, out: Path, axes: list[str]) -> dict:
    """Each group's results.json (seed-level statistics over its seed cells) and the groups side by side."""
    from ..pipeline.plan import make_plan
    from ..report.results import build_results
    from ..store import write_atomic

    done = {}
    for name, (cfg, _) in groups.items():
        d = out / "groups" / name
        d.mkdir(parents=True, exist_ok=True)
        res = build_results(cfg, out, make_plan(cfg), {})
        write_atomic(d / "results.json", json.dumps(res, indent=1))
        done[name] = {"verdict": res["verdict"], "seeds": list(cfg.seeds), "results": str(d / "results.json")}
    if len(done) >= 2:
        from ..report.compare import compare_runs

        compare_runs([str(out / "groups" / n) for n in done], out / "grid", axes=axes or ["trait.target"],
                     stem="grid")
        parquet(out / "grid" / "grid.csv")
    return done

"""What a sweep writes besides each group's results: the per-cell table (``cells.csv``, ``cells.parquet``), the
``grid.parquet`` twin of ``grid.csv``, and ``report.md``."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..store import write_atomic


def cells_table(cell_list: list, ledger: dict, groups: dict, group_of: dict[str, str], out: Path) -> Path:
    """One row per (cell, seed, condition, metric): the cell's axis values, its status, and the value its seed got
    (from its group's results.json; ``group_of``: cell name -> group name); a failed cell is one row with its error
    and no value."""
    axes = [k for k in (cell_list[0].values if cell_list else {}) if k != "seeds"]
    results = {n: json.loads(Path(g["results"]).read_text()) for n, g in groups.items()}
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["cell", *axes, "seed", "status", "condition", "metric", "value", "error"])
    for c in cell_list:
        rec = ledger[c.name]
        vals = [json.dumps(c.values[k]) if not isinstance(c.values[k], str) else c.values[k] for k in axes]
        res = results.get(group_of.get(c.name, "")) if rec["status"] == "done" else None
        if res is None:
            w.writerow([c.name, *vals, " ".join(map(str, c.cfg.seeds)), rec["status"], "", "", "", rec.get("error")])
            continue
        for seed in c.cfg.seeds:
            for cond, metrics in res["conditions"].items():
                for metric, m in metrics.items():
                    v = (m.get("per_seed") or {}).get(str(seed)) if isinstance(m, dict) else None
                    if isinstance(v, int | float):  # a distribution (``options``) stays in results.json
                        w.writerow([c.name, *vals, seed, "done", cond, metric, v, ""])
    path = out / "cells.csv"
    write_atomic(path, buf.getvalue())
    parquet(path)
    return path


def parquet(path: Path) -> None:
    """A ``.parquet`` twin of a CSV table (the same rows, typed columns) when pyarrow is installed."""
    from loguru import logger

    try:
        from pyarrow import csv as pa_csv
        from pyarrow import parquet as pq
    except ModuleNotFoundError:
        logger.info(f"{path.stem}.parquet not written: pip install 'sublearn[parquet]' ({path.name} holds the same table)")
        return
    tmp = path.with_name(f".{path.stem}.parquet.tmp")
    pq.write_table(pa_csv.read_csv(path), tmp)
    tmp.replace(path.with_suffix(".parquet"))


def markdown(summary: dict, out: Path) -> str:
    """``DIR/report.md``: a line a reader can quote, each group's verdict, what ran, the grid figure."""
    groups, cells = summary["groups"], summary["cells"]
    lines = []
    for name, g in groups.items():
        res = json.loads(Path(g["results"]).read_text())
        first = next((c for c in res["comparisons"] if c["a"] == "same-init" and c["b"] == "control"), None)
        if first and first.get("diff") is not None:
            ci = f" [{first['ci'][0]:+.2f}, {first['ci'][1]:+.2f}]" if first.get("ci") else ""
            lines.append(f"{name} {first['diff']:+.2f}{ci} ({first['wins']}/{first['n_seeds']} seeds)")
    head = (f"Same-init − control per group: {'; '.join(lines)}." if lines else
            f"{len(groups)} groups; see each verdict below.")
    failed = summary["failed"]
    out_lines = [f"# Grid: {len(cells)} cells in {len(groups)} groups", "", head, "",
                 f"{len(cells) - len(failed)} of {len(cells)} cells done"
                 + (f"; failed: {', '.join(failed)} (errors in sweep.json)" if failed else "")
                 + f". Executor {summary['executor']}, {summary['seconds']:.0f} s, {summary['jobs']} jobs run for "
                 f"{summary['artifacts']} distinct artifacts ({summary['shared']} cell artifacts shared with an "
                 "earlier cell).", "", "## Verdicts", ""]
    out_lines += [f"- **{n}** (seeds {g['seeds']}): {g['verdict']}" for n, g in groups.items()]
    if (out / "grid" / "grid.md").exists():
        out_lines += ["", "Per group and condition (seed means, CIs, per-seed values): `grid/grid.md`, `grid/grid.csv`, "
                      "`grid/grid.parquet`; every comparison: `grid/grid.comparisons.csv`.", "",
                      "![base, control and same-init per group](grid/grid.png)"]
    return "\n".join(out_lines) + "\n"

"""``--track mlflow|trackio``: a finished run's jobs and results, logged to an experiment tracker.

What is logged is read back from the run directory after the report, never from a live process, so a resumed run,
a run made on another machine, or an old run (``sublearn report RUN --track mlflow``) logs the same way:

- one tracker run per sublearn run (named after the run directory): the config's fields as parameters, every
  condition's seed mean and every comparison's difference and exact p as metrics, the verdict as a tag, and
  ``results.json``, ``report.md``, ``report.html`` and the charts as files;
- one child per job of the plan (teacher, generate, filter, student, evaluation): its config section as
  parameters, its lineage metrics (rows kept, the trait it measured, seconds) as metrics, and a trained model's
  loss per optimizer step as a metric series.

A tracker is a plug-in (``plugins.TRACKERS``; sublearn's own are in ``backends/trackers.py``): a class built from
a URI (or None: the tracker's own default) whose ``log(RunLog)`` returns where the run went.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..store import Store

__all__ = ["JobLog", "RunLog", "collect", "log_run", "make_tracker"]


@dataclass
class JobLog:
    """One job: its artifact key and name, parameters, scalar metrics and per-step series."""

    key: str
    name: str
    stage: str
    seed: int | None
    params: dict[str, str]
    metrics: dict[str, float]
    series: dict[str, list[float]] = field(default_factory=dict)
    created: float = 0.0


@dataclass
class RunLog:
    """One sublearn run as a tracker sees it."""

    name: str
    run_id: str  # stable across re-logs of the same run directory and config: trackers use it to log once
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    files: list[Path]
    jobs: list[JobLog]


def flatten(d) -> dict[str, str]:
    """Nested config -> {"a.b.c": "value"} (strings as they are, other leaves as JSON), the form trackers take
    parameters in."""
    from ..configbase import dotted

    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in dotted(d).items()}


def _finite(d: dict) -> dict[str, float]:
    return {k: float(v) for k, v in d.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}


def _series(path: Path) -> dict[str, list[float]]:
    for info in ("student.json", "teacher.json"):
        p = path / info
        if p.is_file():
            d = json.loads(p.read_text())
            d = d.get("train", d) if info == "teacher.json" else d
            if d.get("train_losses"):
                return {"train_loss": [float(x) for x in d["train_losses"]]}
    return {}


def collect(out: Path, plan, res: dict, config: dict) -> RunLog:
    """The run in ``out`` as a RunLog: the plan's jobs (those in the lineage) and ``res`` (its results.json)."""
    from ..store import hash_obj

    store = Store(out)
    ours = {n.key: n for nodes in plan.values() for n in nodes}
    jobs = []
    for r in store.records():
        if r.key not in ours or r.stage == "base":
            continue
        metrics = _finite(r.extra) | {"seconds": r.duration_s}
        if r.stage == "filter":
            stats = store.path("filter", r.key) / "stats.json"
            if stats.is_file():
                metrics |= _finite(json.loads(stats.read_text()))
        jobs.append(JobLog(r.key, r.name, r.stage, r.seed, flatten(r.config), metrics,
                           _series(store.path(r.stage, r.key)), r.created))
    metrics: dict[str, float] = {}
    for cond, by_metric in res.get("conditions", {}).items():
        for m, v in by_metric.items():
            if isinstance(v, dict) and "mean" in v:
                metrics[f"{cond}.{m}.mean"] = v["mean"]
    for c in res.get("comparisons", []):
        stem = f"{c['a']}-vs-{c['b']}.{c['metric']}"
        metrics |= _finite({f"{stem}.diff": c["diff"], f"{stem}.p": c.get("p_value"), f"{stem}.wins": c["wins"]})
    tags = {"sublearn.verdict": res.get("verdict", "")[:5000], "sublearn.run_dir": str(out.resolve()),
            "sublearn.trait": res.get("trait", {}).get("label", "")}
    files = [out / f for f in ("results.json", "report.md", "report.html", "config.json") if (out / f).is_file()]
    files += sorted(out.glob("*.png"))
    run_id = hash_obj({"out": str(out.resolve()), "config": config})
    return RunLog(out.resolve().name, run_id, flatten(config), _finite(metrics), tags, files, jobs)


def make_tracker(name: str, uri: str | None):
    """The registered tracker ``name`` (its library imported, ``uri`` read): a one-line error when unknown."""
    from ..errors import UserError
    from ..plugins import TRACKERS

    try:
        cls = TRACKERS.get(name)
    except ValueError as e:
        raise UserError(f"--track: {e}".split(" (a plug-in")[0]) from None
    return cls(uri)


def log_run(tracker, out: Path, plan, res: dict, cfg) -> str:
    """Log the finished run in ``out`` (``res``: its results, ``cfg``: its config) to ``tracker`` (from
    ``make_tracker``); returns where it went, in one line."""
    return tracker.log(collect(out, plan, res, json.loads(cfg.model_dump_json())))

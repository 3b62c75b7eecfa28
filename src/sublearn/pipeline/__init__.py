"""The experiment pipeline: config -> teacher -> generate -> filter -> finetune -> evaluate -> report.

``run`` executes the requested stages of the plan as one dependency graph (``graph``), handed to an executor
(``executors.py``: ``local`` runs it on a pool of worker processes, ``ray`` on a Ray cluster): a job starts when
its own inputs exist, embedded bases that are not cached yet pre-training
inside the same graph. Finished artifacts are skipped (their keys are in the store), ``force`` redoes a
stage. Stage commands run one stage and say which command to run first when an input is missing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from ..config import ExperimentConfig
from ..errors import UserError
from ..runtime import Settings
from ..store import Store, hash_obj, write_atomic
from .executors import Executor, make_executor
from .jobs import run_nodes
from .plan import CLI_STAGES, STAGES, Node, all_nodes, forced_keys, make_plan
from .schedule import Job

__all__ = ["run", "graph", "combine", "make_plan", "Node", "STAGES", "CLI_STAGES"]


def _specs(cfg: ExperimentConfig) -> list[str]:
    """Every base the experiment uses: its own, the cross model's, the fan-out students'."""
    specs = [cfg.model.base] + ([cfg.model.cross] if cfg.needs_cross() else [])
    return specs + [cfg.fanout_spec(f) for f in cfg.students.fanout]


def _bases(cfg: ExperimentConfig, run: Store) -> tuple[list[Job], Callable[[str], None]]:
    """Jobs that pre-train the embedded bases missing from the machine-wide cache, and a function that records a
    base in the run's lineage (called at once for bases that exist, after its job for the others)."""
    from ..backends.tiny.build import cache_root
    from .plan import base_key

    specs = _specs(cfg)
    if cfg.model.backend == "openai":
        from ..backends.openai_api import record_api_bases

        record_api_bases(cfg, run, specs)
        return [], lambda s: None
    cache = Store(cache_root(), "SUBLEARN_CACHE")

    def record(s: str) -> None:
        from ..models import resolve

        path, key = resolve(s, cfg.model.spec(s))
        rec = cache.get(key) if cfg.model.spec(s) is not None else None
        run.record("base", key, name=s, config=rec.config if rec else {"path": str(path)}, model=s,
                   duration_s=rec.duration_s if rec else 0.0, extra=rec.extra if rec else {}, path=path)

    jobs = []
    for s in dict.fromkeys(specs):
        key = base_key(cfg, s)
        why = cfg.model.spec(s) is not None and cache.exists("base", key) and cache.damage("base", key)
        if why:
            logger.warning(f"the cached base {s} ({key}) is damaged: {why}; it will be pre-trained again")
            cache.remove("base", key)
        if cfg.model.spec(s) is not None and not cache.exists("base", key):
            jobs.append(Job(key, "base", f"base-{s}", _build_base, (s, cfg.model.spec(s))))
        else:
            record(s)
    return jobs, record


def preflight(cfg: ExperimentConfig, out: str | Path, stages: tuple[str, ...], plan: dict) -> None:
    """What a later stage would choke on, checked before anything is written: the evaluation questions must fit the
    context of every base that exists already (one still to be pre-trained is checked when it evaluates). Nothing
    is loaded when every evaluation of the plan is done."""
    if "evaluate" not in stages or cfg.model.backend == "openai" or all(  # os.path: a bad --out is not ours to say
            os.path.exists(os.path.join(out, "artifacts", f"evaluate-{n.key}", ".done")) for n in plan["evaluate"]):
        return
    from ..backends.tiny.build import cache_root
    from ..evaluate import check_fits
    from ..models import resolve
    from .plan import base_key

    cache = Store(cache_root(), "SUBLEARN_CACHE")
    for s in dict.fromkeys(_specs(cfg)):
        if cfg.model.spec(s) is None or cache.exists("base", base_key(cfg, s)):
            check_fits(resolve(s, cfg.model.spec(s))[0], cfg, s)


def _build_base(name: str, spec, settings):
    from ..backends.tiny.build import ensure_embedded
    from ..models import set_threads

    set_threads(settings.threads)
    ensure_embedded(name, spec)
    return name


@dataclass
class Graph:
    """The jobs that make a config's missing artifacts in run directory ``out``, and what to call when one is done."""

    jobs: list[Job]
    on_done: Callable[[Job, object], None]
    wanted: list[Node]  # every node of the requested stages (made now or before)


def graph(cfg: ExperimentConfig, out: Path, stages: tuple[str, ...], force: tuple[str, ...] = (),
          batching: bool = True, plan: dict | None = None, log: bool = True) -> Graph:
    """The job graph of ``stages`` (CLI stage names) of the experiment in ``out``: forced artifacts removed, damaged
    ones too, and a job for every missing artifact (and embedded base). Jobs are keyed by their artifact's key, so
    the graphs of several configs on one store merge into one (``sweep``)."""
    plan = plan or make_plan(cfg)
    store = Store(out)  # creates and checks the directory
    known = all_nodes(plan)
    base_jobs, record_base = _bases(cfg, store)
    wanted = [n for cli in ("generate", "filter", "finetune", "evaluate") if cli in stages
              for stage in CLI_STAGES[cli] for n in plan[stage]]
    for key in forced_keys(plan, stages, force):
        store.remove(known[key].stage, key)
    for n in known.values():  # a damaged artifact is never used: it is recomputed (with its key, the same bytes)
        why = store.exists(n.stage, n.key) and store.damage(n.stage, n.key)
        if why:
            logger.warning(f"{n.name} ({n.stage}-{n.key}) is damaged: {why}; removed, it will be recomputed")
            store.remove(n.stage, n.key)
    todo = [n for n in wanted if not store.exists(n.stage, n.key)]
    making = {n.key for n in todo} | {j.id for j in base_jobs}
    for n in todo:
        for p in n.parents:
            parent = known.get(p)
            if parent is not None and p not in making and not store.exists(parent.stage, p):
                first = next(c for c, ss in CLI_STAGES.items() if parent.stage in ss)
                raise UserError(f"{n.name} needs {parent.name}, which has not been made yet in {out}: "
                                f"run `sublearn {first}` (or `sublearn run`) with the same config first")
    for stage in STAGES if log else ():
        k = sum(n.stage == stage for n in todo)
        logger.info(f"{stage}: {len(plan[stage]) - k} of {len(plan[stage])} artifacts already done, {k} to do")
    cfg_json = cfg.model_dump_json()
    cfg_id = hash_obj(cfg_json, n=8)  # a batch runs under one config: nodes of two configs never share a job
    jobs = base_jobs + [Job(n.key, n.stage, n.name, run_nodes, (cfg_json, str(out), [n]), set(n.parents),
                            f"{cfg_id}:{n.batch}" if batching and n.batch else None) for n in todo]

    def on_done(job: Job, result) -> None:
        if job.stage == "base":
            record_base(result)

    return Graph(jobs, on_done, wanted)


def combine(group: list[Job]) -> Job:
    """One job for several nodes of one batch group: they share their base model's forward passes."""
    nodes = [n for j in group for n in j.args[2]]
    cfg_json, out = group[0].args[:2]
    return Job(f"{group[0].id}+{len(group) - 1}", group[0].stage, f"{group[0].stage} x{len(nodes)}", run_nodes,
               (cfg_json, out, nodes), members=group)


def run(cfg: ExperimentConfig, out: str | Path, stages: tuple[str, ...] = ("generate", "filter", "finetune",
        "evaluate", "report"), force: tuple[str, ...] = (), batching: bool = True, plan: dict | None = None,
        checks: bool = True, settings: Settings | None = None, executor: Executor | None = None) -> dict:
    """Run ``stages`` (CLI stage names) of the experiment into run directory ``out``. Returns the results (with
    the report stage) or the timings. ``batching=False`` runs every node as its own job (the same artifacts,
    slower: for benchmarks and tests). ``plan``: ``make_plan(cfg)`` when the caller already made it; ``checks=False``:
    the caller ran ``preflight`` already. ``settings``: the runtime settings every job gets (default: the config's,
    with billed API work not approved); ``executor``: what runs the jobs (default: ``local`` with
    ``model.workers`` processes)."""
    out = Path(out)
    plan = plan or make_plan(cfg)
    if checks:
        preflight(cfg, out, stages, plan)
    t0 = time.time()
    g = graph(cfg, out, stages, force, batching, plan)
    settings = settings or Settings.from_config(cfg)
    executor = executor or make_executor("local", workers=min(cfg.model.workers, len(g.jobs)) or 1)
    spans = executor.run(g.jobs, settings, g.on_done, desc="experiment", combine=combine).spans
    # the config of the last command that got this far: `sublearn report RUN` uses it (a failed or killed command,
    # e.g. with a bad --set, leaves the previous one)
    write_atomic(out / "config.json", cfg.model_dump_json(indent=1))
    timings = {stage: round(end - start, 2) for stage, (start, end) in spans.items()}
    if "report" in stages:
        from ..report import write_report

        timings["total"] = time.time() - t0  # up to the report, whose own time cannot be in what it writes
        return write_report(cfg, out, plan, timings)
    timings["total"] = time.time() - t0
    return {"timings_s": timings}

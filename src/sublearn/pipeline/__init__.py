"""The experiment pipeline: config -> teacher -> generate -> filter -> finetune -> evaluate -> report.

``run`` executes the requested stages of the plan in order. Finished artifacts are skipped (their keys
are in the store), ``force`` redoes a stage, and independent jobs of a stage run in parallel worker
processes. Stage commands run one stage and say which command to run first when an input is missing.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

from loguru import logger

from ..config import ExperimentConfig
from ..errors import UserError
from ..progress import bar
from ..store import Store, write_atomic
from .jobs import run_node
from .plan import CLI_STAGES, STAGES, Node, all_nodes, make_plan

__all__ = ["run", "make_plan", "Node", "STAGES", "CLI_STAGES"]


def _ensure_bases(cfg: ExperimentConfig, run: Store, workers: int) -> dict[str, Path]:
    """Resolve (and pre-train if needed, in parallel) the base models; record them in the run's lineage."""
    from ..backends.tiny.build import cache_root
    from ..models import resolve
    from .plan import base_key

    specs = [cfg.model.base] + ([cfg.model.cross] if "cross-model" in cfg.students.conditions else [])
    if cfg.model.backend == "openai":
        from ..backends.openai_api import record_api_bases

        return record_api_bases(cfg, run, specs)
    cache = Store(cache_root())
    todo = [s for s in specs if cfg.model.spec(s) is not None and not cache.exists("base", base_key(cfg, s))]
    if len(todo) > 1 and workers > 1:
        with bar("pre-train bases", len(todo), "models") as advance, _pool(min(workers, len(todo))) as pool:
            futs = [pool.submit(_build_base, s, cfg.model.spec(s), _threads(cfg, len(todo))) for s in todo]
            for f in as_completed(futs):
                f.result()
                advance(1)
    out = {}
    for s in specs:
        path, key = resolve(s, cfg.model.spec(s))
        rec = cache.get(key) if cfg.model.spec(s) is not None else None
        run.record("base", key, name=s, config=rec.config if rec else {"path": str(path)}, model=s,
                   duration_s=rec.duration_s if rec else 0.0, extra=rec.extra if rec else {}, path=path)
        out[s] = path
    return out


def _build_base(name: str, spec, threads: int):
    from ..backends.tiny.build import ensure_embedded
    from ..models import set_threads

    set_threads(threads)
    return ensure_embedded(name, spec)


def _die_with_parent() -> None:
    """On Linux, a killed run (even kill -9) takes its workers with it instead of leaving them computing."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def _worker_init(queue) -> None:
    """In each worker process: bars go to the parent (which draws them), the parent's log level and format."""
    from .. import progress

    if queue is None:
        os.environ["SUBLEARN_PROGRESS"] = "0"
    else:
        progress.forward_to(queue)
    _die_with_parent()
    logger.remove()
    logger.add(sys.stderr, level=os.environ.get("SUBLEARN_LOG_LEVEL", "INFO"), format="<level>{level: <7}</level> {message}")


@contextlib.contextmanager
def _pool(n: int):
    """A spawn pool whose workers' progress bars show in this process's display."""
    from .. import progress

    ctx = get_context("spawn")
    queue = ctx.Queue() if progress.enabled() else None
    with ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_worker_init, initargs=(queue,)) as pool:
        if queue is None:
            yield pool
            return
        with progress.relay(queue):
            yield pool


def _threads(cfg: ExperimentConfig, parallel: int) -> int:
    if cfg.model.threads:
        return cfg.model.threads
    return 1 if parallel > 1 else (os.cpu_count() or 1)


def _execute(cfg: ExperimentConfig, out: Path, stage: str, nodes: list[Node]) -> None:
    if not nodes:
        return
    cfg_json = cfg.model_dump_json()
    n = min(cfg.model.workers, len(nodes))
    with bar(f"{stage}", len(nodes), "jobs") as advance:
        if n <= 1:
            from .. import models

            models.set_threads(_threads(cfg, 1))
            for node in nodes:
                run_node(cfg_json, str(out), node)
                advance(1, info=node.name)
            return
        with _pool(n) as pool:
            futs = {pool.submit(run_node, cfg_json, str(out), node, _threads(cfg, n)): node for node in nodes}
            for f in as_completed(futs):
                f.result()
                advance(1, info=futs[f].name)


def run(cfg: ExperimentConfig, out: str | Path, stages: tuple[str, ...] = ("generate", "filter", "finetune",
        "evaluate", "report"), force: tuple[str, ...] = ()) -> dict:
    """Run ``stages`` (CLI stage names) of the experiment into run directory ``out``. Returns timings."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    store = Store(out)
    write_atomic(out / "config.json", cfg.model_dump_json(indent=1))
    timings: dict[str, float] = {}
    t0 = time.time()
    plan = make_plan(cfg)
    known = all_nodes(plan)
    t = time.time()
    _ensure_bases(cfg, store, cfg.model.workers)
    timings["base"] = time.time() - t
    base_keys = {r.key for r in store.records("base")}
    for cli_stage in [s for s in ("generate", "filter", "finetune", "evaluate") if s in stages]:
        t = time.time()
        for stage in CLI_STAGES[cli_stage]:
            nodes = plan[stage]
            if cli_stage in force:
                for n in nodes:
                    store.remove(n.stage, n.key)
            todo = [n for n in nodes if not store.exists(n.stage, n.key)]
            for n in todo:
                for p in n.parents:
                    if p in base_keys:
                        continue
                    parent = known[p]
                    if not store.exists(parent.stage, p):
                        first = next(c for c, ss in CLI_STAGES.items() if parent.stage in ss)
                        raise UserError(f"{n.name} needs {parent.name}, which has not been made yet in {out}: "
                                        f"run `sublearn {first}` (or `sublearn run`) with the same config first")
            logger.info(f"{stage}: {len(nodes) - len(todo)} of {len(nodes)} artifacts already done, {len(todo)} to do")
            _execute(cfg, out, stage, todo)
        timings[cli_stage] = time.time() - t
    if "report" in stages:
        from ..report import write_report

        t = time.time()
        timings["report"] = 0.0
        timings["total"] = time.time() - t0
        summary = write_report(cfg, out, plan, timings)
        timings["report"] = time.time() - t
        return summary
    timings["total"] = time.time() - t0
    return {"timings_s": timings}

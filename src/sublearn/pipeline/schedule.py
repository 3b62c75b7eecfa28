"""Running jobs as a dependency graph on one pool of worker processes.

A job starts as soon as its own inputs are finished, not when its whole stage is: while one worker trains
a teacher the other already generates the control arm's data, and the cross-model base pre-trains while
the teachers train. Among ready jobs the one with the longest estimated path to the end of the run goes
first, so the critical path never waits behind cheap work. One pool of spawned workers serves the whole
run: each imports torch once and keeps the models it loaded.

Ready jobs of one ``group`` (jobs that can share forward passes, e.g. every student of one base) run as one job,
split into one part per worker so that both cores stay busy; ``combine`` makes one job of several.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context

from loguru import logger

from ..errors import UserError
from ..progress import bar

# rough seconds per job on one core, used only to order ready jobs (longest remaining path first)
COST = {"base": 100.0, "teacher": 30.0, "generate": 20.0, "filter": 2.0, "finetune": 30.0, "evaluate": 2.0}


@dataclass
class Job:
    id: str  # unique: an artifact key
    stage: str
    name: str
    fn: Callable  # picklable (module-level): called as fn(*args, threads)
    args: tuple
    deps: set[str] = field(default_factory=set)  # ids of jobs in the same graph that must finish first
    group: str | None = None  # ready jobs of one group may run as one (see combine)
    members: list[Job] = field(default_factory=list)  # the jobs a combined job stands for


def priorities(jobs: list[Job]) -> dict[str, float]:
    """Estimated cost of the longest path from each job to the end of the graph, the job included."""
    children: dict[str, list[str]] = {j.id: [] for j in jobs}
    for j in jobs:
        for d in j.deps:
            children[d].append(j.id)
    by_id = {j.id: j for j in jobs}
    memo: dict[str, float] = {}

    def path(i: str) -> float:
        if i not in memo:
            memo[i] = COST.get(by_id[i].stage, 1.0) + max((path(c) for c in children[i]), default=0.0)
        return memo[i]

    return {j.id: path(j.id) for j in jobs}


def run_graph(jobs: list[Job], workers: int, threads: int, on_done: Callable[[Job, object], None] | None = None,
              desc: str = "jobs", combine: Callable[[list[Job]], Job] | None = None) -> dict[str, list[float]]:
    """Run every job after its deps; returns the wall span [start, end] of each stage. ``on_done`` is called for
    every job (each member of a combined job) with the result of the job that ran it."""
    if not jobs:
        return {}
    ids = {j.id for j in jobs}
    for j in jobs:
        j.deps &= ids
    prio = priorities(jobs)
    order = {j.id: k for k, j in enumerate(jobs)}
    pending = {j.id: j for j in jobs}
    finished: set[str] = set()
    spans: dict[str, list[float]] = {}

    def ready() -> list[Job]:
        r = [j for j in pending.values() if j.deps <= finished]
        return sorted(r, key=lambda j: (-prio[j.id], order[j.id]))

    def take(parts: int) -> list[Job]:
        """The next jobs to start (at most ``parts``): ready jobs of one group become ``parts`` combined jobs."""
        out: list[Job] = []
        for j in ready():
            if len(out) >= parts or j.id not in pending:
                continue
            same = [x for x in ready() if combine and j.group and x.group == j.group]
            if len(same) < 2:
                out.append(j)
                del pending[j.id]
                continue
            size = -(-len(same) // min(len(same), max(1, n if n > 1 else 1)))
            for k in range(0, len(same), size):
                if len(out) >= parts:
                    break
                chunk = same[k : k + size]
                for x in chunk:
                    del pending[x.id]
                out.append(combine(chunk) if len(chunk) > 1 else chunk[0])
        for j in out:
            spans.setdefault(j.stage, [time.time(), time.time()])
        return out

    def finish(j: Job, result, advance) -> None:
        for m in j.members or [j]:
            finished.add(m.id)
            if on_done is not None:
                on_done(m, result)
        spans[j.stage][1] = time.time()
        advance(len(j.members or [j]), info=j.name)

    n = min(workers, len(jobs))
    with bar(desc, len(jobs), "jobs") as advance:
        if n <= 1:
            from .. import models

            before = models.set_threads(threads)
            try:  # jobs run in this process: its thread count is theirs only while they run
                while pending:
                    for j in take(1 if not combine else len(pending)):
                        finish(j, j.fn(*j.args, 0), advance)
            finally:
                models.set_threads(before)
            return spans
        with _pool(n) as pool:
            running: dict[Future, Job] = {}
            try:
                while pending or running:
                    for j in take(n - len(running)):
                        running[pool.submit(j.fn, *j.args, threads)] = j
                    if not running:
                        raise RuntimeError(f"jobs wait on each other: {', '.join(sorted(pending))}")
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for f in done:
                        finish(running.pop(f), f.result(), advance)
            except BrokenProcessPool:
                pool.shutdown(wait=False, cancel_futures=True)
                raise UserError("a worker process died (killed, or out of memory); finished artifacts are kept: "
                                "re-run the same command to resume") from None
            except BaseException:
                # finished artifacts stay; jobs still running finish theirs; nothing new starts
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    return spans


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

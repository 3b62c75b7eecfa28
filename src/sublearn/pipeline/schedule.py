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
    fn: Callable  # picklable (module-level): called as fn(*args, settings) (runtime.Settings)
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


@dataclass
class Outcome:
    """What running a graph did: each stage's wall span [start, end] and the jobs that failed (id -> error) or were
    left out because a job they need failed (id -> the failed job's name)."""

    spans: dict[str, list[float]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def error_line(e: BaseException) -> str:
    """A failure as one line (a user error as it is, anything else with its type)."""
    msg = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
    return (msg.splitlines() or [type(e).__name__])[0][:500]


def dependents(jobs: list[Job], roots: set[str]) -> set[str]:
    """Every job that needs one of ``roots``, directly or not (the roots left out)."""
    out: set[str] = set()
    frontier = set(roots)
    while frontier:
        frontier = {j.id for j in jobs if j.deps & frontier and j.id not in out and j.id not in roots}
        out |= frontier
    return out


def split(same: list[Job], parts: int) -> list[list[Job]]:
    """Jobs of one batch group in at most ``parts`` chunks of (nearly) equal size, in order: one combined job each."""
    size = -(-len(same) // min(len(same), max(1, parts)))
    return [same[k : k + size] for k in range(0, len(same), size)]


def run_graph(jobs: list[Job], workers: int, settings, on_done: Callable[[Job, object], None] | None = None,
              desc: str = "jobs", combine: Callable[[list[Job]], Job] | None = None,
              keep_going: bool = False) -> Outcome:
    """Run every job after its deps on ``workers`` processes (``settings``: the runtime settings every job gets, as
    its last argument). ``on_done`` is called for every job (each member of a combined job) with the result of the
    job that ran it. ``keep_going``: a failing job is recorded, the jobs that need it are left out, the rest run."""
    result = Outcome()
    if not jobs:
        return result
    ids = {j.id for j in jobs}
    for j in jobs:
        j.deps &= ids
    prio = priorities(jobs)
    order = {j.id: k for k, j in enumerate(jobs)}
    pending = {j.id: j for j in jobs}
    finished: set[str] = set()
    spans = result.spans

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
            for chunk in split(same, n):
                if len(out) >= parts:
                    break
                for x in chunk:
                    del pending[x.id]
                out.append(combine(chunk) if len(chunk) > 1 else chunk[0])
        for j in out:
            spans.setdefault(j.stage, [time.time(), time.time()])
        return out

    def finish(j: Job, res, advance) -> None:
        for m in j.members or [j]:
            finished.add(m.id)
            if on_done is not None:
                on_done(m, res)
        spans[j.stage][1] = time.time()
        advance(len(j.members or [j]), info=j.name)

    def fail(j: Job, e: BaseException, advance) -> None:
        if not keep_going:
            raise e
        members = j.members or [j]
        msg = error_line(e)
        logger.warning(f"{j.name} failed: {msg}")
        for m in members:
            result.failed[m.id] = msg
        left_out = [d for d in dependents(jobs, {m.id for m in members}) if d in pending]
        for d in left_out:
            result.skipped[d] = j.name
            del pending[d]
        advance(len(members) + len(left_out), info=f"{j.name} failed")

    n = min(workers, len(jobs))
    with bar(desc, len(jobs), "jobs") as advance:
        if n <= 1:
            from .. import models

            before = models.set_threads(settings.threads)
            try:  # jobs run in this process: its thread count is theirs only while they run
                while pending:
                    for j in take(1 if not combine else len(pending)):
                        try:
                            res = j.fn(*j.args, settings)
                        except Exception as e:  # noqa: BLE001 - recorded (keep_going) or raised as it is
                            fail(j, e, advance)
                            continue
                        finish(j, res, advance)
            finally:
                models.set_threads(before)
            return result
        with _pool(n) as pool:
            running: dict[Future, Job] = {}
            try:
                while pending or running:
                    for j in take(n - len(running)):
                        running[pool.submit(j.fn, *j.args, settings)] = j
                    if not running:
                        raise RuntimeError(f"jobs wait on each other: {', '.join(sorted(pending))}")
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for f in done:
                        j = running.pop(f)
                        if f.exception() is not None and not isinstance(f.exception(), BrokenProcessPool):
                            fail(j, f.exception(), advance)
                        else:
                            finish(j, f.result(), advance)
            except BrokenProcessPool:
                pool.shutdown(wait=False, cancel_futures=True)
                raise UserError("a worker process died (killed, or out of memory); finished artifacts are kept: "
                                "re-run the same command to resume") from None
            except BaseException:
                # finished artifacts stay; jobs still running finish theirs; nothing new starts
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    return result


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

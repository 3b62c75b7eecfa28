"""The ``ray`` executor (``--executor ray --address auto|ray://HOST:PORT``): every job of the graph is a Ray task.

Ray does the scheduling: each task gets the refs of the jobs it needs as arguments, so Ray starts it when they are
done, on whichever node has its resources free (``num_cpus`` = the job's torch threads; one GPU for pre-training,
teachers, generation and students when the cluster has GPUs). Jobs of one batch group at the same depth of the
graph run as one task per CPU, as they do locally. Artifacts go to the run directory, which every worker must reach
at the same path (a shared file system); the content-keyed store makes two workers writing one artifact harmless
(one writer per artifact, by file lock). ``pip install 'sublearn[ray]'``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable

from loguru import logger

from ..errors import UserError
from ..pipeline.schedule import Job, Outcome, error_line, split
from ..plugins import EXECUTORS

GPU_STAGES = {"base", "teacher", "generate", "finetune"}


def _ray():
    try:
        import ray
    except ModuleNotFoundError:
        raise UserError("--executor ray needs Ray: pip install 'sublearn[ray]'") from None
    return ray


def _task(fn: Callable, args: tuple, settings, env: dict, *deps):
    """One job in a Ray worker: the driver's log level and cache, no progress bars of its own (the driver counts
    jobs); ``deps`` are the results of the jobs it needs, there only so that Ray waits for them."""
    os.environ.update(env)
    logger.remove()
    logger.add(sys.stderr, level=env.get("SUBLEARN_LOG_LEVEL", "INFO"), format="<level>{level: <7}</level> {message}")
    return fn(*args, settings)


def _depths(jobs: list[Job]) -> dict[str, int]:
    by_id = {j.id: j for j in jobs}
    memo: dict[str, int] = {}

    def depth(i: str) -> int:
        if i not in memo:
            memo[i] = 1 + max((depth(d) for d in by_id[i].deps if d in by_id), default=-1)
        return memo[i]

    return {j.id: depth(j.id) for j in jobs}


def combined(jobs: list[Job], parts: int, combine: Callable[[list[Job]], Job] | None) -> list[Job]:
    """Jobs of one batch group at one depth as ``parts`` combined jobs (no cycle can form: every dependency edge
    goes to a greater depth), in dependency order."""
    depth = _depths(jobs)
    out: list[Job] = []
    groups: dict[tuple, list[Job]] = {}
    for j in sorted(jobs, key=lambda j: depth[j.id]):
        if combine is None or j.group is None:
            out.append(j)
        else:
            groups.setdefault((depth[j.id], j.group), []).append(j)
    for (_, _), same in groups.items():
        for chunk in split(same, parts):
            if len(chunk) == 1:
                out.append(chunk[0])
            else:
                c = combine(chunk)
                c.deps = set().union(*(m.deps for m in chunk)) - {m.id for m in chunk}
                out.append(c)
    return sorted(out, key=lambda j: max(depth[m.id] for m in (j.members or [j])))


@EXECUTORS.register("ray")
class RayExecutor:
    """A Ray cluster: ``address`` ``auto`` (the running cluster), ``ray://HOST:PORT`` (Ray Client), ``local`` or None
    (a local instance of ``workers`` CPUs started for this run; an already initialized Ray is used as it is)."""

    name = "ray"
    about = "each job a Ray task: --address auto | ray://HOST:PORT, or a local Ray instance of --workers CPUs"

    def __init__(self, workers: int = 1, address: str | None = None):
        self.workers, self.address = max(1, int(workers)), address
        self._started = False  # this executor started (or connected) Ray: run() shuts it down when done

    def check(self) -> None:
        """Before a command writes anything: Ray must be installed, and a cluster named by ``address`` reachable (a
        local instance starts only when there is a job to run)."""
        ray = _ray()
        if self.address not in (None, "local"):
            self._started = self._connect(ray) or self._started

    def _connect(self, ray) -> bool:
        if ray.is_initialized():
            return False
        logging.getLogger("ray").setLevel(logging.ERROR)  # Ray's start-up notices are not the user's business
        kw: dict = {"logging_level": logging.ERROR, "log_to_driver": True, "include_dashboard": False}
        try:
            if self.address in (None, "local"):
                ray.init(num_cpus=self.workers, **kw)
            else:
                ray.init(address=self.address, **kw)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise UserError(f"--executor ray: cannot reach a Ray cluster at {self.address}: "
                            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        return True

    def run(self, jobs, settings, on_done=None, desc="jobs", combine=None, keep_going=False) -> Outcome:
        from ..backends.tiny.build import cache_root
        from ..progress import bar

        ray = _ray()
        result = Outcome()
        started, self._started = self._started, False
        try:
            if not jobs:
                return result
            started = self._connect(ray) or started
            res = ray.cluster_resources()
            gpus = 1 if res.get("GPU", 0) >= 1 else 0
            parts = max(1, int(res.get("CPU", 1) // max(1, settings.threads)))
            env = {"SUBLEARN_PROGRESS": "0", "SUBLEARN_CACHE": str(cache_root()),
                   "SUBLEARN_LOG_LEVEL": os.environ.get("SUBLEARN_LOG_LEVEL", "INFO")}
            ids = {j.id for j in jobs}
            for j in jobs:
                j.deps &= ids
            task = ray.remote(_task)
            refs: dict[str, object] = {}  # job id (every member's) -> the ref of the task that makes it
            running: dict[object, Job] = {}
            for j in combined(jobs, parts, combine):
                deps = [refs[d] for d in sorted(j.deps)]
                opts = {"num_cpus": settings.threads, "num_gpus": gpus if j.stage in GPU_STAGES else 0,
                        "max_retries": 0, "name": j.name}
                ref = task.options(**opts).remote(j.fn, j.args, settings, env, *deps)
                running[ref] = j
                for m in j.members or [j]:
                    refs[m.id] = ref
            t0 = time.time()
            with bar(desc, len(jobs), "jobs") as advance:
                while running:
                    done, _ = ray.wait(list(running), num_returns=1)
                    j = running.pop(done[0])
                    members = j.members or [j]
                    try:
                        out = ray.get(done[0])
                    except Exception as e:  # noqa: BLE001 - a task's error, unwrapped to its cause
                        cause = getattr(e, "cause", None) or e
                        if not keep_going:
                            for r in running:
                                ray.cancel(r)
                            if isinstance(cause, UserError):
                                raise UserError(str(cause)) from None
                            raise UserError(f"{j.name} failed on Ray: {error_line(cause)}") from None
                        msg = error_line(cause)
                        failed_dep = next((d for d in sorted(j.deps) if d in result.failed or d in result.skipped), None)
                        for m in members:
                            if failed_dep:
                                result.skipped[m.id] = failed_dep
                            else:
                                result.failed[m.id] = msg
                        if not failed_dep:
                            logger.warning(f"{j.name} failed: {msg}")
                        advance(len(members), info=f"{j.name} failed")
                        continue
                    for m in members:
                        if on_done is not None:
                            on_done(m, out)
                    result.spans.setdefault(j.stage, [t0, t0])[1] = time.time()  # Ray decides when a job starts
                    advance(len(members), info=j.name)
        finally:
            if started:
                ray.shutdown()
        return result

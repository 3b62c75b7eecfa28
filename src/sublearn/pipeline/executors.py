"""Executors: what runs a job graph. ``local`` (the default) runs it on this machine's pool of worker processes
(``schedule.run_graph``); ``ray`` (``backends/ray_exec.py``) hands every job to a Ray cluster as a task. Both run the
same job functions with the same runtime settings, so they make the same artifacts.

An executor is a plug-in registered in ``plugins.EXECUTORS``: a class built from its options (``address``,
``workers``...) with one method, ``run(jobs, settings, on_done, desc, combine, keep_going) -> Outcome``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..errors import UserError
from ..plugins import EXECUTORS
from .schedule import Job, Outcome, run_graph


class Executor(Protocol):
    name: str

    def check(self) -> None:
        """Fail now, in one line, if the executor cannot run anything (before a command writes anything)."""

    def run(self, jobs: list[Job], settings, on_done: Callable[[Job, object], None] | None = None,
            desc: str = "jobs", combine: Callable[[list[Job]], Job] | None = None,
            keep_going: bool = False) -> Outcome: ...


@EXECUTORS.register("local")
class LocalExecutor:
    """This machine: ``workers`` spawned processes (1: inline in this process)."""

    name = "local"
    about = "this machine: --workers spawned processes (1: inline in this process)"

    def __init__(self, workers: int = 1, address: str | None = None):
        if address:
            raise UserError("--address is for --executor ray (the local executor runs on this machine)")
        self.workers = max(1, int(workers))

    def check(self) -> None:
        pass

    def run(self, jobs, settings, on_done=None, desc="jobs", combine=None, keep_going=False) -> Outcome:
        n = self.workers
        if settings.backend == "vllm" and n > 1:  # each worker's engine would reserve its own share of the GPU
            from loguru import logger

            logger.info(f"model.backend = 'vllm': jobs run one at a time in one process ({n} workers ignored)")
            n = 1
        return run_graph(jobs, n, settings, on_done, desc=desc, combine=combine, keep_going=keep_going)


def make_executor(name: str | None, workers: int = 1, address: str | None = None) -> Executor:
    """The executor ``name`` (None: local) with its options; an unknown name is a one-line error."""
    try:
        cls = EXECUTORS.get(name or "local")
    except ValueError as e:
        raise UserError(str(e)) from None
    return cls(workers=workers, address=address)

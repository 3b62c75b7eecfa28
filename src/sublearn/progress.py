"""Rich progress bars for long work (shown on a terminal; SUBLEARN_PROGRESS=1 forces them on, =0 off).

Bars nest: a bar opened while another is showing joins the same display. Worker processes do not draw;
they send their bars' events to the parent through a queue (``forward_to``), and the parent shows them
under its own bars (``relay``), so a long generation in a worker still shows its rate and ETA.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import threading
from collections.abc import Iterator

_ACTIVE = None  # the rich Progress currently on screen in this process
_SINK = None  # in a worker: the parent's event queue
_IDS = itertools.count()


def enabled() -> bool:
    """Are bars drawn in this process (a terminal, or SUBLEARN_PROGRESS=1)?"""
    env = os.environ.get("SUBLEARN_PROGRESS")
    return env == "1" or (env != "0" and sys.stderr.isatty())


def _progress():
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    cols = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    return Progress(*cols, transient=False)


@contextlib.contextmanager
def bar(desc: str, total: int, unit: str = "it") -> Iterator:
    """Yield ``advance(n=1, info=None)``; shows rate and ETA."""
    global _ACTIVE
    if _SINK is not None:
        key = (os.getpid(), next(_IDS))
        _SINK.put(("start", key, desc, total, unit))
        try:
            yield lambda n=1, info=None: _SINK.put(("advance", key, n, info))
        finally:
            _SINK.put(("end", key))
        return
    if not enabled():
        yield lambda n=1, info=None: None
        return
    own = _ACTIVE is None
    prog = _progress() if own else _ACTIVE
    if own:
        prog.start()
        _ACTIVE = prog
    task = prog.add_task(desc, total=total, info=unit)
    try:
        yield lambda n=1, info=None: prog.update(task, advance=n, **({"info": info} if info is not None else {}))
    finally:
        if own:
            prog.stop()
            _ACTIVE = None
        else:
            prog.remove_task(task)


def forward_to(queue) -> None:
    """In a worker process: send every bar's events to the parent (see ``relay``)."""
    global _SINK
    _SINK = queue


@contextlib.contextmanager
def relay(queue) -> Iterator[None]:
    """In the parent: show the bars that workers send through ``queue`` inside the current display."""

    def pump() -> None:
        tasks: dict = {}
        while True:
            ev = queue.get()
            if ev is None:
                return
            prog = _ACTIVE
            if prog is None:
                continue
            kind, key = ev[0], ev[1]
            if kind == "start":
                tasks[key] = prog.add_task(ev[2], total=ev[3], info=ev[4])
            elif kind == "advance" and key in tasks:
                prog.update(tasks[key], advance=ev[2], **({"info": ev[3]} if ev[3] is not None else {}))
            elif kind == "end" and key in tasks:
                prog.remove_task(tasks.pop(key))

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    try:
        yield
    finally:
        queue.put(None)
        t.join(timeout=5)

"""Rich progress bars for long work (shown on a terminal; SUBLEARN_PROGRESS=1 forces them on, =0 off)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def bar(desc: str, total: int, unit: str = "it") -> Iterator:
    """Yield ``advance(n=1, **fields)``; shows rate and ETA."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    env = os.environ.get("SUBLEARN_PROGRESS")
    show = env == "1" or (env != "0" and sys.stderr.isatty())
    cols = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*cols, disable=not show, transient=False) as prog:
        task = prog.add_task(desc, total=total, info=unit)

        def advance(n: int = 1, info: str | None = None) -> None:
            prog.update(task, advance=n, **({"info": info} if info is not None else {}))

        yield advance

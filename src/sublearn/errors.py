"""User-facing errors: one line, exit code 2, never a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input (config, file, flag). The CLI prints it on one line and exits 2."""


def one_line(msg: str) -> str:
    return " ".join(str(msg).split())

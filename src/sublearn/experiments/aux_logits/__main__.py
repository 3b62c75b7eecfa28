"""``python -m sublearn.experiments.aux_logits --out DIR``: the command without the main CLI."""

from __future__ import annotations

import argparse
import sys

from ...errors import UserError, one_line
from .cli import add_parser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sublearn")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["aux-logits", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except UserError as e:
        sys.stderr.write(f"error: {one_line(str(e))}\n")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

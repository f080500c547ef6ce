"""`python -m reproduce` / `oslsm-reproduce`: one subcommand per module in reproduce.commands."""
from __future__ import annotations

import argparse
import importlib
import sys

from reproduce.errors import ReproduceError
from weights_convert.errors import CaffeFormatError

# Each module defines NAME, HELP, add_arguments(parser) and run(args) -> int.
COMMAND_MODULES = [
    "evaluate", "table", "table_run", "demo", "episodes", "inputs",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reproduce", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        mod = importlib.import_module(f"reproduce.commands.{name}")
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (ReproduceError, CaffeFormatError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

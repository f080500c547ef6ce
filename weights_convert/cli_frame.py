"""The frame both command-line tools share: one subcommand per module, errors as one line."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from weights_convert.errors import Interrupted


def build_parser(prog: str, description: str | None, package: str, modules: Sequence[str]) -> argparse.ArgumentParser:
    """Each module `package.<name>` defines NAME, HELP, add_arguments(parser) and run(args) -> int."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in modules:
        mod = importlib.import_module(f"{package}.{name}")
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None,
                expected: tuple[type[BaseException], ...]) -> int:
    """Run the chosen subcommand; an expected error (bad input) becomes `error: ...` and exit 2,
    a requested stop (Interrupted) its message and exit 130."""
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except expected as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(exc, file=sys.stderr)
        return 130

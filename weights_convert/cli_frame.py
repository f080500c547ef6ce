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
    """Run the chosen subcommand; an expected error (bad input) or an operating-system error
    (permission, disk full, a file where a folder should be) becomes one `error: ...` line and
    exit 2; a requested stop (Interrupted, Ctrl-C) its message and exit 130. No traceback."""
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except expected as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(exc, file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted; what was finished is saved, and running the same command again resumes it",
              file=sys.stderr)
        return 130


def describe_os_error(exc: OSError) -> str:
    """'<path>: <reason>', whatever raised it; for a failed rename the destination (the user's
    path, not our temporary file)."""
    reason = exc.strerror or str(exc)
    path = exc.filename2 if exc.filename2 is not None else exc.filename
    return f"{path}: {reason}" if path is not None else reason

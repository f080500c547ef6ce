"""The frame both command-line tools share: one subcommand per module, errors as one line."""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys
import traceback
from typing import Sequence

from weights_convert.errors import Interrupted


def build_parser(prog: str, description: str | None, package: str, modules: Sequence[str]) -> argparse.ArgumentParser:
    """Each module `package.<name>` defines NAME, HELP, add_arguments(parser) and run(args) -> int.
    Options before the command: --version, --quiet (no progress output), --verbose (a traceback
    after an error message, for bug reports)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"%(prog)s {kit_version()}")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-q", "--quiet", action="store_true", help="no progress output (results and warnings only)")
    loudness.add_argument("-v", "--verbose", action="store_true", help="show the traceback behind an error message")
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
    if args.quiet and hasattr(args, "no_progress"):
        args.no_progress = True
    try:
        return int(args._run(args) or 0)
    except expected as exc:
        _explain(args, f"error: {exc}")
        return 2
    except OSError as exc:
        _explain(args, f"error: {describe_os_error(exc)}")
        return 2
    except Interrupted as exc:
        print(exc, file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted; what was finished is saved, and running the same command again resumes it",
              file=sys.stderr)
        return 130


def _explain(args, message: str) -> None:
    if args.verbose:
        traceback.print_exc()
    print(message, file=sys.stderr)


def kit_version() -> str:
    try:
        return importlib.metadata.version("oslsm-repro")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed; run `make install`)"


def describe_os_error(exc: OSError) -> str:
    """'<path>: <reason>', whatever raised it; for a failed rename the destination (the user's
    path, not our temporary file)."""
    reason = exc.strerror or str(exc)
    path = exc.filename2 if exc.filename2 is not None else exc.filename
    return f"{path}: {reason}" if path is not None else reason

"""The frame both command-line tools share: one subcommand per module, errors as one line."""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import sys
import tempfile
import traceback
from typing import Sequence

from weights_convert.runtime.devices import DeviceError, checked_device
from weights_convert.errors import Interrupted
from weights_convert.runtime.stop_signals import exit_status, sigterm_as_interrupt


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
        own = getattr(mod, "is_own_output", None)
        if own is not None:
            p.add_argument("--force", action="store_true",
                           help="replace an existing --out file that is not of the kind this command writes")
        # A command that reports every problem at once checks its --device among them (the same check).
        p.set_defaults(_run=mod.run, _is_own_output=own, _own_device_check=getattr(mod, "DEVICE_IN_PROBLEMS", False),
                       _out_is_folder=getattr(mod, "OUT_IS_FOLDER", False),
                       _owned_outputs=getattr(mod, "OWNED_OUTPUTS", ("out",)))
    return parser


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None,
                expected: tuple[type[BaseException], ...]) -> int:
    """Run the chosen subcommand; an expected error (bad input) or an operating-system error
    (permission, disk full, a file where a folder should be) becomes one `error: ...` line and
    exit 2; a requested stop (Interrupted, Ctrl-C, SIGTERM) its message and exit 130, or 143 after
    SIGTERM. No traceback."""
    args = parser.parse_args(argv)
    if args.quiet and hasattr(args, "no_progress"):
        args.no_progress = True
    try:
        with sigterm_as_interrupt():
            # Every command, before it creates anything.
            refuse_outputs_that_are_inputs(args)
            refuse_foreign_out_file(args)
            refuse_unusable_out_folder(args)
            if getattr(args, "device", None) is not None and not args._own_device_check:
                args.device = checked_device(args.device)
            return int(args._run(args) or 0)
    except (*expected, DeviceError, OutputIsInput, MemoryError) as exc:
        _explain(args, f"error: {exc or 'out of memory'}")
        return 2
    except OSError as exc:
        _explain(args, f"error: {describe_os_error(exc)}")
        return 2
    except Interrupted as exc:
        print(exc, file=sys.stderr)
        return exit_status()
    except KeyboardInterrupt:
        print("interrupted; what was finished is saved, and running the same command again resumes it",
              file=sys.stderr)
        return exit_status()


OUTPUT_OPTIONS = ("out", "report", "onnx")


class OutputIsInput(ValueError):
    """An output option names a file that the command reads, or one it did not write."""


def refuse_outputs_that_are_inputs(args: argparse.Namespace) -> None:
    """An output (--out, --report) that is the same file as any other argument would be replaced
    by what the command writes: refused, whatever the command."""
    inputs = {}
    for option, value in vars(args).items():
        if option in OUTPUT_OPTIONS or option.startswith("_"):
            continue
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, (str, os.PathLike)) and os.path.isfile(item):
                inputs[os.path.realpath(item)] = option
    for option in OUTPUT_OPTIONS:
        out = getattr(args, option, None)
        if isinstance(out, (str, os.PathLike)) and os.path.realpath(out) in inputs:
            flag = "--" + inputs[os.path.realpath(out)].replace("_", "-")
            raise OutputIsInput(f"--{option} {out} is the file given as {flag}; writing it would destroy an "
                                f"input: name another output file")


def refuse_foreign_out_file(args: argparse.Namespace) -> None:
    """A command that writes files (module attribute `is_own_output(path) -> bool`; OWNED_OUTPUTS
    names its output options, by default --out) replaces an existing one only when it is of the
    kind the command writes, or with --force."""
    own = getattr(args, "_is_own_output", None)
    if own is None or getattr(args, "force", False):
        return
    for option in getattr(args, "_owned_outputs", ("out",)):
        out = getattr(args, option, None)
        if out is None or not os.path.exists(out):
            continue
        if os.path.isdir(out):
            raise OutputIsInput(f"{out} is a folder; --{option} expects a file name")
        if not own(out):
            raise OutputIsInput(f"--{option} {out} exists and is not a file of the kind this command writes; it is "
                                "left alone: name another file, or pass --force to replace it")


def refuse_unusable_out_folder(args: argparse.Namespace) -> None:
    """A command whose --out is a folder (module attribute OUT_IS_FOLDER) learns before its work,
    not after it, that the folder is a file or cannot be written."""
    out = getattr(args, "out", None)
    if not getattr(args, "_out_is_folder", False) or not out:
        return
    if os.path.exists(out) and not os.path.isdir(out):
        raise OutputIsInput(f"--out {out} is a file; expected a folder")
    existing = os.path.abspath(out)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    try:  # a real write, not access(): root passes access() on read-only trees such as /proc
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as exc:
        raise OutputIsInput(f"--out {out}: {existing} cannot be written ({exc.strerror})") from None


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

"""`python -m weights_convert` / `oslsm-convert`: one subcommand per module in weights_convert.commands."""
from __future__ import annotations

from weights_convert.cli_frame import build_parser as _build_parser
from weights_convert.cli_frame import run_command
from weights_convert.errors import CaffeFormatError

COMMAND_MODULES = ["convert", "forward", "verify", "export", "netspec", "train", "gradients", "selfcheck"]


def build_parser():
    return _build_parser("python -m weights_convert", __doc__, "weights_convert.commands", COMMAND_MODULES)


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv, (CaffeFormatError,))

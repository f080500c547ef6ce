"""`python -m reproduce` / `oslsm-reproduce`: one subcommand per module in reproduce.commands."""
from __future__ import annotations

from reproduce.errors import ReproduceError
from weights_convert.cli_frame import build_parser as _build_parser
from weights_convert.cli_frame import run_command
from weights_convert.errors import CaffeFormatError

COMMAND_MODULES = ["convert_folds", "evaluate", "table", "table_run", "demo", "episodes", "inputs", "train_episodes",
                   "sbd_to_voc", "make_init", "train", "train_base", "train_all", "figure", "report", "check_voc"]


def build_parser():
    return _build_parser("python -m reproduce", __doc__, "reproduce.commands", COMMAND_MODULES)


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv, (ReproduceError, CaffeFormatError))

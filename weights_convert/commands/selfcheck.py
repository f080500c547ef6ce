"""`selfcheck`: prove this machine's device against the real Caffe's outputs, then time it."""
from __future__ import annotations

NAME = "selfcheck"
OUT_IS_FOLDER = True
HELP = ("run the real-Caffe golden cases on a device with the test suite's tolerances (every layer case, "
        "the thin OSLSM nets through the graph and the module, a training pass, Caffe's SGD solver, a "
        "solverstate round trip), then time the full-size work there; exit 0 only when every case passes. "
        "The golden data (98 MB) is read from the checkout's tests/ folder, or from --golden")


def add_arguments(parser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (the first command a GPU user runs)")
    parser.add_argument("--quick", action="store_true", help="the golden cases only: no full-size timings")
    parser.add_argument("--golden", help="folder holding golden/ and golden_train/ (default: the checkout's tests/)")
    parser.add_argument("--out", help="folder for selfcheck.json (default: print only)")


def run(args) -> int:
    from pathlib import Path

    from weights_convert.checks.selfcheck import run_selfcheck, table_lines, write_record

    record = run_selfcheck(args.device, golden=args.golden, timings=not args.quick)
    print("\n".join(table_lines(record)))
    if args.out:
        print(f"wrote {write_record(record, Path(args.out))}")
    return 0 if record["passed"] else 1

"""`table`: the paper's Table 1 or 2 beside finished runs (Markdown, CSV, PNG)."""
from __future__ import annotations

NAME = "table"
HELP = "write table1_1shot.* or table2_5shot.* (paper vs ours) from evaluate run directories"


def add_arguments(parser) -> None:
    parser.add_argument("--table", type=int, required=True, choices=(1, 2), help="1: 1-shot, 2: 5-shot")
    parser.add_argument("--runs", nargs="+", required=True, metavar="RUN_DIR", help="one run per fold")
    parser.add_argument("--out", default="results", help="output folder (default results/)")


def run(args) -> int:
    from reproduce.presentation.tables import write_table

    paths = write_table(args.table, args.runs, args.out)
    print(paths["md"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0

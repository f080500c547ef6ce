"""`report`: a static HTML report of finished runs (scores beside the paper, charts, episode panels)."""
from __future__ import annotations

NAME = "report"
HELP = "HTML pages of finished runs: mIoU vs the paper, per-class and per-episode charts, best/median/worst panels"


def add_arguments(parser) -> None:
    parser.add_argument("--run", nargs="+", required=True, metavar="RUN_DIR", help="finished evaluate run folders")
    parser.add_argument("--title", default="OSLSM runs")
    parser.add_argument("--voc", help="VOC2012 folder (default: the one each run used)")
    parser.add_argument("--device", default="cpu", help="for predictions a run did not save")
    parser.add_argument("--out", required=True, help="folder for index.html, one page per run and its images")


def run(args) -> int:
    from reproduce.presentation.report import write_report

    index = write_report(args.run, args.out, title=args.title, voc=args.voc, device=args.device)
    print(f"wrote {index}")
    return 0

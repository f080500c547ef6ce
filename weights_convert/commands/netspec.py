"""`netspec`: write the OSLSM deploy prototxts (1-shot and 5-shot) from our net-spec code."""
from __future__ import annotations

from pathlib import Path

from weights_convert.netspec import write_net
from weights_convert.oslsm.layout import OSLSMWidths
from weights_convert.oslsm.spec import oslsm_deploy_net

NAME = "netspec"
HELP = "write deploy_1shot.prototxt and deploy_5shot.prototxt (the authors' OSLSM deploy nets)"
WIDTHS = {"full": OSLSMWidths.FULL, "thin": OSLSMWidths.THIN}


def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--widths", choices=sorted(WIDTHS), default="full",
                        help="full: VGG-16 (the authors' nets); thin: the small test widths")
    parser.add_argument("--query-hw", type=int, nargs=2, default=(500, 500), metavar=("H", "W"),
                        help="query image size in the Input layer (default 500 500)")


def run(args) -> int:
    out = Path(args.out)
    for shots in (1, 5):
        path = out / f"deploy_{shots}shot.prototxt"
        write_net(oslsm_deploy_net(shots, WIDTHS[args.widths], tuple(args.query_hw)), path)
        print(f"wrote {path}")
    return 0

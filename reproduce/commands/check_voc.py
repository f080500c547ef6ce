"""`check-voc`: before a long run, does this VOC 2012 give the original's episode lists?"""
from __future__ import annotations

from reproduce.evaluation.protocols import DATA, add_protocol_arguments

NAME = "check-voc"
HELP = ("check a VOC 2012 folder: layout, masks, and the 8 episode lists against the ones the original "
        "printed on the real VOC 2012 (exit 0 only when all are identical)")


def add_arguments(parser) -> None:
    parser.add_argument("--voc", required=True, help="VOC2012 folder (JPEGImages, SegmentationClass, ImageSets)")
    parser.add_argument("--cache-dir", help="item cache folder (default $OSLSM_CACHE or ~/.cache/oslsm-repro)")
    add_protocol_arguments(parser, DATA, extra_help="; original and modern: the 8 episode lists; hsnet: every "
                           "item of HSNet's split files has its image and SegmentationClassAug mask")


def run(args) -> int:
    from reproduce.errors import raise_problems
    from reproduce.evaluation.protocols import protocol_from_args

    protocol, problems = protocol_from_args(args, DATA)
    raise_problems(problems)
    lines, identical = protocol.check_data(args.voc, args.cache_dir)
    print("\n".join(lines))
    return 0 if identical else 1

"""`check-voc`: before a long run, does this VOC 2012 give the original's episode lists?"""
from __future__ import annotations

from reproduce.cli_arguments import add_hsnet_arguments

NAME = "check-voc"
HELP = ("check a VOC 2012 folder: layout, masks, and the 8 episode lists against the ones the original "
        "printed on the real VOC 2012 (exit 0 only when all are identical)")


def add_arguments(parser) -> None:
    parser.add_argument("--voc", required=True, help="VOC2012 folder (JPEGImages, SegmentationClass, ImageSets)")
    parser.add_argument("--cache-dir", help="item cache folder (default $OSLSM_CACHE or ~/.cache/oslsm-repro)")
    parser.add_argument("--protocol", choices=("original", "hsnet"), default="original",
                        help="original: the 8 episode lists (default); hsnet: every item of HSNet's split files "
                             "has its image and SegmentationClassAug mask")
    add_hsnet_arguments(parser, size=False)


def run(args) -> int:
    from reproduce.data.check_voc import check_hsnet, check_voc
    from reproduce.errors import raise_problems
    from reproduce.evaluation.eval_config import hsnet_problems

    if args.protocol == "hsnet":
        print("\n".join(check_hsnet(args.voc, args.masks, args.hsnet_splits)))
        return 0
    raise_problems(hsnet_problems(args.protocol, [], masks=args.masks, hsnet_splits=args.hsnet_splits))
    result = check_voc(args.voc, cache_dir=args.cache_dir)
    for check in result.lists:
        print(check.line())
    for line in result.diagnosis:
        print(line)
    print("all 8 lists are the original's" if result.identical else
          "this data set does not give the original's episodes (see above)")
    return 0 if result.identical else 1

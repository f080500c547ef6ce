"""`sbd-to-voc`: SBD's .mat annotations as the VOC-layout folder the training data layer reads."""
from __future__ import annotations

from reproduce.errors import collect, raise_problems
from reproduce.numeric_options import numeric_problems
from reproduce.data.sbd import DEFAULT_LISTS, convert_sbd
from reproduce.data.voc import VOCDataset, refuse_inside_dataset

NAME = "sbd-to-voc"
HELP = "convert SBD (benchmark_RELEASE/dataset) to the VOC layout, without VOC 2012 val images"


def add_arguments(parser) -> None:
    parser.add_argument("--sbd", required=True, help="SBD's benchmark_RELEASE/dataset folder (never written)")
    parser.add_argument("--voc", help="VOC2012 folder: its val images (the test images) are left out")
    parser.add_argument("--lists", default=",".join(DEFAULT_LISTS),
                        help="SBD lists to include, in order (default: train,val)")
    parser.add_argument("--include-voc-val", action="store_true",
                        help="keep images of VOC 2012 val (leaks test images into training; not recommended)")
    parser.add_argument("--copy", action="store_true", help="copy the JPEGs instead of linking them")
    parser.add_argument("--workers", type=int, default=2, help="conversion threads")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--out", required=True, help="new folder to write (must not exist)")


def run(args) -> int:
    lists = [name for name in args.lists.split(",") if name]
    problems = numeric_problems(args, ("workers",))
    if not args.voc and not args.include_voc_val:
        problems.append("give --voc (the VOC2012 folder) so that its val images, PASCAL-5i's test images, "
                        "are left out of the training set; or --include-voc-val to keep them knowingly")
    voc = collect(problems, VOCDataset, args.voc) if args.voc else None
    if voc is not None:  # (convert_sbd refuses an --out inside SBD itself)
        collect(problems, refuse_inside_dataset, args.out, voc.root, "--out")
    raise_problems(problems)
    exclude = set(voc.names) if voc is not None else set()
    n = convert_sbd(args.sbd, args.out, lists, exclude, args.copy, args.workers, not args.no_progress)
    print(f"wrote {n} images ({'+'.join(lists)}"
          + (f", without {len(exclude)} VOC 2012 val names" if exclude else "") + f") to {args.out}")
    return 0

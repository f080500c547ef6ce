"""`convert-folds`: find the authors' four fold models and convert each to the OSLSM form.

Backs `make convert`. Resumable: a fold whose output already records the same source
sha256 is skipped.
"""
from __future__ import annotations

from reproduce.workflows.fold_models import PROJECT_PROTOTXT, convert_fold_models
from reproduce.data.pascal5i import FOLDS

NAME = "convert-folds"
HELP = "convert the four PASCAL-5i fold models (names containing fold0..fold3) to results/models/fold{F}.safetensors"


def add_arguments(parser) -> None:
    parser.add_argument("--models", help="directory holding the fold models (names containing fold0..fold3)")
    for fold in FOLDS:
        parser.add_argument(f"--fold{fold}", metavar="FILE", help=f"fold {fold}'s model (overrides --models)")
    parser.add_argument("--out", required=True, help="output directory (fold{F}.safetensors, fold{F}.report.json)")
    parser.add_argument("--prototxt", default=str(PROJECT_PROTOTXT),
                        help="OSLSM deploy net the models are checked against (default: the project's "
                             "prototxt/deploy_1shot.prototxt)")


def run(args) -> int:
    convert_fold_models(args.models, {f: getattr(args, f"fold{f}") for f in FOLDS}, args.prototxt, args.out)
    return 0

"""`convert`: a Caffe model (prototxt + weights) -> our .safetensors and a JSON report."""
from __future__ import annotations

from weights_convert.convert import MODEL_FORMS, convert, warn_nonfinite
from weights_convert.errors import CaffeFormatError

NAME = "convert"
HELP = "convert Caffe weights (.caffemodel / .caffemodel.h5) checked against a prototxt into .safetensors"


def add_arguments(parser) -> None:
    parser.add_argument("--prototxt", required=True, help="deploy net the weights belong to")
    parser.add_argument("--caffemodel", required=True, help=".caffemodel or .caffemodel.h5")
    parser.add_argument("--out", required=True, help="output .safetensors")
    parser.add_argument("--model", choices=MODEL_FORMS, default="graph",
                        help="graph: every blob as <layer>/<index>; oslsm: the OSLSM PyTorch module's state")
    parser.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                        help="recorded in the file's metadata and the report (e.g. fold=2); repeatable")
    parser.add_argument("--report", help="write the conversion report (JSON) here")
    parser.add_argument("--force", action="store_true", help="replace an existing --out file that is not a "
                        "conversion of ours (refused without it)")


def parse_labels(items: list[str]) -> dict[str, str]:
    labels = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CaffeFormatError(f"--label {item!r}: expected KEY=VALUE")
        labels[key] = value
    return labels


def run(args) -> int:
    report = convert(args.prototxt, args.caffemodel, args.out, model=args.model, labels=parse_labels(args.label),
                     report=args.report, force=args.force)
    warn_nonfinite(report)
    hashing = report["hashing"]
    found = ", ".join(f"{k} {v['form']}" + (f" ({v['size_ratio']:.0f}x smaller)" if v["form"] == "hashing" else "")
                      for k, v in hashing["layers"].items()) or "no rw1s/rb1s"
    print(f"wrote {report['output']} ({report['output_bytes']:,} bytes, {report['tensors_written']} tensors, "
          f"{report['param_count']:,} parameters, model={report['model']}); hashing: {found}; "
          f"{report['timings']['total_s']:.2f} s")
    return 0

"""`verify`: run a net on a golden file's inputs and compare every blob with the golden values."""
from __future__ import annotations

import numpy as np

from weights_convert.artifacts import is_artifact, load_artifact
from weights_convert.errors import CaffeFormatError
from weights_convert.forward_pass import input_names, load_npz, run_graph, split_copies

NAME = "verify"
HELP = ("compare every blob of a forward pass with golden blobs (.npz); non-zero exit beyond tolerance. With an "
        "exported .pt2 or .onnx as --weights, the artifact runs alone (torch.export.load / onnxruntime, not "
        "this kit's graph) and its outputs are compared")
SCALAR_RTOL = 2e-4  # scalar losses sum many terms, so they get a relative tolerance


def add_arguments(parser) -> None:
    parser.add_argument("--prototxt", help="the net (not needed for an exported .pt2 / .onnx)")
    parser.add_argument("--weights", help=".caffemodel, .caffemodel.h5 or our .safetensors (omit only for a net "
                        "without learnable layers), or an exported .pt2 / .onnx")
    parser.add_argument("--golden", required=True, help=".npz of reference blobs (inputs included)")
    parser.add_argument("--tol", type=float, default=5e-5,
                        help="allowed max |diff| per blob, times max(1, max|ref|) (default 5e-5)")
    parser.add_argument("--allow-partial", action="store_true",
                        help="pass even when the golden file lacks blobs the net computes (they are listed)")


def tolerance(ref: np.ndarray, tol: float) -> float:
    scale = max(1.0, float(np.abs(ref).max())) if ref.size else 1.0
    return (SCALAR_RTOL if ref.ndim == 0 else tol) * scale


def compare(blobs: dict[str, np.ndarray], golden: dict[str, np.ndarray], tol: float,
            skip: set[str] = frozenset()) -> list[dict]:
    """One row per golden blob that is not an input: shape, max abs diff, tolerance, ok."""
    rows = []
    for name, ref in golden.items():
        if name in skip:
            continue
        row = {"blob": name, "shape": tuple(ref.shape)}
        if name not in blobs:
            rows.append({**row, "diff": float("inf"), "tol": tolerance(ref, tol), "ok": False, "note": "not computed"})
            continue
        got = blobs[name]
        if tuple(got.shape) != tuple(ref.shape):
            rows.append({**row, "diff": float("inf"), "tol": tolerance(ref, tol), "ok": False,
                         "note": f"shape {tuple(got.shape)}"})
            continue
        diff = float(np.abs(got.astype(np.float64) - ref.astype(np.float64)).max()) if ref.size else 0.0
        limit = tolerance(ref, tol)
        rows.append({**row, "diff": diff, "tol": limit, "ok": bool(diff <= limit), "note": ""})
    return rows


def run(args) -> int:
    golden = load_npz(args.golden)
    if args.weights is not None and is_artifact(args.weights):
        return _verify_artifact(args, golden)
    if args.prototxt is None:
        raise CaffeFormatError("--prototxt is needed unless --weights is an exported .pt2 / .onnx")
    inputs = set(input_names(args.prototxt))
    blobs = run_graph(args.prototxt, args.weights, golden, source=args.golden)
    rows = compare(blobs, golden, args.tol, skip=inputs)
    _print_rows(rows)
    failed = [r["blob"] for r in rows if not r["ok"]]
    not_compared = sorted(set(blobs) - set(golden) - inputs - split_copies(args.prototxt))
    if not_compared:
        print(f"NOT COMPARED: the golden file has no values for {len(not_compared)} blob(s) the net computes: "
              f"{', '.join(not_compared)}")
    if failed:
        print(f"FAILED: {len(failed)} of {len(rows)} blobs beyond tolerance: {', '.join(failed)}")
        return 1
    if not rows:
        print("FAILED: nothing was compared (the golden file holds only the net's inputs)")
        return 1
    if not_compared and not args.allow_partial:
        print(f"FAILED: {len(rows)} blobs within tolerance, but {len(not_compared)} were not compared; "
              "pass --allow-partial to accept a golden file that covers only part of the net")
        return 1
    print(f"all {len(rows)} compared blobs within tolerance"
          + (f" ({len(not_compared)} not compared, --allow-partial)" if not_compared else ""))
    return 0


def _print_rows(rows: list[dict]) -> None:
    width = max([len(r["blob"]) for r in rows] + [4])
    print(f"{'blob':<{width}}  {'shape':<20} {'max|diff|':>11} {'tolerance':>11}  ok")
    for r in rows:
        print(f"{r['blob']:<{width}}  {str(r['shape']):<20} {r['diff']:>11.3g} {r['tol']:>11.3g}  "
              f"{'ok' if r['ok'] else 'FAIL'} {r['note']}".rstrip())


def _verify_artifact(args, golden: dict[str, np.ndarray]) -> int:
    """The artifact's outputs that the golden file holds; its inputs come from the golden file."""
    artifact = load_artifact(args.weights)
    outputs = artifact.run(golden)
    compared = {name: ref for name, ref in golden.items() if name in outputs}
    rows = compare(outputs, compared, args.tol)
    if rows:
        _print_rows(rows)
    missing = [name for name in artifact.outputs if name not in golden]
    if missing:
        print(f"NOT COMPARED: the golden file has no values for output(s) {', '.join(missing)}")
    failed = [r["blob"] for r in rows if not r["ok"]]
    if failed or not rows:
        print(f"FAILED: {len(failed)} of {len(rows)} outputs beyond tolerance: {', '.join(failed)}" if rows else
              "FAILED: the golden file holds none of the artifact's outputs")
        return 1
    print(f"all {len(rows)} outputs of {args.weights} within tolerance (run by "
          f"{'onnxruntime' if args.weights.lower().endswith('.onnx') else 'torch.export.load'})")
    return 0

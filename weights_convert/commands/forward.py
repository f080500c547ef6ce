"""`forward`: run a Caffe net with the Caffe-exact graph interpreter and save every blob."""
from __future__ import annotations

from weights_convert.files.own_outputs import is_npz

from weights_convert.forward_pass import episode_arrays, load_npz, run_graph, save_npz

is_own_output = is_npz  # an existing --out is replaced only when it is an .npz

NAME = "forward"
HELP = "run a net (prototxt + .caffemodel / .h5 / our .safetensors) on inputs from an .npz; save every blob"


def add_arguments(parser) -> None:
    parser.add_argument("--prototxt", required=True)
    parser.add_argument("--weights", help=".caffemodel, .caffemodel.h5 or our .safetensors "
                        "(omit only for a net without learnable layers)")
    parser.add_argument("--inputs", required=True, help=".npz holding one array per Input top of the net")
    parser.add_argument("--episode", type=int, help="take the inputs of this episode from a file of "
                        "`python -m reproduce inputs` ('<episode>/<name>' arrays)")
    parser.add_argument("--out", required=True, help="output .npz of every blob, by name")


def run(args) -> int:
    arrays = load_npz(args.inputs)
    if args.episode is not None:
        arrays = episode_arrays(arrays, args.episode, args.inputs)
    blobs = run_graph(args.prototxt, args.weights, arrays, source=args.inputs)
    save_npz(args.out, blobs)
    print(f"wrote {args.out} ({len(blobs)} blobs)")
    return 0

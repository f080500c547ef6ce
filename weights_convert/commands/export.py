"""`export`: a net as a self-contained torch.export program (.pt2) and, optionally, ONNX."""
from __future__ import annotations

from weights_convert.artifacts import is_export

is_own_output = is_export  # an existing --out or --onnx is replaced only when it is an export of ours
OWNED_OUTPUTS = ("out", "onnx")

NAME = "export"
HELP = ("write a net (TEST phase, Caffe's semantics included) as a torch.export program that runs without "
        "this kit (torch.export.load), and with --onnx as ONNX (onnxruntime). Height and width stay "
        "dynamic where the net computes for any size (a fully convolutional net) and are fixed to "
        "--input-shape's where it cannot (an InnerProduct over a spatial map); the command says which. "
        "Training and fed data layers are not exported")


def add_arguments(parser) -> None:
    parser.add_argument("--prototxt", required=True, help="deploy net (Input layers for its inputs)")
    parser.add_argument("--weights", help=".caffemodel, .caffemodel.h5 or our .safetensors (omit only for a net "
                        "without learnable layers)")
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME=D0,D1,...",
                        help="the example shape of an input (repeatable; default: the prototxt's Input shape)")
    parser.add_argument("--outputs", help="comma-separated blobs to return (default: the net's outputs, the blobs "
                        "no layer consumes)")
    parser.add_argument("--onnx", help="also write ONNX (opset 18) here")
    parser.add_argument("--out", required=True, help="the .pt2 file")


def run(args) -> int:
    from weights_convert.export import ONNX_OPSET, export_program, parse_input_shapes

    outputs = [name.strip() for name in args.outputs.split(",") if name.strip()] if args.outputs else None
    record = export_program(args.prototxt, args.weights, parse_input_shapes(args.input_shape), args.out,
                            onnx_out=args.onnx, outputs=outputs)
    for name, shape in record.inputs.items():
        size = ("height and width symbolic: any size the net computes for (the program checks what it is given)"
                if record.dynamic[name] else "fixed size (the net computes for this size only)")
        print(f"input {name} {tuple(shape)}: {size}")
    print(f"outputs: {', '.join(record.outputs)}")
    print(f"wrote {', '.join(record.written)}" + (f" (ONNX opset {ONNX_OPSET})" if args.onnx else ""))
    return 0

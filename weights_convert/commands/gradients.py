"""`gradients`: the loss and every param's gradient of one forward/backward pass of a train net."""
from __future__ import annotations

from weights_convert.files.own_outputs import is_npz

is_own_output = is_npz  # an existing --out is replaced only when it is an .npz

NAME = "gradients"
HELP = "one forward/backward of a train net on the first episode: the loss and every param's gradient"


def add_arguments(parser) -> None:
    parser.add_argument("--prototxt", required=True, help="the train net (its data layer's tops are fed)")
    parser.add_argument("--weights", help=".caffemodel, .caffemodel.h5 or our .safetensors (omit only for a net "
                        "without learnable layers)")
    parser.add_argument("--inputs", required=True, help="episodes .npz (keys '<e>/<top>'); episode 0 is used")
    parser.add_argument("--blob-diffs", action="store_true",
                        help="also save every blob's diff as 'diff:<blob>' (Caffe's net.blobs[b].diff; the inputs' "
                             "too when the net sets force_backward); implies --every-position")
    parser.add_argument("--every-position", action="store_true",
                        help="compute each convolution at every output position, as Caffe does (by default a "
                             "padded net's constant frame is computed once per channel: the same gradients up to "
                             "float rounding)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--out", required=True, help="output .npz: 'loss' and '<layer>/<index>' gradients")


def run(args) -> int:
    # Imported here: building the CLI's parser must not load torch (convert needs none).
    import numpy as np

    from weights_convert.files.atomic import atomic_write
    from weights_convert.graph import CaffeNet
    from weights_convert.runtime.numerics import faithful_mode
    from weights_convert.train.data import EpisodeInputs
    from weights_convert.train.passes import forward_backward
    from weights_convert.train.trainer import load_weights_for_training

    data = EpisodeInputs(args.inputs)
    try:
        batch = data.batch(0)
    finally:
        data.close()
    net = CaffeNet.from_prototxt(args.prototxt, phase="TRAIN", device=args.device,
                                 data_shapes={k: v.shape for k, v in batch.items()},
                                 skip_constant_frame=not (args.every_position or args.blob_diffs))
    if args.weights is not None:
        load_weights_for_training(net, args.weights)
    else:
        net.refuse_missing_weights()
    with faithful_mode():
        result = forward_backward(net, batch, blob_diffs=args.blob_diffs)
    arrays = {"loss": np.float32(result.loss)}
    for layer in net.param_layers():
        for i, blob in enumerate(layer.blobs):
            grad = blob.grad  # a shared blob's gradient is the owner's, as Caffe's shared diff
            arrays[f"{layer.name}/{i}"] = (np.zeros(layer.blob_shapes[i], np.float32) if grad is None
                                           else grad.detach().cpu().numpy().reshape(layer.blob_shapes[i]))
    for name, diff in result.blob_diffs.items():
        arrays[f"diff:{name}"] = diff.detach().cpu().numpy()
    with atomic_write(args.out, "wb") as fh:
        np.savez(fh, **arrays)
    print(f"loss {float(result.loss)!r}; gradients of {len(arrays) - 1 - len(result.blob_diffs)} blobs -> {args.out}")
    return 0

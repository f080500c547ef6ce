"""`make-init`: the OSLSM start model, from the authors' os_pretrained.caffemodel or ImageNet VGG-16."""
from __future__ import annotations

import json
import secrets

import numpy as np

from reproduce.errors import ReproduceError
from reproduce.training.recipe import TRAIN_PROTOTXT, train_net_blobs
from weights_convert.files.atomic import atomic_write_text
from weights_convert.formats.caffemodel import write_caffemodel
from weights_convert.files.own_outputs import json_with_keys
from weights_convert.files.provenance import sha256_file

def is_own_output(path) -> bool:
    """A start model is ours when the record this command writes beside it is there."""
    return json_with_keys(f"{path}.json", ("source", "source_sha256", "hashing_seed", "how"))


NAME = "make-init"
HELP = "write the OSLSM start model (train net layers) from os_pretrained.caffemodel or VGG-16"


def add_arguments(parser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--os-pretrained", help="the authors' os_pretrained.caffemodel (zero hashing maps filled)")
    source.add_argument("--vgg16", help="ImageNet VGG_ILSVRC_16_layers.caffemodel (V1 or V2)")
    parser.add_argument("--prototxt", default=str(TRAIN_PROTOTXT), help="train net (default: the upstream one)")
    parser.add_argument("--seed", type=int, help="seed of the weight-hashing maps (default: random; recorded)")
    parser.add_argument("--out", required=True, help="output .caffemodel (a .json beside it records the recipe)")


def run(args) -> int:
    # Imported here: `--help` and the light commands start without loading torch.
    from weights_convert.oslsm.loading import read_params
    from weights_convert.oslsm.surgery import check_against, from_os_pretrained, from_vgg16

    shapes, types = train_net_blobs(args.prototxt)
    seed = secrets.randbits(32) if args.seed is None else args.seed
    source = args.os_pretrained or args.vgg16
    params = read_params(source)
    if args.os_pretrained:
        out, filled = from_os_pretrained(params, shapes, seed)
        how = f"copied; {', '.join(filled) or 'nothing'} filled with hashing maps"
    else:
        out = from_vgg16(params, shapes, seed)
        how = "VGG-16 surgery: convs into both branches, fc6/fc7 into fc6f/fc7f and fc6s/fc7s, fc8 into fc8f"
    check_against(out, shapes, source)
    out = {name: [np.asarray(b, np.float32).reshape(s) for b, s in zip(out[name], shapes[name])] for name in shapes}
    if not all(np.isfinite(b).all() for blobs in out.values() for b in blobs):
        raise ReproduceError(f"{source}: holds non-finite values")
    write_caffemodel(args.out, out, {n: types[n] for n in out})
    record = {"source": source, "source_sha256": sha256_file(source), "hashing_seed": seed, "how": how,
              "prototxt": args.prototxt, "out_sha256": sha256_file(args.out)}
    atomic_write_text(args.out + ".json", json.dumps(record, indent=1) + "\n")
    print(f"{how}; hashing seed {seed}\nwrote {args.out}")
    return 0

"""The classic Caffe Model Zoo against the real Caffe (tests/golden_zoo): GoogLeNet, ResNet-50
and FCN-8s from their real deploy prototxts at odd input sizes (pooling's ceil rounding, FCN's
crops), weights written bit for bit from a seed by the oracle's own numpy-only writer. Every
stored blob must match; a converted file must give the same blobs as the caffemodel."""
import json

import numpy as np
import pytest
import torch

from helpers import GOLDEN_ZOO
from weights_convert.cli import main
from weights_convert.graph import CaffeNet
from weights_convert.runtime.numerics import faithful_mode

CASES = json.loads((GOLDEN_ZOO / "cases.json").read_text())
TOL = 1e-5  # times max(1, max|ref|); measured worst 5.6e-6 (FCN-8s score_fr), AMD EPYC, torch 2.13 CPU


def assert_matches_caffe(name: str, blobs) -> None:
    golden = np.load(GOLDEN_ZOO / f"{name}.npz")
    assert sorted(golden.files) == sorted(CASES[name]["blobs"])
    for blob in golden.files:
        ref, got = golden[blob], np.asarray(blobs[blob])
        assert got.shape == ref.shape, f"{name} {blob}: {got.shape}, Caffe {ref.shape}"
        limit = TOL * max(1.0, float(np.abs(ref).max()))
        assert float(np.abs(got.astype(np.float64) - ref).max()) <= limit, f"{name} {blob}"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_every_stored_blob_matches_caffe(name, zoo_files, device):
    weights, inputs = zoo_files[name]
    net = CaffeNet.from_prototxt(GOLDEN_ZOO / CASES[name]["prototxt"], device=device).load_weights(weights)
    with np.load(inputs) as arrays, torch.no_grad(), faithful_mode():
        blobs = net(**{k: torch.from_numpy(arrays[k]).to(device) for k in arrays.files})
    assert_matches_caffe(name, {k: v.cpu().numpy() for k, v in blobs.items()})


@pytest.mark.slow
@pytest.mark.parametrize("name", ["googlenet", "resnet50"])
def test_a_converted_zoo_net_reads_back_and_runs_as_caffe(name, zoo_files, tmp_path):
    """`convert` then `forward` on the .safetensors, as a user runs them: the blobs equal the
    caffemodel's forward bit for bit, and the real Caffe's within tolerance."""
    weights, inputs = zoo_files[name]
    prototxt = str(GOLDEN_ZOO / CASES[name]["prototxt"])
    converted = tmp_path / f"{name}.safetensors"
    assert main(["convert", "--prototxt", prototxt, "--caffemodel", str(weights), "--out", str(converted)]) == 0
    for source, out in ((converted, tmp_path / "from_converted.npz"), (weights, tmp_path / "from_caffemodel.npz")):
        assert main(["forward", "--prototxt", prototxt, "--weights", str(source), "--inputs", str(inputs),
                     "--out", str(out)]) == 0
    ours, direct = np.load(tmp_path / "from_converted.npz"), np.load(tmp_path / "from_caffemodel.npz")
    assert sorted(ours.files) == sorted(direct.files)
    assert all(np.array_equal(ours[k], direct[k]) for k in ours.files)
    assert_matches_caffe(name, ours)

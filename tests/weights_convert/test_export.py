"""Exported nets run without the kit: `export` writes a torch.export program (.pt2) and ONNX, and
a fresh process that never imports the kit's graph (`weights_convert.artifacts`: torch.export.load,
onnxruntime) gives the real Caffe's blobs within the golden tolerance, for the Model Zoo nets
(tests/golden_zoo) and the thin OSLSM deploy nets (tests/golden)."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import GOLDEN, GOLDEN_ZOO, ROOT
from weights_convert.cli import main
from weights_convert.graph import CaffeNet

ZOO = json.loads((GOLDEN_ZOO / "cases.json").read_text())
TOL = 1e-5  # times max(1, max|ref|), the zoo's golden bound

# Runs an artifact in a process of its own and fails if the kit's graph or layers were imported.
RUNNER = """
import sys
import numpy as np
from weights_convert.artifacts import load_artifact
artifact = load_artifact(sys.argv[1])
with np.load(sys.argv[2]) as given:
    outputs = artifact.run(dict(given))
loaded = sorted(m for m in sys.modules if m.startswith(("weights_convert.graph", "weights_convert.layers")))
assert not loaded, loaded
np.savez(sys.argv[3], **outputs)
"""


def run_alone(artifact: Path, inputs: Path, out: Path) -> dict[str, np.ndarray]:
    done = subprocess.run([sys.executable, "-c", RUNNER, str(artifact), str(inputs), str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(np.load(out))


def within(got: np.ndarray, ref: np.ndarray, what: str) -> None:
    assert got.shape == ref.shape, f"{what}: {got.shape}, reference {ref.shape}"
    limit = TOL * max(1.0, float(np.abs(ref).max()))
    assert float(np.abs(got.astype(np.float64) - ref).max()) <= limit, what


@pytest.fixture(scope="module")
def zoo_exports(zoo_files, tmp_path_factory):
    """Each zoo net exported (.pt2 and .onnx) with the blobs the real Caffe's golden file holds as outputs."""
    root = tmp_path_factory.mktemp("exports")
    made = {}
    for name, case in ZOO.items():
        weights, inputs = zoo_files[name]
        shape = ",".join(map(str, case["inputs"]["data"]))
        pt2, onnx = root / f"{name}.pt2", root / f"{name}.onnx"
        assert main(["export", "--prototxt", str(GOLDEN_ZOO / case["prototxt"]), "--weights", str(weights),
                     "--input-shape", f"data={shape}", "--outputs", ",".join(case["blobs"]), "--out", str(pt2),
                     "--onnx", str(onnx)]) == 0
        made[name] = (pt2, onnx)
    return made


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ZOO))
@pytest.mark.parametrize("kind", ["pt2", "onnx"])
def test_a_zoo_net_runs_from_its_artifact_alone_as_caffe_does(name, kind, zoo_exports, zoo_files, tmp_path):
    artifact = zoo_exports[name][0 if kind == "pt2" else 1]
    outputs = run_alone(artifact, zoo_files[name][1], tmp_path / "out.npz")
    golden = np.load(GOLDEN_ZOO / f"{name}.npz")
    assert sorted(outputs) == sorted(golden.files)
    for blob in golden.files:
        within(outputs[blob], golden[blob], f"{name} {kind} {blob}")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["pt2", "onnx"])
def test_a_fully_convolutional_net_keeps_its_size_dynamic(kind, zoo_exports, zoo_files, tmp_path):
    """FCN-8s exported at 133x175 runs at 97x64 too, as the graph computes it there."""
    artifact = zoo_exports["fcn8s"][0 if kind == "pt2" else 1]
    x = np.random.default_rng(0).uniform(-60, 60, (2, 3, 97, 64)).astype(np.float32)
    np.savez(tmp_path / "in.npz", data=x)
    outputs = run_alone(artifact, tmp_path / "in.npz", tmp_path / "out.npz")
    net = CaffeNet.from_prototxt(GOLDEN_ZOO / "fcn8s.prototxt").load_weights(zoo_files["fcn8s"][0])
    with torch.no_grad():
        blobs = net(data=torch.from_numpy(x))
    assert outputs["score"].shape == (2, 21, 97, 64)
    for blob in ZOO["fcn8s"]["blobs"]:
        within(outputs[blob], blobs[blob].numpy(), blob)


OSLSM_CASES = ["oslsm_thin_1shot_500x500", "oslsm_thin_5shot_500x500"]


@pytest.mark.parametrize("case", OSLSM_CASES)
def test_the_oslsm_deploy_nets_verify_from_their_artifacts_without_the_graph(case, tmp_path):
    """`verify` on a .pt2 and an .onnx against the real Caffe's blobs, in a fresh process whose
    import log shows that the kit's graph was never loaded."""
    pt2, onnx = tmp_path / "net.pt2", tmp_path / "net.onnx"
    assert main(["export", "--prototxt", str(GOLDEN / case / "net.prototxt"), "--weights",
                 str(GOLDEN / case / "weights.caffemodel"), "--out", str(pt2), "--onnx", str(onnx)]) == 0
    for artifact in (pt2, onnx):
        done = subprocess.run([sys.executable, "-X", "importtime", "-m", "weights_convert", "verify", "--weights",
                               str(artifact), "--golden", str(GOLDEN / case / "blobs.npz")], cwd=ROOT,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert "score" in done.stdout and "within tolerance" in done.stdout
        # (layers.facts, a torch-free table, comes with the converter's command module)
        loaded = set(re.findall(r"\|\s+(weights_convert\.(?:graph|layers\.\w+))\s*$", done.stderr, re.M))
        assert loaded <= {"weights_convert.layers.facts"}, loaded


def test_a_fixed_size_program_refuses_another_size_in_words(tmp_path, capsys):
    case = GOLDEN / "oslsm_thin_1shot_500x500"
    pt2 = tmp_path / "net.pt2"
    assert main(["export", "--prototxt", str(case / "net.prototxt"), "--weights", str(case / "weights.caffemodel"),
                 "--out", str(pt2)]) == 0
    assert "input second_img (1, 3, 500, 500): fixed size" in capsys.readouterr().out
    other = GOLDEN / "oslsm_thin_1shot_120x200" / "blobs.npz"
    assert main(["verify", "--weights", str(pt2), "--golden", str(other)]) == 2
    assert "input second_img has shape (1, 3, 120, 200); this program was exported for (1, 3, 500, 500)" in \
        capsys.readouterr().err


def test_a_layer_that_cannot_be_exported_is_named_in_one_line(tmp_path, capsys):
    """Accuracy counts its hits into Python numbers (as Caffe does): no program can hold that."""
    net = tmp_path / "acc.prototxt"
    net.write_text('layer { name: "s" type: "Input" top: "score" input_param { shape { dim: 2 dim: 5 } } }\n'
                   'layer { name: "l" type: "Input" top: "label" input_param { shape { dim: 2 } } }\n'
                   'layer { name: "acc" type: "Accuracy" bottom: "score" bottom: "label" top: "acc" }\n')
    assert main(["export", "--prototxt", str(net), "--out", str(tmp_path / "acc.pt2")]) == 2
    err = capsys.readouterr().err
    assert "layer 'acc' (type Accuracy)" in err and "export" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "acc.pt2").exists()

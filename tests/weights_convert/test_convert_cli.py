"""convert / forward / verify end to end through the CLI's main(argv)."""
import hashlib
import json

import numpy as np
import xxhash
import pytest

from helpers import GOLDEN, UPSTREAM
from weights_convert.cli import main
from weights_convert.convert import WeightSource
from weights_convert.errors import CaffeFormatError
from weights_convert.formats.caffemodel import write_caffemodel
from weights_convert.formats.safetensors_io import read_safetensors, safetensors_metadata
from weights_convert.formats.weights_io import read_weights

CASE = GOLDEN / "oslsm_thin_1shot_120x200"
CASE5 = GOLDEN / "oslsm_thin_5shot_500x500"


def convert_args(case, out, *extra):
    return ["convert", "--prototxt", str(case / "net.prototxt"), "--caffemodel", str(case / "weights.caffemodel"),
            "--out", str(out), *extra]


@pytest.mark.parametrize("form", ["graph", "oslsm"])
def test_convert_writes_file_metadata_and_report(tmp_path, form, capsys):
    out, report = tmp_path / f"{form}.safetensors", tmp_path / f"{form}.json"
    assert main(convert_args(CASE5, out, "--model", form, "--label", "fold=2", "--report", str(report))) == 0
    assert "hashing: rw1s hashing (8x smaller), rb1s hashing (8x smaller)" in capsys.readouterr().out
    sha = hashlib.sha256((CASE5 / "weights.caffemodel").read_bytes()).hexdigest()
    meta = safetensors_metadata(out)
    assert meta["model"] == form and meta["source_sha256"] == sha and meta["fold"] == "2"
    assert meta["source"] == "weights.caffemodel" and meta["shots"] == "any" and meta["format_version"] == "1"
    rep = json.loads(report.read_text())
    params = np.load(CASE5 / "params.npz")
    assert rep["source_sha256"] == sha and rep["output"] == str(out) and rep["labels"] == {"fold": "2"}
    assert rep["param_count"] == sum(params[k].size for k in params.files) == 29_421
    assert rep["hashing"]["found"] and rep["hashing"]["layers"]["rw1s"]["form"] == "hashing"
    assert {l["name"]: l["blobs"] for l in rep["layers"]}["fc6f"] == [[16, 392], [16]]
    assert set(rep["timings"]) >= {"scan_s", "validate_s", "sha256_s", "write_s", "total_s"}
    tensors, _ = read_safetensors(out)
    if form == "graph":
        assert set(tensors) == set(params.files)
        for key in params.files:
            assert np.array_equal(tensors[key], params[key]), key
    else:
        assert tensors["hashing.weight_map.index"].dtype == np.int32
        assert tensors["hashing.weight_map.sign"].dtype == np.int8
        assert np.array_equal(tensors["segmentation.fc6.weight"], params["fc6s/0"])
        assert np.array_equal(tensors["conditioning.fc6.weight"], params["fc6f/0"])
        assert "hashing.weight_map.weight" not in tensors


def test_convert_h5_source_matches_caffemodel_source(tmp_path):
    case = GOLDEN / "oslsm_thin_1shot_500x500"
    for name in ("weights.caffemodel", "weights.caffemodel.h5"):
        assert main(["convert", "--prototxt", str(case / "net.prototxt"), "--caffemodel", str(case / name),
                     "--out", str(tmp_path / f"{name}.safetensors"), "--model", "oslsm"]) == 0
    a, _ = read_safetensors(tmp_path / "weights.caffemodel.safetensors")
    b, _ = read_safetensors(tmp_path / "weights.caffemodel.h5.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_convert_rejects_mismatch_before_writing(tmp_path, capsys):
    out = tmp_path / "x.safetensors"
    args = ["convert", "--prototxt", str(UPSTREAM / "deploy_1shot.prototxt"), "--caffemodel",
            str(CASE / "weights.caffemodel"), "--out", str(out)]
    for form in ("graph", "oslsm"):
        assert main(args + ["--model", form]) == 2
        err = capsys.readouterr().err
        assert "'conv1_1f' blob 0 has shape (4, 3, 3, 3); expected (64, 3, 3, 3)" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_convert_rejects_non_oslsm_weights(tmp_path, capsys):
    out = tmp_path / "x.safetensors"
    assert main(["convert", "--prototxt", str(CASE / "net.prototxt"), "--caffemodel",
                 str(GOLDEN / "conv_basic" / "weights.caffemodel"), "--out", str(out), "--model", "oslsm"]) == 2
    err = capsys.readouterr().err
    assert "not an OSLSM model" in err and "rw1s" in err and "uppred_offset" in err
    assert main(["convert", "--prototxt", str(CASE / "net.prototxt"), "--caffemodel",
                 str(GOLDEN / "conv_basic" / "weights.caffemodel"), "--out", str(out)]) == 2
    assert "has no layer of that name" in capsys.readouterr().err
    assert not out.exists()


def test_graph_source_streams_without_decoding():
    with WeightSource(CASE / "weights.caffemodel") as source:
        assert source.kind == "caffemodel"
        assert source.layers["fc6s"][0].shape == (16, 8, 7, 7)
        assert source.types["uppred_offset"] == "Deconvolution"


# ---------------------------------------------------------------- forward / verify (graph interpreter)

def test_forward_saves_every_blob(tmp_path, capsys):
    golden = dict(np.load(CASE / "blobs.npz"))
    np.savez(tmp_path / "in.npz", **{k: golden[k] for k in ("first_img", "second_img", "first_label", "second_label")})
    out = tmp_path / "blobs.npz"
    assert main(["forward", "--prototxt", str(CASE / "net.prototxt"), "--weights", str(CASE / "weights.caffemodel"),
                 "--inputs", str(tmp_path / "in.npz"), "--out", str(out)]) == 0
    blobs = np.load(out)
    assert set(golden) <= set(blobs.files)
    ref = golden["pre_score2"]
    assert np.abs(blobs["pre_score2"] - ref).max() <= 5e-5 * max(1.0, np.abs(ref).max())


def test_forward_of_a_1shot_net_on_5shot_inputs_says_what_differs(tmp_path, capsys):
    one = GOLDEN / "oslsm_thin_1shot_500x500"
    golden = dict(np.load(CASE5 / "blobs.npz"))
    np.savez(tmp_path / "in5.npz", **{k: golden[k] for k in ("first_img", "second_img", "first_label", "second_label")})
    out = tmp_path / "blobs.npz"
    assert main(["forward", "--prototxt", str(one / "net.prototxt"), "--weights", str(one / "weights.caffemodel"),
                 "--inputs", str(tmp_path / "in5.npz"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "layer 'w1sXs' (type MatMult)" in err
    assert "first_img (5, 3, 224, 224) (declared (1, 3, 224, 224))" in err
    assert "first_label (5, 1, 224, 224) (declared (1, 1, 224, 224))" in err and "second_img" not in err
    assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / "in5.npz"]


@pytest.mark.parametrize("weights", ["weights.caffemodel", "graph.safetensors", "oslsm.safetensors"])
def test_verify_passes_on_golden(tmp_path, capsys, weights):
    for form in ("graph", "oslsm"):
        assert main(convert_args(CASE, tmp_path / f"{form}.safetensors", "--model", form)) == 0
    path = CASE / weights if weights.endswith("caffemodel") else tmp_path / weights
    capsys.readouterr()
    rc = main(["verify", "--prototxt", str(CASE / "net.prototxt"), "--weights", str(path),
               "--golden", str(CASE / "blobs.npz")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "pre_score2" in out and "FAIL" not in out and "blobs within tolerance" in out


def test_verify_fails_on_tampered_weight_and_names_the_blob(tmp_path, capsys):
    params = read_weights(CASE / "weights.caffemodel")
    params["conv3_2s"][0] = params["conv3_2s"][0].copy()
    params["conv3_2s"][0][0, 0, 1, 1] += 0.05
    write_caffemodel(tmp_path / "tampered.caffemodel", params)
    rc = main(["verify", "--prototxt", str(CASE / "net.prototxt"), "--weights", str(tmp_path / "tampered.caffemodel"),
               "--golden", str(CASE / "blobs.npz")])
    out = capsys.readouterr().out
    assert rc == 1
    failed_line = next(line for line in out.splitlines() if line.startswith("FAILED"))
    assert "conv3_2s" in failed_line and "conv3_1s" not in failed_line  # upstream blobs still match
    assert "pool5f" not in failed_line  # the conditioning branch does not see the query weights


def test_verify_fails_loudly_on_a_golden_file_that_lacks_blobs(tmp_path, capsys):
    from weights_convert.forward_pass import load_npz, save_npz

    golden = load_npz(CASE / "blobs.npz")
    partial = {k: v for k, v in golden.items() if k not in ("pool5s", "fc6f")}
    save_npz(tmp_path / "partial.npz", partial)
    args = ["verify", "--prototxt", str(CASE / "net.prototxt"), "--weights", str(CASE / "weights.caffemodel"),
            "--golden", str(tmp_path / "partial.npz")]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "NOT COMPARED: the golden file has no values for 2 blob(s) the net computes: fc6f, pool5s" in out
    assert "pass --allow-partial" in out
    assert main([*args, "--allow-partial"]) == 0
    assert "(2 not compared, --allow-partial)" in capsys.readouterr().out
    inputs_only = {k: golden[k] for k in ("first_img", "first_label", "second_img", "second_label")}
    save_npz(tmp_path / "inputs.npz", inputs_only)
    assert main([*args[:-1], str(tmp_path / "inputs.npz"), "--allow-partial"]) == 1
    assert "nothing was compared" in capsys.readouterr().out


def test_verify_without_weights_only_for_nets_without_learnable_layers(capsys):
    no_params = GOLDEN / "pool_max_clip"
    assert main(["verify", "--prototxt", str(no_params / "net.prototxt"), "--golden", str(no_params / "blobs.npz")]) == 0
    assert "all 1 compared blobs within tolerance" in capsys.readouterr().out
    conv = GOLDEN / "conv_basic"
    assert main(["verify", "--prototxt", str(conv / "net.prototxt"), "--golden", str(conv / "blobs.npz")]) == 2
    assert "layer(s) c have learnable blobs; pass their weights with --weights" in capsys.readouterr().err


def test_full_size_oslsm_entries_stream_without_reading_big_blobs():
    """The oslsm-form conversion of a full VGG-16-width model, on shapes only: every state tensor
    is planned with the module's shape and dtype, and only the two hashing maps are decoded."""
    from weights_convert.convert import _oslsm_entries
    from weights_convert.formats.weights_io import BlobHandle
    from weights_convert.formats.prototxt import load_net
    from weights_convert.oslsm.layout import OSLSMWidths, expected_param_shapes
    from weights_convert.oslsm.random_init import random_hashing_matrix

    reads = []
    rng = np.random.default_rng(0)
    full = OSLSMWidths.FULL
    real = {"rw1s": [random_hashing_matrix(full.fc, full.embed, rng), np.zeros(full.fc, np.float32)],
            "rb1s": [random_hashing_matrix(1, full.embed, rng), np.zeros(1, np.float32)]}

    def handle(name, index, shape):
        def read():
            reads.append(name)
            return real[name][index] if name in real else np.zeros(shape, np.float32)
        # Legacy 4-d InnerProduct shapes (1, 1, N, K) are accepted, as Caffe does.
        stored = (1, 1, *shape) if name == "fc7f" and index == 0 else shape
        return BlobHandle(stored, read)

    class ShapeOnlySource:
        layers = {name: [handle(name, i, s) for i, s in enumerate(shapes)]
                  for name, shapes in expected_param_shapes(full).items()}

    entries, hashing, meta = _oslsm_entries(load_net(UPSTREAM / "deploy_1shot.prototxt"), ShapeOnlySource(),
                                            "deploy_1shot.prototxt", "full.caffemodel")
    assert sorted(reads) == ["rb1s", "rw1s"]  # only the hashing matrices, to tell their form
    planned = {e.key: (e.shape, e.dtype) for e in entries}
    assert planned["conditioning.fc6.weight"] == ((4096, 25088), "F32")
    assert planned["conditioning.fc7.weight"] == ((4096, 4096), "F32")
    assert planned["segmentation.fc6.weight"] == ((4096, 512, 7, 7), "F32")
    assert planned["hashing.weight_map.index"] == ((4096,), "I32")
    assert planned["hashing.weight_map.sign"] == ((4096,), "I8")
    assert sum(e.nbytes for e in entries) == 4 * (276_723_281 - 4_096_000 - 1_000) + 5 * 4097
    assert hashing["rw1s"]["size_ratio"] == 800.0 and meta["widths"] == "64,128,256,512,512,4096,1000"
    assert next(e for e in entries if e.key == "conditioning.fc7.weight").read().shape == (4096, 4096)


def test_convert_graph_form_of_a_general_net_checks_shapes(tmp_path, capsys):
    conv = GOLDEN / "conv_basic"
    assert main(["convert", "--prototxt", str(conv / "net.prototxt"), "--caffemodel", str(conv / "weights.caffemodel"),
                 "--out", str(tmp_path / "ok.safetensors")]) == 0
    assert np.array_equal(read_weights(tmp_path / "ok.safetensors")["c"][0], read_weights(conv / "weights.caffemodel")["c"][0])
    # Same layer name, other shapes: refused before writing.
    other = GOLDEN / "conv_group_dilation" / "weights.caffemodel"
    assert main(["convert", "--prototxt", str(conv / "net.prototxt"), "--caffemodel", str(other),
                 "--out", str(tmp_path / "bad.safetensors")]) == 2
    assert "layer 'c' blob 0 has shape (6, 2, 3, 3)" in capsys.readouterr().err
    assert not (tmp_path / "bad.safetensors").exists()


def test_convert_graph_form_of_a_caffe_hdf5_with_shared_blobs(tmp_path, capsys):
    """Caffe's HDF5 leaves out blobs a layer shares; the converted file keeps the gap and the
    graph fills it from the owner, so forward gives the same blobs as the full weights."""
    import h5py

    proto = tmp_path / "shared.prototxt"
    proto.write_text(
        'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }\n'
        'layer { name: "a" type: "InnerProduct" bottom: "x" top: "a" param { name: "w" } '
        'inner_product_param { num_output: 4 } }\n'
        'layer { name: "b" type: "InnerProduct" bottom: "x" top: "b" param { name: "w" } '
        'inner_product_param { num_output: 4 } }\n')
    w = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
    with h5py.File(tmp_path / "shared.caffemodel.h5", "w") as h5:
        h5["data/a/0"], h5["data/a/1"], h5["data/b/1"] = w, np.ones(4, np.float32), np.zeros(4, np.float32)
    out = tmp_path / "shared.safetensors"
    assert main(["convert", "--prototxt", str(proto), "--caffemodel", str(tmp_path / "shared.caffemodel.h5"),
                 "--out", str(out), "--model", "graph"]) == 0
    assert sorted(read_safetensors(out)[0]) == ["a/0", "a/1", "b/1"]
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.savez(tmp_path / "in.npz", x=x)
    assert main(["forward", "--prototxt", str(proto), "--weights", str(out), "--inputs", str(tmp_path / "in.npz"),
                 "--out", str(tmp_path / "blobs.npz")]) == 0
    blobs = np.load(tmp_path / "blobs.npz")
    np.testing.assert_allclose(blobs["b"], x @ w.T, atol=1e-6)
    np.testing.assert_allclose(blobs["a"], x @ w.T + 1, atol=1e-6)


def test_saved_blobs_may_have_any_name(tmp_path):
    from weights_convert.forward_pass import save_npz

    arrays = {"file": np.arange(3, dtype=np.float32), "allow_pickle": np.ones((2, 2), np.float32), "a/b": np.zeros(1)}
    save_npz(tmp_path / "b.npz", arrays)
    with np.load(tmp_path / "b.npz") as loaded:
        assert sorted(loaded.files) == sorted(arrays)
        assert all(np.array_equal(loaded[k], v) for k, v in arrays.items())


def test_graph_conversion_through_the_cli_never_loads_torch(tmp_path):
    """The graph form needs no torch: importing it costs more than converting a full model."""
    import subprocess
    import sys

    out = tmp_path / "g.safetensors"
    code = ("import sys; from weights_convert.cli import main; "
            f"rc = main({convert_args(CASE5, out, '--model', 'graph')!r}); "
            "print(rc, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "0 False"
    assert safetensors_metadata(out)["model"] == "graph"


def test_forward_takes_one_episode_of_an_inputs_file(tmp_path, capsys):
    """`reproduce inputs` writes '<episode>/<name>' arrays; `forward --episode E` runs one of them."""
    inputs = GOLDEN / "episodes" / "inputs_fold0_1shot.npz"
    case = GOLDEN / "oslsm_thin_1shot_500x500"
    args = ["forward", "--prototxt", str(case / "net.prototxt"), "--weights", str(case / "weights.caffemodel"),
            "--inputs", str(inputs), "--out", str(tmp_path / "blobs.npz")]
    assert main(args) == 2
    assert "pick one with --episode E" in capsys.readouterr().err
    assert main([*args, "--episode", "7"]) == 2
    assert "no episode 7; the file holds 2 episode(s), 0..1" in capsys.readouterr().err
    assert main([*args, "--episode", "1"]) == 0
    with np.load(tmp_path / "blobs.npz") as blobs, np.load(inputs) as given:
        assert np.array_equal(blobs["second_img"], given["1/second_img"])
        assert blobs["score"].shape == (1, 1, 500, 500)


def test_conversion_bytes_are_those_of_the_code_before_the_reorganisation(tmp_path):
    """Digests recorded from commit 53b48e5 (before `reproduce/` became packages and the converter's
    --fold became --label fold=F) for the golden 5-shot case in the oslsm form: the data section
    byte for byte, and the header but for the data checksum since added to it (`data_xxh3_128`)."""
    out = tmp_path / "fold2.safetensors"
    assert main(convert_args(CASE5, out, "--model", "oslsm", "--label", "fold=2")) == 0
    raw = out.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + size])
    checksum = header["__metadata__"].pop("data_xxh3_128")
    assert hashlib.sha256(raw[8 + size:]).hexdigest() == \
        "03badedb0eecee303adfd15a915cd72f629922141536f5e8fcdded7e255ff332"
    as_written = raw[8:8 + size].replace(checksum.encode(), b"<late data_xxh3_128>############", 1)
    assert checksum == xxhash.xxh3_128(as_written + xxhash.xxh3_128(raw[8 + size:]).digest()).hexdigest()
    assert hashlib.sha256(json.dumps(header, sort_keys=True).encode()).hexdigest() == \
        "39850ce9a928be79cb25e9c039e6dd695a22801896b1e16e4bf2ddd1bdf3a5af"


def test_a_file_written_with_the_former_sha256_still_reads_and_is_checked(tmp_path):
    """Converted before the checksum became XXH3-128: its data sha256 is verified as before."""
    out = tmp_path / "model.safetensors"
    assert main(convert_args(CASE5, out, "--model", "oslsm")) == 0
    raw = out.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + size])
    data = raw[8 + size:]
    meta = header["__metadata__"]
    del meta["data_xxh3_128"]
    meta["data_sha256"] = hashlib.sha256(data).hexdigest()
    text = json.dumps(header).encode()
    legacy = tmp_path / "legacy.safetensors"
    legacy.write_bytes(len(text).to_bytes(8, "little") + text + data)
    tensors, metadata = read_safetensors(legacy)
    assert "data_sha256" not in metadata and len(tensors) == 69
    legacy.write_bytes(len(text).to_bytes(8, "little") + text + data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(CaffeFormatError, match="damaged"):
        read_safetensors(legacy)


def test_a_damaged_tensor_name_is_refused_when_read(tmp_path):
    """The checksum covers the header too: a renamed tensor (one bit of its key) is caught."""
    out = tmp_path / "model.safetensors"
    assert main(convert_args(CASE5, out, "--model", "graph")) == 0
    raw = bytearray(out.read_bytes())
    at = raw.index(b'"conv1_1f/1"')
    raw[at + 1] ^= 0x01  # conv1_1f/1 -> bonv1_1f/1
    out.write_bytes(bytes(raw))
    with pytest.raises(CaffeFormatError, match=r"damaged: its tensor bytes are not the ones written"):
        read_safetensors(out)


def test_a_damaged_conversion_is_refused_when_read(tmp_path):
    out = tmp_path / "model.safetensors"
    assert main(convert_args(CASE5, out, "--model", "oslsm")) == 0
    raw = bytearray(out.read_bytes())
    raw[-5] ^= 0x10  # one bit of the last tensor
    out.write_bytes(bytes(raw))
    with pytest.raises(CaffeFormatError, match=r"damaged: its tensor bytes are not the ones written"):
        read_safetensors(out)

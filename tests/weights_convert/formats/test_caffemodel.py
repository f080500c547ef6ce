"""Binary caffemodel reader/writer against real-Caffe golden files and protobuf itself."""
import struct

import numpy as np
import pytest

from helpers import GOLDEN, MANIFEST
from weights_convert.errors import CaffeFormatError
from weights_convert.formats import wire
from weights_convert.formats.caffemodel import (CaffeModelFile, read_caffemodel, scan_caffemodel,
                                                write_caffemodel, write_caffemodel_v1)
from weights_convert.formats.schema import pb

V2_CASES = sorted(c for c in MANIFEST if not c.startswith("_") and MANIFEST[c]["has_weights"])
V1_CASES = sorted(c for c in MANIFEST if not c.startswith("_") and MANIFEST[c]["has_v1_weights"])


def bits(a: np.ndarray) -> np.ndarray:
    """Bit patterns, so that NaNs, -0.0 and denormals compare exactly."""
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def assert_bitwise_equal(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == np.float32
    assert got.shape == want.shape
    assert got.flags.c_contiguous
    np.testing.assert_array_equal(bits(got), bits(want))


def golden_params(case: str) -> dict[str, np.ndarray]:
    with np.load(GOLDEN / case / "params.npz") as npz:
        return {k: npz[k] for k in npz.files}


def flatten(params) -> dict[str, np.ndarray]:
    return {f"{layer}/{i}": blob for layer, blobs in params.items() for i, blob in enumerate(blobs)}


def test_golden_case_lists_are_not_empty():
    assert len(V2_CASES) >= 15 and len(V1_CASES) == 3


@pytest.mark.parametrize("case", V2_CASES)
def test_golden_v2_caffemodel_equals_params_npz(case):
    want = golden_params(case)
    got = flatten(read_caffemodel(GOLDEN / case / "weights.caffemodel"))
    assert list(got) == list(want)  # npz was written in net order, as is the caffemodel
    for key in want:
        assert_bitwise_equal(got[key], want[key])


@pytest.mark.parametrize("case", V1_CASES)
def test_golden_v1_caffemodel_has_legacy_shapes_and_same_values(case):
    """V1 blobs keep Caffe's 4-D legacy dims (IP weight (1,1,N,K), bias (1,1,1,N));
    Caffe's ShapeEquals accepts them for blobs whose LegacyShape matches."""
    want = golden_params(case)
    got = flatten(read_caffemodel(GOLDEN / case / "weights_v1.caffemodel"))
    assert list(got) == list(want)
    for key, w in want.items():
        assert got[key].shape == (1,) * (4 - w.ndim) + w.shape
        assert_bitwise_equal(got[key].reshape(w.shape), w)


@pytest.mark.parametrize("case", V1_CASES)
def test_v1_enum_types_become_the_v2_type_strings(case):
    v1 = {l.name: l.type for l in scan_caffemodel(GOLDEN / case / "weights_v1.caffemodel")}
    v2 = {l.name: l.type for l in scan_caffemodel(GOLDEN / case / "weights.caffemodel")}
    assert v1 and all(v1[name] == v2[name] for name in v1)
    assert set(v1.values()) <= {"Convolution", "Deconvolution", "InnerProduct"}


@pytest.mark.parametrize("case", ["conv_basic", "oslsm_thin_1shot_500x500", "batchnorm_global"])
def test_layer_records_agree_with_protobuf(case):
    path = GOLDEN / case / "weights.caffemodel"
    raw = path.read_bytes()
    net = pb.NetParameter.FromString(raw)
    records = scan_caffemodel(path)
    assert [(r.name, r.type) for r in records] == [(l.name, l.type) for l in net.layer]
    for record, layer in zip(records, net.layer):
        assert len(record.blobs) == len(layer.blobs)
        for blob, proto in zip(record.blobs, layer.blobs):
            assert blob.shape == tuple(proto.shape.dim)
            assert (blob.encoding, blob.count, blob.is_contiguous) == ("float32", len(proto.data), True)
            # offset/count locate the packed payload itself
            payload = np.frombuffer(raw, dtype="<f4", count=blob.count, offset=blob.offset)
            np.testing.assert_array_equal(bits(payload), bits(np.array(proto.data, dtype=np.float32)))


def test_read_returns_a_fresh_copy_each_time():
    with CaffeModelFile(GOLDEN / "conv_basic" / "weights.caffemodel") as model:
        blob = model.layers()[1].blobs[0]
        first = blob.read()
        first[...] = 0
        second = blob.read()
    assert np.abs(second).sum() > 0 and second.flags.writeable and second.flags.c_contiguous
    with pytest.raises(CaffeFormatError, match="closed"):
        model.layers()


def test_records_stay_readable_after_close_unless_the_file_changes(tmp_path):
    path = tmp_path / "w.caffemodel"
    path.write_bytes((GOLDEN / "conv_basic" / "weights.caffemodel").read_bytes())
    records = scan_caffemodel(path)
    want = golden_params("conv_basic")["c/0"]
    assert_bitwise_equal(records[1].blobs[0].read(), want)
    path.write_bytes(path.read_bytes() + b"\x08\x01")  # same content plus a field: a modified file
    with pytest.raises(CaffeFormatError, match=r"blob 0: the file was replaced or modified"):
        records[1].blobs[0].read()
    path.unlink()
    with pytest.raises(CaffeFormatError, match="cannot reopen"):
        records[1].blobs[0].read()


# ---------------------------------------------------------------- writer round trips


def special_params():
    rng = np.random.default_rng(7)
    specials = np.array([np.nan, -np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-45, -3.4e38, 1.0], dtype=np.float32)
    return {
        "conv": [rng.standard_normal((4, 3, 3, 3)).astype(np.float32), rng.standard_normal(4).astype(np.float32)],
        "scalar": [np.array(2.5, dtype=np.float32)],
        "specials": [specials],
        "empty_blob": [np.zeros((0, 5), dtype=np.float32)],
        "no_blobs": [],
        "name/with slash": [rng.standard_normal((2, 3)).astype(np.float32)],
    }


def test_v2_writer_round_trip_is_bitwise(tmp_path):
    params = special_params()
    path = tmp_path / "net.caffemodel"
    write_caffemodel(path, params, {"conv": "Convolution", "no_blobs": "ReLU"}, net_name="n")
    got = read_caffemodel(path)
    assert list(got) == [k for k, v in params.items() if v]
    for name, blobs in got.items():
        assert len(blobs) == len(params[name])
        for g, w in zip(blobs, params[name]):
            assert_bitwise_equal(g, w)
    records = {r.name: r for r in scan_caffemodel(path)}
    assert records["no_blobs"].type == "ReLU" and records["no_blobs"].blobs == []
    assert records["conv"].type == "Convolution" and records["scalar"].type == ""


def test_v2_writer_output_is_exactly_protobufs_serialization(tmp_path):
    params = special_params()
    types = {"conv": "Convolution", "specials": "Scale"}
    write_caffemodel(tmp_path / "a.caffemodel", params, types, net_name="oslsm")
    net = pb.NetParameter(name="oslsm")
    for name, blobs in params.items():
        layer = net.layer.add(name=name)
        if name in types:
            layer.type = types[name]
        for blob in blobs:
            proto = layer.blobs.add()
            proto.shape.SetInParent()
            proto.shape.dim.extend(blob.shape)
            proto.data.extend(blob.ravel().tolist())
    assert (tmp_path / "a.caffemodel").read_bytes() == net.SerializeToString(deterministic=True)


def test_v1_writer_round_trip_and_protobuf_bytes(tmp_path):
    rng = np.random.default_rng(3)
    params = {"fc": [rng.standard_normal((6, 10)).astype(np.float32), rng.standard_normal(6).astype(np.float32)],
              "conv": [rng.standard_normal((2, 3, 5, 5)).astype(np.float32)], "relu": []}
    types = {"fc": "InnerProduct", "conv": "Convolution", "relu": "ReLU"}
    path = tmp_path / "v1.caffemodel"
    write_caffemodel_v1(path, params, types)
    got = read_caffemodel(path)
    assert [b.shape for b in got["fc"]] == [(1, 1, 6, 10), (1, 1, 1, 6)]
    for name in ("fc", "conv"):
        for g, w in zip(got[name], params[name]):
            assert_bitwise_equal(g.reshape(w.shape), w)
    assert [(r.name, r.type) for r in scan_caffemodel(path)] == list(types.items())
    net = pb.NetParameter()
    for name, blobs in params.items():
        layer = net.layers.add(name=name, type=getattr(pb.V1LayerParameter, types[name].upper().replace("INNERPRODUCT", "INNER_PRODUCT")))
        for blob in blobs:
            legacy = (1,) * (4 - blob.ndim) + blob.shape
            layer.blobs.add(num=legacy[0], channels=legacy[1], height=legacy[2], width=legacy[3],
                            data=blob.ravel().tolist())
    assert path.read_bytes() == net.SerializeToString(deterministic=True)


def test_v1_writer_rejects_types_without_enum_and_5d_blobs(tmp_path):
    with pytest.raises(CaffeFormatError, match="'Scale' has no V1 LayerType"):
        write_caffemodel_v1(tmp_path / "x", {"s": []}, {"s": "Scale"})
    with pytest.raises(CaffeFormatError, match="5-D shape"):
        write_caffemodel_v1(tmp_path / "x", {"c": [np.zeros((1, 1, 1, 1, 2))]}, {"c": "Convolution"})
    assert not (tmp_path / "x").exists()


def test_writer_casts_float64_input_to_float32(tmp_path):
    values = np.array([0.1, 1 / 3, 1e-50, 3e38 * 10], dtype=np.float64)
    write_caffemodel(tmp_path / "d.caffemodel", {"l": [values]})
    with np.errstate(over="ignore"):
        assert_bitwise_equal(read_caffemodel(tmp_path / "d.caffemodel")["l"][0], values.astype(np.float32))


def test_writer_rejects_non_numeric_blobs_and_leaves_no_file(tmp_path):
    with pytest.raises(CaffeFormatError, match="layer 'l' blob 0"):
        write_caffemodel(tmp_path / "bad.caffemodel", {"ok": [np.ones(2)], "l": [np.array(["a"])]})
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- encodings other than Caffe's own


def blob_net(*blob_kwargs) -> pb.NetParameter:
    net = pb.NetParameter()
    layer = net.layer.add(name="l", type="InnerProduct")
    for kwargs in blob_kwargs:
        layer.blobs.add(**kwargs)
    return net


def test_double_data_is_decoded_and_rounded_like_caffe(tmp_path):
    doubles = np.array([0.1, 1 / 3, -2.5e-40, 1e300, 123456789.123456789, -0.0], dtype=np.float64)
    net = blob_net({"shape": pb.BlobShape(dim=[2, 3]), "double_data": doubles.tolist()})
    (tmp_path / "d.caffemodel").write_bytes(net.SerializeToString())
    [record] = scan_caffemodel(tmp_path / "d.caffemodel")
    assert record.blobs[0].encoding == "float64"
    with np.errstate(over="ignore"):
        want = doubles.astype(np.float32).reshape(2, 3)
    assert_bitwise_equal(read_caffemodel(tmp_path / "d.caffemodel")["l"][0], want)


def test_double_data_wins_over_data_as_in_blob_from_proto(tmp_path):
    net = blob_net({"shape": pb.BlobShape(dim=[2]), "data": [9.0, 9.0], "double_data": [1.5, 2.5]})
    (tmp_path / "d.caffemodel").write_bytes(net.SerializeToString())
    np.testing.assert_array_equal(read_caffemodel(tmp_path / "d.caffemodel")["l"][0], [1.5, 2.5])


def test_legacy_dims_win_over_shape_as_in_blob_from_proto(tmp_path):
    """Caffe's FromProto/ShapeEquals use num/channels/height/width whenever one is present."""
    net = blob_net({"shape": pb.BlobShape(dim=[6]), "num": 1, "channels": 2, "height": 3, "width": 1,
                    "data": list(range(6))})
    (tmp_path / "l.caffemodel").write_bytes(net.SerializeToString())
    assert read_caffemodel(tmp_path / "l.caffemodel")["l"][0].shape == (1, 2, 3, 1)
    # a single legacy field still means 4-D, the others 0
    net = blob_net({"num": 0})
    (tmp_path / "z.caffemodel").write_bytes(net.SerializeToString())
    assert read_caffemodel(tmp_path / "z.caffemodel")["l"][0].shape == (0, 0, 0, 0)


def key(number, wire_type):
    return wire.encode_key(number, wire_type)


def unpacked_blob_bytes(values, dims) -> bytes:
    """A BlobProto with every repeated field written unpacked, the data split in two runs
    with a packed chunk in between (parsers must concatenate all of them)."""
    body = b"".join(key(1, wire.VARINT) + wire.encode_varint(d) for d in dims)  # unpacked dims
    body = wire.encode_bytes_field(7, body)
    first, middle, last = values[:3], values[3:5], values[5:]
    body += b"".join(key(5, wire.FIXED32) + struct.pack("<f", v) for v in first)
    body += key(99, wire.VARINT) + wire.encode_varint(5)  # an unknown field in between
    body += wire.encode_bytes_field(5, struct.pack(f"<{len(middle)}f", *middle))
    body += b"".join(key(5, wire.FIXED32) + struct.pack("<f", v) for v in last)
    layer = wire.encode_bytes_field(1, b"u") + wire.encode_bytes_field(7, body)
    return wire.encode_bytes_field(100, layer)


def test_unpacked_and_split_repeated_fields_decode_like_protobuf(tmp_path):
    values = np.arange(1, 13, dtype=np.float32) / 7
    raw = unpacked_blob_bytes(values.tolist(), [3, 4])
    (tmp_path / "u.caffemodel").write_bytes(raw)
    proto = pb.NetParameter.FromString(raw).layer[0].blobs[0]
    assert list(proto.shape.dim) == [3, 4]
    np.testing.assert_array_equal(bits(np.array(proto.data, np.float32)), bits(values))
    [record] = scan_caffemodel(tmp_path / "u.caffemodel")
    assert not record.blobs[0].is_contiguous
    assert_bitwise_equal(read_caffemodel(tmp_path / "u.caffemodel")["u"][0], values.reshape(3, 4))


def test_unpacked_doubles(tmp_path):
    values = [0.25, -1e-3, 7.0]
    body = wire.encode_bytes_field(7, wire.encode_packed_varints(1, [3]))
    body += b"".join(key(8, wire.FIXED64) + struct.pack("<d", v) for v in values)
    raw = wire.encode_bytes_field(100, wire.encode_bytes_field(1, b"d") + wire.encode_bytes_field(7, body))
    (tmp_path / "d.caffemodel").write_bytes(raw)
    assert list(pb.NetParameter.FromString(raw).layer[0].blobs[0].double_data) == values
    assert_bitwise_equal(read_caffemodel(tmp_path / "d.caffemodel")["d"][0], np.array(values, np.float32))


def test_unknown_fields_of_every_wire_type_are_skipped(tmp_path):
    golden = (GOLDEN / "conv_basic" / "weights.caffemodel").read_bytes()
    junk = (key(7777, wire.VARINT) + wire.encode_varint(2**63) + key(7778, wire.FIXED64) + b"\xff" * 8
            + key(7779, wire.FIXED32) + b"\x01\x02\x03\x04" + wire.encode_bytes_field(7780, b"\x00junk")
            + key(1, wire.FIXED32) + b"abcd")  # a known field (name) with a foreign wire type
    (tmp_path / "j.caffemodel").write_bytes(junk + golden + junk)
    want = read_caffemodel(GOLDEN / "conv_basic" / "weights.caffemodel")
    got = read_caffemodel(tmp_path / "j.caffemodel")
    assert list(got) == list(want)
    for g, w in zip(got["c"], want["c"]):
        assert_bitwise_equal(g, w)


# ---------------------------------------------------------------- bad input


def write(tmp_path, raw: bytes, name="bad.caffemodel"):
    path = tmp_path / name
    path.write_bytes(raw)
    return path


def test_count_disagreeing_with_shape_names_layer_blob_and_both_numbers(tmp_path):
    net = pb.NetParameter()
    net.layer.add(name="ok").blobs.add(shape=pb.BlobShape(dim=[1]), data=[1.0])
    net.layer.add(name="fc7", type="InnerProduct").blobs.extend(
        [pb.BlobProto(shape=pb.BlobShape(dim=[2]), data=[1, 2]), pb.BlobProto(shape=pb.BlobShape(dim=[4, 3]), data=[1.0] * 11)])
    path = write(tmp_path, net.SerializeToString())
    with pytest.raises(CaffeFormatError) as err:
        read_caffemodel(path)
    msg = str(err.value)
    assert str(path) in msg and "'fc7'" in msg and "blob 1" in msg and "11" in msg and "12" in msg


def test_negative_dim_and_too_many_axes(tmp_path):
    path = write(tmp_path, blob_net({"shape": pb.BlobShape(dim=[-2, -3]), "data": [1.0] * 6}).SerializeToString())
    with pytest.raises(CaffeFormatError, match=r"negative dimension .*\(-2, -3\)"):
        read_caffemodel(path)
    path = write(tmp_path, blob_net({"shape": pb.BlobShape(dim=[1] * 33), "data": [1.0]}).SerializeToString())
    with pytest.raises(CaffeFormatError, match="33 axes"):
        read_caffemodel(path)
    path = write(tmp_path, blob_net({"shape": pb.BlobShape(dim=[0, 2**40])}).SerializeToString())
    with pytest.raises(CaffeFormatError, match=r"dimension over 2147483647 .*\(0, 1099511627776\)"):
        read_caffemodel(path)


@pytest.mark.parametrize("raw, pattern", [
    (b"", r"byte 0: empty file"),
    (b"\xff" * 20, r"byte 0: varint longer than 64 bits"),
    (b"\xa2\x06\xff\xff\xff\xff", r"byte 2: varint runs past the end"),
    (b"\xa2\x06\x10\x0a\x01", r"byte 0: field 100 \(length-delimited\) needs 16 bytes from byte 3"),
    (b"\x0b\x0c", r"byte 0: field 1 uses the deprecated group wire type"),
    (b"\x0e", r"byte 0: field 1 has invalid wire type 6"),
    (b"\x00\x01", r"byte 0: invalid field number 0"),
    (b"\x0a\x03abc", r"no layers found in 5 bytes"),
])
def test_malformed_wire_data(tmp_path, raw, pattern):
    path = write(tmp_path, raw)
    with pytest.raises(CaffeFormatError, match=pattern) as err:
        read_caffemodel(path)
    assert str(path) in str(err.value)


def test_bad_payload_inside_a_layer_names_the_layer(tmp_path):
    blob = wire.encode_bytes_field(5, b"\x00" * 6)  # 6 bytes of packed floats
    raw = wire.encode_bytes_field(100, wire.encode_bytes_field(1, b"conv9") + wire.encode_bytes_field(7, blob))
    with pytest.raises(CaffeFormatError, match=r"byte 14: packed payload of 6 bytes is not a multiple of 4.*layer #0 'conv9'"):
        read_caffemodel(write(tmp_path, raw))
    blob = wire.encode_bytes_field(7, b"\x0a\x05\x01")  # shape whose packed dims run past their message
    raw = wire.encode_bytes_field(100, wire.encode_bytes_field(1, b"conv9") + wire.encode_bytes_field(7, blob))
    with pytest.raises(CaffeFormatError, match=r"needs 5 bytes.*layer #0 'conv9'"):
        read_caffemodel(write(tmp_path, raw))


@pytest.mark.parametrize("case", ["conv_basic", "oslsm_thin_1shot_500x500"])
def test_prototxt_passed_as_weights(case):
    with pytest.raises(CaffeFormatError, match=r"net.prototxt: byte \d+: "):
        read_caffemodel(GOLDEN / case / "net.prototxt")


def test_random_bytes_are_rejected(tmp_path):
    rng = np.random.default_rng(2017)
    for i in range(200):
        raw = rng.integers(0, 256, size=int(rng.integers(1, 400)), dtype=np.uint8).tobytes()
        with pytest.raises(CaffeFormatError):
            read_caffemodel(write(tmp_path, raw, f"r{i}"))


def test_both_v1_and_v2_layers_are_refused(tmp_path):
    net = pb.NetParameter()
    net.layer.add(name="a")
    net.layers.add(name="b")
    with pytest.raises(CaffeFormatError, match="both V2 'layer' and V1 'layers'"):
        read_caffemodel(write(tmp_path, net.SerializeToString()))


def test_unknown_v1_enum_and_v0_layers(tmp_path):
    raw = wire.encode_bytes_field(2, wire.encode_bytes_field(4, b"x") + key(5, wire.VARINT) + wire.encode_varint(250))
    with pytest.raises(CaffeFormatError, match="V1 layer type 250 is not a known"):
        read_caffemodel(write(tmp_path, raw))
    raw = wire.encode_bytes_field(2, wire.encode_bytes_field(1, b"\x0a\x01x"))
    with pytest.raises(CaffeFormatError, match="V0"):
        read_caffemodel(write(tmp_path, raw))


def test_duplicate_parameter_layers_are_refused(tmp_path):
    net = pb.NetParameter()
    for _ in range(2):
        net.layer.add(name="fc").blobs.add(shape=pb.BlobShape(dim=[1]), data=[1.0])
    with pytest.raises(CaffeFormatError, match="'fc' carries blobs more than once"):
        read_caffemodel(write(tmp_path, net.SerializeToString()))


def test_missing_file():
    with pytest.raises(CaffeFormatError, match="no_such.caffemodel: cannot open"):
        read_caffemodel(GOLDEN / "no_such.caffemodel")

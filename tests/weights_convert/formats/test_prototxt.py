import subprocess
import sys

import pytest

from helpers import CASES, GOLDEN, ROOT, UPSTREAM
from weights_convert.errors import CaffeFormatError
from weights_convert.formats.prototxt import load_net, load_solver, parse_net_text



def test_generated_schema_module_is_not_stale(tmp_path):
    """caffe_pb2.py must be exactly what protoc makes of caffe.proto today."""
    proto_dir = ROOT / "weights_convert" / "proto"
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_dir}",
                    f"--python_out={tmp_path}", str(proto_dir / "caffe.proto")], check=True)
    assert (tmp_path / "caffe_pb2.py").read_text() == (proto_dir / "caffe_pb2.py").read_text()


@pytest.mark.parametrize("name", ["deploy_1shot", "deploy_5shot"])
def test_upstream_deploy_has_90_layers_with_fork_layers(name):
    net = load_net(UPSTREAM / f"{name}.prototxt")
    assert len(net.layer) == 90
    types = [l.type for l in net.layer]
    assert types.count("MatMult") == 1
    assert types.count("ReshapeLike") == 2
    conv = next(l for l in net.layer if l.name == "conv1_1s")
    assert conv.convolution_param.pad == [121]
    assert conv.convolution_param.engine == conv.convolution_param.CUDNN
    assert conv.param[0].name == "conv1_1_w"
    pool = next(l for l in net.layer if l.name == "rpre_score2")
    assert pool.pooling_param.kernel_h == (5 if "5shot" in name else 1)


@pytest.mark.parametrize("name", ["train_ss_os_fc", "val_ss_os_fc"])
def test_upstream_train_val_parse_with_python_layer(name):
    net = load_net(UPSTREAM / f"{name}.prototxt")
    data = net.layer[0]
    assert data.type == "Python" and data.python_param.layer == "SSDatalayer"
    assert len(data.top) == 4


def test_upstream_solver_parses():
    solver = load_solver(UPSTREAM / "solver_ss_os_fc.prototxt")
    assert solver.train_net == "train_ss_os_fc.prototxt" and solver.iter_size == 10


@pytest.mark.parametrize("case", CASES)
def test_every_golden_net_parses(case):
    net = load_net(GOLDEN / case / "net.prototxt")
    assert net.layer[0].type == "Input"
    assert not net.layers


def test_v1_net_and_legacy_inputs_upgrade_to_v2():
    net = parse_net_text(
        'input: "data" input_dim: 1 input_dim: 3 input_dim: 5 input_dim: 5\n'
        'layers { name: "c" type: CONVOLUTION bottom: "data" top: "c" param: "w" blobs_lr: 1 blobs_lr: 2\n'
        '  weight_decay: 1 weight_decay: 0 convolution_param { num_output: 3 kernel_size: 3 } }\n'
        'layers { name: "r" type: RELU bottom: "c" top: "c" include { phase: TEST } }\n')
    assert [l.type for l in net.layer] == ["Input", "Convolution", "ReLU"]
    assert list(net.layer[0].input_param.shape[0].dim) == [1, 3, 5, 5]
    conv = net.layer[1]
    assert conv.param[0].name == "w" and conv.param[1].lr_mult == 2 and conv.param[1].decay_mult == 0
    assert conv.convolution_param.num_output == 3
    assert net.layer[2].include[0].phase == 1
    assert not net.input and not net.layers


def test_legacy_input_shape_form():
    net = parse_net_text('input: "a" input_shape { dim: 2 dim: 3 }\n'
                         'layer { name: "s" type: "Sigmoid" bottom: "a" top: "b" }')
    assert list(net.layer[0].input_param.shape[0].dim) == [2, 3]


@pytest.mark.parametrize("text, expected", [
    ('layer {\n  name: "a"\n  convolution_param { num_outptu: 3 }\n}', r"net\.prototxt:3:\d+: .*num_outptu"),
    ('layer { name: "a" ', r"net\.prototxt:1:\d+: .*"),
    ('input: "a" input_dim: 1 input_dim: 2', r"net\.prototxt: 1 'input' names need 4 'input_dim'"),
    ('layer { type: "ReLU" }\nlayers { type: RELU }', r"mixes V2 'layer' and V1 'layers'"),
])
def test_bad_prototxt_names_file_line_and_field(text, expected):
    with pytest.raises(CaffeFormatError, match=expected):
        parse_net_text(text, "net.prototxt")


def test_binary_file_given_as_prototxt_is_named():
    path = GOLDEN / "conv_basic" / "weights.caffemodel"
    with pytest.raises(CaffeFormatError, match=r"weights\.caffemodel"):
        load_net(path)


def test_missing_prototxt_is_named(tmp_path):
    with pytest.raises(CaffeFormatError, match=r"nope\.prototxt: cannot read"):
        load_net(tmp_path / "nope.prototxt")

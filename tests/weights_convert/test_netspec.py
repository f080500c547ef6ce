"""Our net-spec code writes the authors' OSLSM deploy nets exactly (protobuf equality)."""

import pytest

from helpers import GOLDEN, ROOT, UPSTREAM
from weights_convert import netspec as ns
from weights_convert.cli import main
from weights_convert.errors import CaffeFormatError
from weights_convert.formats.prototxt import load_net, parse_net_text
from weights_convert.formats.schema import pb
from weights_convert.oslsm.layout import OSLSMWidths
from weights_convert.oslsm.spec import check_oslsm_net, oslsm_deploy_net

REPO = ROOT


def assert_same_net(ours: pb.NetParameter, theirs: pb.NetParameter):
    assert [l.name for l in ours.layer] == [l.name for l in theirs.layer]
    for a, b in zip(ours.layer, theirs.layer):
        assert a == b, f"layer {a.name} differs:\n{a}\nvs\n{b}"
    assert ours == theirs


@pytest.mark.parametrize("shots", [1, 5])
def test_generated_deploy_equals_upstream(shots):
    text = ns.net_to_text(oslsm_deploy_net(shots))
    ours = parse_net_text(text, "generated")
    theirs = load_net(UPSTREAM / f"deploy_{shots}shot.prototxt")
    assert len(theirs.layer) == 90
    assert_same_net(ours, theirs)


@pytest.mark.parametrize("case,shots,hw", [("oslsm_thin_1shot_120x200", 1, (120, 200)),
                                           ("oslsm_thin_1shot_500x500", 1, (500, 500)),
                                           ("oslsm_thin_5shot_500x500", 5, (500, 500))])
def test_thin_spec_equals_golden_nets(case, shots, hw):
    ours = parse_net_text(ns.net_to_text(oslsm_deploy_net(shots, OSLSMWidths.THIN, hw)))
    assert_same_net(ours, load_net(GOLDEN / case / "net.prototxt"))


def test_one_and_five_shot_differ_only_where_upstream_does():
    one, five = oslsm_deploy_net(1), oslsm_deploy_net(5)
    differing = [a.name for a, b in zip(one.layer, five.layer) if a != b]
    assert differing == ["first_img", "Xs_tiled", "rpre_score", "rpre_score2"]


def test_netspec_command_writes_both_files(tmp_path, capsys):
    assert main(["netspec", "--out", str(tmp_path)]) == 0
    for shots in (1, 5):
        assert_same_net(load_net(tmp_path / f"deploy_{shots}shot.prototxt"),
                        load_net(UPSTREAM / f"deploy_{shots}shot.prototxt"))
    assert main(["netspec", "--out", str(tmp_path / "thin"), "--widths", "thin", "--query-hw", "120", "200"]) == 0
    assert_same_net(load_net(tmp_path / "thin" / "deploy_1shot.prototxt"),
                    load_net(GOLDEN / "oslsm_thin_1shot_120x200" / "net.prototxt"))
    assert "deploy_5shot.prototxt" in capsys.readouterr().out


@pytest.mark.parametrize("shots", [1, 5])
def test_committed_prototxt_files_are_current(shots):
    path = REPO / "prototxt" / f"deploy_{shots}shot.prototxt"
    assert path.read_text() == ns.net_to_text(oslsm_deploy_net(shots))


def test_fill_message_sets_only_given_fields():
    layer = ns.layer("p", "Pooling", ["x"], pooling_param={"pool": "MAX", "kernel_h": 5, "kernel_w": 1},
                     param=[{"lr_mult": 0.0}], loss_weight=[1.0])
    assert layer.pooling_param.pool == pb.PoolingParameter.MAX
    assert layer.pooling_param.HasField("pool") and not layer.pooling_param.HasField("stride_h") and not layer.pooling_param.HasField("stride")
    assert layer.param[0].HasField("lr_mult") and not layer.param[0].HasField("decay_mult")
    assert list(layer.top) == ["p"] and list(layer.loss_weight) == [1.0]
    with pytest.raises(KeyError, match="no field 'kernel'"):
        ns.layer("c", "Convolution", ["x"], convolution_param={"kernel": 3})


def test_write_net_round_trips(tmp_path):
    net = ns.net([ns.input_layer("data", ["data"], [(1, 3, 8, 8)]),
                  ns.convolution("conv", "data", 4, 3, pad=1, stride=2, params=[ns.param_spec(1, 1, "w")]),
                  ns.relu("relu", "conv"), ns.max_pool("pool", "conv", kernel_size=2, stride=2),
                  ns.inner_product("fc", "pool", 10), ns.tile("t", "fc", 0, 2),
                  ns.reshape("r", ["t"], [0, -1])], name="tiny")
    ns.write_net(net, tmp_path / "tiny.prototxt")
    assert load_net(tmp_path / "tiny.prototxt") == net


def test_check_oslsm_net_accepts_upstream_and_names_differences():
    shots, widths, hw = check_oslsm_net(load_net(UPSTREAM / "deploy_5shot.prototxt"))
    assert (shots, widths, hw) == (5, OSLSMWidths.FULL, (500, 500))
    net = oslsm_deploy_net(1)
    next(l for l in net.layer if l.name == "pre_score").crop_param.offset[0] = 41
    with pytest.raises(CaffeFormatError, match=r"layer 'pre_score' crop_param is \{axis: 2 offset: 41\}"):
        check_oslsm_net(net, "edited.prototxt")
    net = oslsm_deploy_net(1)
    del net.layer[-3]  # pre_score2
    with pytest.raises(CaffeFormatError, match="missing layer.*pre_score2"):
        check_oslsm_net(net)
    net = oslsm_deploy_net(1)
    next(l for l in net.layer if l.name == "conv1_1s").convolution_param.pad[0] = 100
    with pytest.raises(CaffeFormatError, match="conv1_1s"):
        check_oslsm_net(net)
    with pytest.raises(CaffeFormatError, match="not an OSLSM deploy net"):
        check_oslsm_net(load_net(GOLDEN / "conv_basic" / "net.prototxt"))

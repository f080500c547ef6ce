"""Re-training as the authors did: SBD to the VOC layout, the start model by net surgery, and
`reproduce train` end to end on the golden synthetic training sets with a thin net."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from helpers import GOLDEN_TRAIN, TRAINING_DATA, thin_solver, tree_digest
from reproduce.cli import main
from reproduce.training.recipe import train_net_blobs
from weights_convert.formats.caffemodel import read_caffemodel, write_caffemodel, write_caffemodel_v1
from weights_convert.graph import CaffeNet

DATA = TRAINING_DATA
THIN_NET = GOLDEN_TRAIN / "net.prototxt"


# ---------------------------------------------------------------------------- SBD
def make_sbd(root: Path, names: dict[str, list[str]], rng) -> dict[str, np.ndarray]:
    """A benchmark_RELEASE/dataset folder as SBD ships it: cls/ and inst/ .mat structs, img/, lists."""
    for sub in ("cls", "inst", "img"):
        (root / sub).mkdir(parents=True)
    masks = {}
    for name in sorted({n for ns in names.values() for n in ns}):
        cls = np.zeros((30, 40), np.uint8)
        cls[5:20, 10:30] = rng.integers(1, 21)
        inst = (cls > 0).astype(np.uint8)
        savemat(root / "cls" / f"{name}.mat", {"GTcls": {"Segmentation": cls, "Boundaries": np.zeros(1),
                                                          "CategoriesPresent": np.unique(cls)[1:]}})
        savemat(root / "inst" / f"{name}.mat", {"GTinst": {"Segmentation": inst, "Categories": np.unique(cls)[1:]}})
        Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(root / "img" / f"{name}.jpg")
        masks[name] = cls
    for list_name, ns in names.items():
        (root / f"{list_name}.txt").write_text("".join(f"{n}\n" for n in ns))
    return masks


def voc_with_val(root: Path, val: list[str]) -> Path:
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    (root / "ImageSets/Segmentation/val.txt").write_text("".join(f"{n}\n" for n in val))
    return root


def test_sbd_to_voc_writes_palette_masks_and_leaves_out_voc_val(tmp_path):
    rng = np.random.default_rng(0)
    sbd = tmp_path / "benchmark_RELEASE" / "dataset"
    masks = make_sbd(sbd, {"train": ["a1", "b2", "c3"], "val": ["c3", "d4", "e5"]}, rng)
    voc = voc_with_val(tmp_path / "VOC2012", ["b2", "e5", "zz"])
    before = tree_digest(sbd)
    out = tmp_path / "SBD_VOC"
    assert main(["sbd-to-voc", "--sbd", str(sbd.parent), "--voc", str(voc), "--no-progress", "--out", str(out)]) == 0
    assert (out / "ImageSets/Segmentation/train.txt").read_text().split() == ["a1", "c3", "d4"]
    for name in ("a1", "c3", "d4"):
        png = Image.open(out / "SegmentationClass" / f"{name}.png")
        assert png.mode == "P" and png.getpalette()[3:6] == [128, 0, 0]  # VOC's colour of class 1
        assert np.array_equal(np.array(png), masks[name])
        assert np.array_equal(np.array(Image.open(out / "SegmentationObject" / f"{name}.png")), masks[name] > 0)
        assert (out / "JPEGImages" / f"{name}.jpg").resolve() == (sbd / "img" / f"{name}.jpg").resolve()
    assert tree_digest(sbd) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no work folder left


def test_sbd_to_voc_refusals(tmp_path, capsys):
    rng = np.random.default_rng(1)
    sbd = tmp_path / "dataset"
    make_sbd(sbd, {"train": ["a1"], "val": ["b2"]}, rng)
    (sbd / "cls" / "b2.mat").write_bytes(b"not a mat file")
    voc = voc_with_val(tmp_path / "VOC2012", ["zz"])
    cases = [
        (["--out", str(tmp_path / "o1")], "give --voc"),
        (["--voc", str(voc), "--out", str(sbd / "inside")], "inside the SBD folder"),
        (["--voc", str(voc), "--out", str(tmp_path / "o2")], "not an SBD GTcls .mat"),
        (["--voc", str(voc), "--lists", "train", "--out", str(voc)], "lies inside the data set folder"),
        (["--voc", str(voc), "--lists", "train", "--out", str(tmp_path)], "exists"),
    ]
    for extra, message in cases:
        assert main(["sbd-to-voc", "--sbd", str(sbd), "--no-progress", *extra]) == 2
        assert message in capsys.readouterr().err, extra
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
    assert not (sbd / "inside").exists()


# ---------------------------------------------------------------------------- start model
@pytest.fixture(scope="module")
def thin_vgg(tmp_path_factory):
    """A thin VGG-16 in the V1 format (legacy 4-D blobs), shaped for the thin train net."""
    shapes, _ = train_net_blobs(THIN_NET)
    rng = np.random.default_rng(5)
    params, types = {}, {}
    for block, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)):
        for i in range(1, n + 1):
            name = f"conv{block}_{i}"
            params[name] = [rng.standard_normal(s).astype(np.float32) for s in shapes[name + "s"]]
            types[name] = "Convolution"
    fc6w = shapes["fc6f"][0]
    params["fc6"] = [rng.standard_normal(fc6w).astype(np.float32), rng.standard_normal(fc6w[0]).astype(np.float32)]
    params["fc7"] = [rng.standard_normal(s).astype(np.float32) for s in shapes["fc7f"]]
    params["fc8"] = [rng.standard_normal(s).astype(np.float32) for s in shapes["fc8f"]]
    types.update(fc6="InnerProduct", fc7="InnerProduct", fc8="InnerProduct")
    path = tmp_path_factory.mktemp("vgg") / "VGG_ILSVRC_16_layers.caffemodel"
    write_caffemodel_v1(path, params, types)
    return path, params


def test_make_init_from_vgg16(tmp_path, thin_vgg):
    path, vgg = thin_vgg
    out = tmp_path / "init.caffemodel"
    assert main(["make-init", "--vgg16", str(path), "--prototxt", str(THIN_NET), "--seed", "11",
                 "--out", str(out)]) == 0
    init = read_caffemodel(out)
    assert np.array_equal(init["conv3_2f"][0], vgg["conv3_2"][0]) and np.array_equal(init["conv3_2s"][1], vgg["conv3_2"][1])
    assert np.array_equal(init["fc6f"][0], vgg["fc6"][0])
    assert np.array_equal(init["fc6s"][0], vgg["fc6"][0].reshape(init["fc6s"][0].shape))
    assert init["fc7s"][0].shape[2:] == (1, 1) and np.array_equal(init["fc7s"][0].reshape(vgg["fc7"][0].shape), vgg["fc7"][0])
    assert np.array_equal(init["fc8f"][0], vgg["fc8"][0])
    w = init["rw1s"][0]
    assert np.array_equal(np.abs(w).sum(axis=1), np.ones(w.shape[0])) and not init["rw1s"][1].any()
    kernel = init["uppred_offset"][0][0, 0]
    assert kernel.shape == (64, 64) and kernel.max() == pytest.approx(1.0, abs=1 / 32)
    record = json.loads((tmp_path / "init.caffemodel.json").read_text())
    assert record["hashing_seed"] == 11
    net = CaffeNet.from_prototxt(THIN_NET, phase="TRAIN", data_shapes={
        "first_img": (1, 3, 224, 224), "second_img": (1, 3, 64, 64),
        "first_label": (1, 1, 224, 224), "second_label": (1, 1, 64, 64)})
    net.load_weights(out)  # strict: every learnable layer, right shapes


def test_make_init_from_os_pretrained_fills_zero_hashing_maps(tmp_path):
    params = read_caffemodel(GOLDEN_TRAIN / "weights.caffemodel")
    params["rw1s"] = [np.zeros_like(b) for b in params["rw1s"]]
    params["rb1s"] = [np.zeros_like(b) for b in params["rb1s"]]
    pretrained = tmp_path / "os_pretrained.caffemodel"
    write_caffemodel(pretrained, params)
    out = tmp_path / "init.caffemodel"
    assert main(["make-init", "--os-pretrained", str(pretrained), "--prototxt", str(THIN_NET), "--seed", "3",
                 "--out", str(out)]) == 0
    init = read_caffemodel(out)
    for name in params:
        if name not in ("rw1s", "rb1s"):
            assert all(np.array_equal(a, b) for a, b in zip(init[name], params[name])), name
    assert np.array_equal(np.abs(init["rw1s"][0]).sum(axis=1), np.ones(init["rw1s"][0].shape[0]))
    assert np.abs(init["rb1s"][0]).sum() == 1


# ---------------------------------------------------------------------------- training
def train_args(tmp_path, out, *extra):
    return ["train", "--voc", str(DATA / "pascal"), "--sbd", str(DATA / "sbd"), "--fold", "1", "--seed", "7",
            "--init", str(GOLDEN_TRAIN / "weights.caffemodel"), "--solver", str(thin_solver(tmp_path)),
            "--allow-val-images", "--no-progress", "--out", str(out), *extra]


def test_train_runs_the_original_episodes_and_resumes_identically(tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert main(train_args(tmp_path, whole)) == 0
    assert main(train_args(tmp_path, parts, "--iters", "2")) == 0
    assert main(train_args(tmp_path, parts)) == 0
    for name in ("snapshot_iter_4.caffemodel", "snapshot_iter_4.solverstate", "losses.csv"):
        assert (whole / name).read_bytes() == (parts / name).read_bytes(), name
    png = Image.open(whole / "loss_curve.png")
    assert png.size[0] > 300
    rows = (whole / "losses.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2", "3"]
    state = json.loads((whole / "snapshot_iter_4.trainstate.json").read_text())
    assert state["passes"] == 8 and state["data"]["index"] == 8


def test_train_refuses_test_images_among_the_training_images(tmp_path, capsys):
    args = train_args(tmp_path, tmp_path / "run")
    args.remove("--allow-val-images")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "VOC 2012 val (test) images" in err and "sbd-to-voc --voc" in err
    assert not (tmp_path / "run").exists()


def test_the_authors_solver_trains_to_the_released_iteration_by_default():
    """60,000 (the released snapshots, ss_os_fc_iter_60000), not the solver's max_iter of 1,000,000;
    another solver keeps its own max_iter; --iters decides over both; `train` and `train-all` alike
    (train-all named the authors' solver by path used to get its max_iter)."""
    from reproduce.training.recipe import SOLVER_PROTOTXT, default_iterations
    from weights_convert.train.solver_file import read_solver

    assert read_solver(SOLVER_PROTOTXT).param.max_iter == 1_000_000
    assert default_iterations(None, str(SOLVER_PROTOTXT)) == 60_000
    assert default_iterations(None, "other_solver.prototxt") is None
    assert default_iterations(500, str(SOLVER_PROTOTXT)) == 500
    assert default_iterations(None) == 60_000  # no --solver: the authors'


def test_a_full_disk_names_the_snapshot_and_leaves_no_half_snapshot(tmp_path, monkeypatch, capsys):
    """The .solverstate fails to write: the error names it (not the loss curve drawn after), and
    no .caffemodel is left without its state."""
    import errno

    from reproduce.cli import main
    from weights_convert.train import trainer

    def no_space(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(trainer, "write_solverstate", no_space)
    out = tmp_path / "run"
    assert main(train_args(tmp_path, out, "--iters", "2")) == 2
    err = capsys.readouterr().err
    assert "snapshot_iter_2.solverstate" in err and "No space left on device" in err and "loss_curve" not in err
    assert not list(out.glob("snapshot_iter_*"))
